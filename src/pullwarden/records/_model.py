"""The record types a kubelet keeps under ``<root>/image_manager`` (spec §4.5).

They are immutable; operations that change a record build a new one.  ``credential_mapping`` is a
plain dict by type, but treat it as read-only: the cache and the store hand out shared objects.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import field
from datetime import datetime

from pullwarden._values import frozen
from pullwarden.errors import PullwardenError

__all__ = [
    "ImagePullCredentials",
    "ImagePullIntent",
    "ImagePullSecret",
    "ImagePullServiceAccount",
    "ImagePulledRecord",
    "RecordHit",
]


@frozen
class ImagePullSecret:
    """The coordinates of a pull Secret and the hash of the credential it supplied."""

    uid: str
    namespace: str
    name: str
    credential_hash: str = ""

    def same_coordinates(self, other: ImagePullSecret) -> bool:
        return (
            self.uid == other.uid and self.namespace == other.namespace and self.name == other.name
        )

    def sort_key(self) -> tuple[str, str, str]:
        """Records keep secrets sorted by namespace, then name, then uid (spec §5.5)."""
        return (self.namespace, self.name, self.uid)


@frozen
class ImagePullServiceAccount:
    """The coordinates of a ServiceAccount whose token-bound credentials pulled an image."""

    uid: str
    namespace: str
    name: str

    def sort_key(self) -> tuple[str, str, str]:
        return (self.namespace, self.name, self.uid)


@frozen
class ImagePullCredentials:
    """Which credentials are known to have pulled an image under one name."""

    kubernetes_secrets: tuple[ImagePullSecret, ...] = ()
    kubernetes_service_accounts: tuple[ImagePullServiceAccount, ...] = ()
    node_pods_accessible: bool = False

    def __post_init__(self) -> None:
        # Accept any iterable (lists are natural for callers) but store tuples.
        if not isinstance(self.kubernetes_secrets, tuple):
            object.__setattr__(self, "kubernetes_secrets", tuple(self.kubernetes_secrets))
        if not isinstance(self.kubernetes_service_accounts, tuple):
            object.__setattr__(
                self, "kubernetes_service_accounts", tuple(self.kubernetes_service_accounts)
            )

    def is_empty(self) -> bool:
        return not (
            self.node_pods_accessible or self.kubernetes_secrets or self.kubernetes_service_accounts
        )


@frozen
class ImagePullIntent:
    """Written before a pull starts; names the raw image string of the container spec."""

    image: str


@frozen
class ImagePulledRecord:
    """Which credentials pulled the image ``image_ref``, per image name without tag/digest."""

    image_ref: str
    last_updated_time: datetime
    credential_mapping: Mapping[str, ImagePullCredentials] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.credential_mapping, dict):
            object.__setattr__(self, "credential_mapping", dict(self.credential_mapping))


class RecordHit:
    """A pulled record as a check reads it for one raw image: what the check compares, in one place.

    ``key`` is the image's credentialMapping key (the name without tag and digest) and
    ``entry`` what the record holds under it (None: nothing), whose fields a check reads are
    repeated here (``node_wide``, ``secrets``, ``accounts``; empty without an entry); ``error``
    is why the image name could not be trimmed (then ``key`` is "" and ``entry`` None).  The
    cache keeps one hit per record in place of the record, so that a check of the image it last
    served finds the key and the credentials without trimming the name again or walking the
    record's mapping; a write or a delete replaces or drops it with the record.  Treat it as
    read-only except ``used``, the cache's note that a read touched it since it last considered
    evicting it.
    """

    __slots__ = (
        "accounts",
        "entry",
        "error",
        "image",
        "key",
        "node_wide",
        "record",
        "secrets",
        "used",
    )

    def __init__(
        self,
        record: ImagePulledRecord,
        image: str | None = None,
        key: str = "",
        entry: ImagePullCredentials | None = None,
        error: PullwardenError | None = None,
    ) -> None:
        self.record = record
        self.image = image  # None: made for no image (a write, a listing); serves none
        self.key = key
        self.entry = entry
        self.error = error
        if entry is None:
            self.node_wide = False
            self.secrets: tuple[ImagePullSecret, ...] = ()
            self.accounts: tuple[ImagePullServiceAccount, ...] = ()
        else:
            self.node_wide = entry.node_pods_accessible
            self.secrets = entry.kubernetes_secrets
            self.accounts = entry.kubernetes_service_accounts
        self.used = True

    @classmethod
    def of(cls, record: ImagePulledRecord, image: str, key_of: Callable[[str], str]) -> RecordHit:
        """The hit of ``record`` for ``image``, its key worked out by ``key_of``.

        A :class:`~pullwarden.errors.PullwardenError` from ``key_of`` is kept in ``error``,
        not raised: the decision reports it at its own step, after the policy.
        """
        try:
            key = key_of(image)
        except PullwardenError as err:
            return cls(record, image, error=err)
        return cls(record, image, key, record.credential_mapping.get(key))


RecordObject = ImagePullIntent | ImagePulledRecord
