"""pullwarden: the kubelet image pull path with KEP-2535 credential verification.

The supported names are re-exported here (``from pullwarden import Node``); the packages they
come from are, top to bottom (design.md §2; imports only point downwards):

* :mod:`pullwarden.node` — a node over a root directory: pods, image manager, image GC
  (:class:`Node`)
* :mod:`pullwarden.imagemanager` — the kubelet's ``EnsureImageExists``
  (:class:`ImageManager`, :class:`EnsureResult`)
* :mod:`pullwarden.config` — the kubelet configuration fields of the image pull path
* :mod:`pullwarden.pullmanager` — the verification decision and record keeping
  (:class:`PullManager`, :class:`Decision`, :class:`Protections`)
* :mod:`pullwarden.policy` — verification policies and the allowlist
* :mod:`pullwarden.credentials` — docker configs, keyring, credential hash
* :mod:`pullwarden.records` — record types, codec, file store, cache, audit
  (:class:`FileRecordStore`, :class:`CachedRecordStore`)
* :mod:`pullwarden.runtime` — image services: the embedded store and its registry client
  (:class:`LocalImageService`, :class:`RegistryClient`)
* :mod:`pullwarden.reference` — image reference grammar
* :mod:`pullwarden.errors` — the exception tree, every class of which is exported here

:mod:`pullwarden.testing` holds test doubles (``FakeClock``); they are not exported here.
Modules whose names start with ``_`` are private to their package.
"""

from pullwarden._clock import Clock, SystemClock
from pullwarden.credentials import credential_hash
from pullwarden.errors import (
    ConfigError,
    CredentialError,
    DeniedError,
    DigestMismatchError,
    DockerConfigError,
    ImageNotKnownError,
    ImageStoreError,
    InvalidAllowlistError,
    InvalidReferenceError,
    ManifestError,
    NodeBusyError,
    NotFoundError,
    PolicyError,
    PullCancelledError,
    PullwardenError,
    RecordDecodeError,
    RecordError,
    RecordReadError,
    RecordWriteError,
    RegistryError,
    RegistryUnavailableError,
    TooLargeError,
    UnauthorizedError,
    UnknownPolicyError,
    UnsupportedMediaTypeError,
)
from pullwarden.imagemanager import EnsureResult, ImageManager
from pullwarden.metrics import Metrics
from pullwarden.node import Node
from pullwarden.policy import PolicyEnforcer, VerificationPolicy, validate_allowlist
from pullwarden.pullmanager import Decision, Protections, PullManager
from pullwarden.records import (
    CachedRecordStore,
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
)
from pullwarden.runtime import LocalImageService, RegistryClient

__version__ = "0.1.0"

__all__ = [
    "CachedRecordStore",
    "Clock",
    "ConfigError",
    "CredentialError",
    "Decision",
    "DeniedError",
    "DigestMismatchError",
    "DockerConfigError",
    "EnsureResult",
    "FileRecordStore",
    "ImageManager",
    "ImageNotKnownError",
    "ImagePullCredentials",
    "ImagePullIntent",
    "ImagePullSecret",
    "ImagePullServiceAccount",
    "ImagePulledRecord",
    "ImageStoreError",
    "InvalidAllowlistError",
    "InvalidReferenceError",
    "LocalImageService",
    "ManifestError",
    "Metrics",
    "Node",
    "NodeBusyError",
    "NotFoundError",
    "PolicyEnforcer",
    "PolicyError",
    "Protections",
    "PullCancelledError",
    "PullManager",
    "PullwardenError",
    "RecordDecodeError",
    "RecordError",
    "RecordReadError",
    "RecordWriteError",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailableError",
    "SystemClock",
    "TooLargeError",
    "UnauthorizedError",
    "UnknownPolicyError",
    "UnsupportedMediaTypeError",
    "VerificationPolicy",
    "__version__",
    "credential_hash",
    "validate_allowlist",
]
