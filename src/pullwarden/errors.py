"""The pullwarden exception tree.

Every error pullwarden raises on purpose derives from :class:`PullwardenError`::

    PullwardenError
    ├── InvalidReferenceError      an image reference does not follow the grammar (also ValueError)
    ├── CredentialError
    │   └── DockerConfigError      a docker config / pull secret cannot be decoded (also ValueError)
    ├── PolicyError
    │   ├── UnknownPolicyError     not one of the four verification policies (also ValueError)
    │   └── InvalidAllowlistError  an allowlist pattern is rejected (also ValueError)
    ├── ConfigError                a kubelet configuration is invalid; ``problems`` lists
    │                              every problem, each naming its field (also ValueError)
    ├── ManifestError              a Kubernetes manifest cannot be read; names file, document and
    │                              field (also ValueError)
    ├── RecordError                something is wrong with an on-disk pull record
    │   ├── RecordReadError        the file exists but cannot be read (also OSError)
    │   ├── RecordDecodeError      not a record this version understands (also ValueError)
    │   └── RecordWriteError       a record could not be written or deleted (also OSError)
    ├── RegistryError              talking to an OCI registry failed; names registry/repo/ref
    │   ├── UnauthorizedError      401: no or wrong credentials
    │   ├── DeniedError            403 or insufficient_scope: the credentials lack access
    │   ├── NotFoundError          the repository, tag or digest does not exist
    │   ├── RegistryUnavailableError  connection refused/reset, timeout, 5xx
    │   ├── DigestMismatchError    content does not match its digest (nothing is committed)
    │   ├── TooLargeError          a manifest over the size limit, or a blob over its size
    │   └── UnsupportedMediaTypeError  a manifest type pullwarden cannot pull
    ├── ImageStoreError            the image service failed: the embedded store (disk, corrupt
    │   │                          index) or a container runtime
    │   ├── ImageNotKnownError     no local image by that name or id
    │   └── ContainerRuntimeError  the container runtime (over CRI) refused a call or gave an
    │       │                      answer pullwarden cannot use
    │       ├── RuntimeUnavailableError  nothing answers at the runtime endpoint
    │       └── PullOutcomeUnknownError  a pull ended without the runtime's answer (stopped,
    │                                    timed out, connection lost): it may have committed
    ├── PullCancelledError         a pull was stopped on request (Ctrl-C, SIGTERM, a caller)
    │                              before it committed anything
    └── NodeBusyError              another process holds the node's root directory

Messages never contain credentials: secrets are identified by namespace/name only.
"""

from __future__ import annotations

from collections.abc import Iterable

from pullwarden._gofmt import aggregate_text

__all__ = [
    "ConfigError",
    "ContainerRuntimeError",
    "CredentialError",
    "DeniedError",
    "DigestMismatchError",
    "DockerConfigError",
    "ImageNotKnownError",
    "ImageStoreError",
    "InvalidAllowlistError",
    "InvalidReferenceError",
    "ManifestError",
    "NodeBusyError",
    "NotFoundError",
    "PolicyError",
    "PullCancelledError",
    "PullOutcomeUnknownError",
    "PullwardenError",
    "RecordDecodeError",
    "RecordError",
    "RecordReadError",
    "RecordWriteError",
    "RegistryError",
    "RegistryUnavailableError",
    "RuntimeUnavailableError",
    "TooLargeError",
    "UnauthorizedError",
    "UnknownPolicyError",
    "UnsupportedMediaTypeError",
]


class PullwardenError(Exception):
    """Base class of every error pullwarden raises on purpose."""


class InvalidReferenceError(PullwardenError, ValueError):
    """An image reference does not follow the distribution reference grammar."""


class CredentialError(PullwardenError):
    """Base class for credential problems."""


class DockerConfigError(CredentialError, ValueError):
    """A docker config (``config.json``, ``.dockercfg``, or a pull secret) cannot be decoded."""


class PolicyError(PullwardenError):
    """Base class for verification policy problems."""


class UnknownPolicyError(PolicyError, ValueError):
    """The string is not one of the four image pull credential verification policies."""


class InvalidAllowlistError(PolicyError, ValueError):
    """A ``preloadedImagesVerificationAllowlist`` pattern is rejected (the kubelet's message)."""


