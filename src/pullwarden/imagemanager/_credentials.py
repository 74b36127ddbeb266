"""Which credentials a pod has for an image, looked up once per request (spec §2.5, §2.6).

The keyring for one request is the pod's pull Secrets (only when at least one of them is a
usable docker config Secret), then the node's own keyring (docker config files), then the
credential provider plugins' keyring for this pod (node-wide, or bound to the pod's service
account).
Its lookup, on the normalised repository of the image, is both the list of credentials a pull
tries in order and, reduced to the Secrets and the ServiceAccount among them, what the pull
manager compares with its records.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from pullwarden.credentials import (
    Keyring,
    SecretLike,
    SecretSource,
    ServiceAccountSource,
    TrackedCredential,
    UnionKeyring,
    keyring_from_secrets,
    pod_credentials,
)
from pullwarden.imagemanager._errors import log_unexpected
from pullwarden.objects import CredentialRef
from pullwarden.pullmanager import PodCredentials
from pullwarden.reference import parse_image_name

__all__ = ["CredentialLookup", "credential_ref", "error_text"]


def error_text(err: BaseException) -> str:
    """``str(err)`` followed by the notes attached to it (which Secret failed to decode).

    The kubelet reports every failure as a container error, and so does the image manager; an
    exception that is neither a :class:`~pullwarden.errors.PullwardenError` nor an ``OSError``
    is a bug somewhere, so it is also logged here with its traceback.
    """
    log_unexpected(err)
    notes = getattr(err, "__notes__", None) or []
    text = str(err) or type(err).__name__
    if notes:
        text += " (" + "; ".join(str(n) for n in notes) + ")"
    return text


def credential_ref(cred: TrackedCredential | None) -> CredentialRef:
    """Whose credential pulled an image (None: an anonymous pull), without any secret."""
    if cred is None:
        return CredentialRef("anonymous")
    source = cred.source
    if isinstance(source, SecretSource):
        return CredentialRef("secret", source.namespace, source.name)
    if isinstance(source, ServiceAccountSource):
        return CredentialRef("serviceAccount", source.namespace, source.name, cred.provider)
    return CredentialRef("node", provider=cred.provider)


class CredentialLookup:
    """The credentials to try for ``image`` (with its default tag), computed at most once.

    Calling it returns the credentials in the order a pull tries them; an error (a pull Secret
    that does not decode) is raised on the first call and again on every later one.
    :meth:`pod_credentials` is the same lookup in the form the pull manager wants.
    """

    def __init__(
        self,
        image: str,
        pull_secrets: Sequence[SecretLike],
        node_keyring: Keyring | None,
        *,
        track_hashes: bool,
        plugin_keyring: Keyring | None = None,
    ) -> None:
        self._image = image
        self._secrets = tuple(pull_secrets)
        self._node_keyring = node_keyring
        self._plugin_keyring = plugin_keyring
        self._track_hashes = track_hashes
        self._lock = threading.Lock()
        self._done = False
        self._creds: list[TrackedCredential] = []
        self._error: Exception | None = None

    @property
    def done(self) -> bool:
        """Whether the lookup has run."""
        return self._done

    def __call__(self) -> list[TrackedCredential]:
        with self._lock:
            if not self._done:
                try:
                    self._creds = self._lookup()
                except Exception as err:
                    self._error = err
                self._done = True
            if self._error is not None:
                raise self._error
            return list(self._creds)

    def _lookup(self) -> list[TrackedCredential]:
        repository, _, _ = parse_image_name(self._image)
        keyrings: list[Keyring] = []
        secrets_keyring = keyring_from_secrets(self._secrets, track_hashes=self._track_hashes)
        if secrets_keyring is not None:
            keyrings.append(secrets_keyring)
        keyrings.extend(k for k in (self._node_keyring, self._plugin_keyring) if k is not None)
        return UnionKeyring(*keyrings).lookup(repository)

    def pod_credentials(self) -> PodCredentials:
        """The pod's Secrets and first ServiceAccount among the credentials (spec §2.6)."""
        return pod_credentials(self())