class ConfigError(PullwardenError, ValueError):
    """A kubelet configuration is invalid (for example a field set with the feature gate off).

    ``problems`` lists each problem found, in the kubelet's order, and ``source`` names the file
    (empty when the configuration did not come from one).  Raised as
    ``ConfigError(problems=[...], source=...)``, the message is ``source: `` (when there is a
    source) followed by the problems joined as Kubernetes' aggregate error joins them: one as it
    is, several as ``[first, second]``.  An explicit ``message`` is used as it is, and a
    ``ConfigError(message)`` without problems has that message as its only problem.
    """

    def __init__(
        self, message: str = "", *, source: str = "", problems: Iterable[str] = ()
    ) -> None:
        found = tuple(problems)
        if not message:
            if not found:
                raise TypeError("ConfigError needs a message or at least one problem")
            message = aggregate_text(found)
            if source:
                message = f"{source}: {message}"
        super().__init__(message)
        self.source = source
        self.problems: tuple[str, ...] = found or (message,)


class ManifestError(PullwardenError, ValueError):
    """A Kubernetes manifest (Pod, Secret, ...) cannot be read or lacks a required field.

    ``file`` names the manifest file, ``document`` the 1-based document in it (0 when unknown)
    and ``field`` the field path inside that document (``spec.containers[1].image``; empty when
    the problem is not about one field).
    """

    def __init__(self, message: str, *, file: str = "", document: int = 0, field: str = "") -> None:
        super().__init__(message)
        self.file = file
        self.document = document
        self.field = field


class RecordError(PullwardenError):
    """Base class for on-disk record problems.  ``path`` names the file when there is one."""

    def __init__(self, message: str, path: str | None = None) -> None:
        super().__init__(message)
        self.path = path


class RecordReadError(RecordError, OSError):
    """A record file exists but could not be read."""


class RecordDecodeError(RecordError, ValueError):
    """The bytes are not a v1alpha1/v1beta1 ``ImagePullIntent`` or ``ImagePulledRecord``."""


class RecordWriteError(RecordError, OSError):
    """A record file could not be written, renamed or deleted."""


class RegistryError(PullwardenError):
    """Talking to a registry failed.  ``registry``, ``repository`` and ``reference`` say where.

    The message names them and never a credential or token.
    """

    def __init__(
        self, message: str, *, registry: str = "", repository: str = "", reference: str = ""
    ) -> None:
        super().__init__(message)
        self.registry = registry
        self.repository = repository
        self.reference = reference


class UnauthorizedError(RegistryError):
    """The registry (or its token service) rejected the credentials, or demanded some (401)."""


class DeniedError(RegistryError):
    """The credentials are valid but lack access (403, or 401 with ``insufficient_scope``)."""


class NotFoundError(RegistryError):
    """The repository, tag or digest does not exist in the registry."""


class RegistryUnavailableError(RegistryError):
    """Connection refused or reset, timeout, or a 5xx answer (the kubelet's RegistryUnavailable)."""


class DigestMismatchError(RegistryError):
    """Downloaded content does not match its digest or size; nothing was committed."""


class TooLargeError(RegistryError):
    """A manifest over the size limit, or a blob longer than its descriptor says."""


class UnsupportedMediaTypeError(RegistryError):
    """A manifest media type pullwarden cannot pull (e.g. Docker schema 1)."""


class ImageStoreError(PullwardenError):
    """The image service failed: the embedded store (disk error, corrupt index) or a runtime."""


class ImageNotKnownError(ImageStoreError, LookupError):
    """No image in the local store has that name or id."""


class ContainerRuntimeError(ImageStoreError):
    """The container runtime refused a CRI call or answered something pullwarden cannot use.

    ``endpoint`` names the runtime (``unix:///run/containerd/containerd.sock``) and ``code``
    the gRPC status code (``UNKNOWN``, ``INVALID_ARGUMENT``, ...; empty when there was none).
    """

    def __init__(self, message: str, *, endpoint: str = "", code: str = "") -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.code = code


class RuntimeUnavailableError(ContainerRuntimeError):
    """Nothing answers at the runtime endpoint (no socket, refused, not a CRI runtime)."""


class PullOutcomeUnknownError(ContainerRuntimeError):
    """A pull ended without the runtime's answer: it may or may not have committed the image.

    Raised when a pull is stopped, times out or loses its connection while the runtime works
    on it; callers must treat the image as possibly pulled (keep its intent).
    """


class PullCancelledError(PullwardenError):
    """A pull was stopped on request before it committed: nothing of it is on the node."""


class NodeBusyError(PullwardenError):
    """Another process holds the node's root directory (one node per root)."""
