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

``import pullwarden`` loads only the exception tree: every other name is imported when it is
first used, so a program (or a command) pays only for what it touches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pullwarden._facade import lazy_names
from pullwarden.errors import (
    ConfigError,
    ContainerRuntimeError,
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
    PullOutcomeUnknownError,
    PullwardenError,
    RecordDecodeError,
    RecordError,
    RecordReadError,
    RecordWriteError,
    RegistryError,
    RegistryUnavailableError,
    RuntimeUnavailableError,
    TooLargeError,
    UnauthorizedError,
    UnknownPolicyError,
    UnsupportedMediaTypeError,
)

if TYPE_CHECKING:
    from pullwarden._clock import Clock, SystemClock
    from pullwarden.credentials import credential_hash
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
    from pullwarden.runtime import CRIImageService, LocalImageService, RegistryClient

__version__ = "0.1.0"

# name → the module it comes from, imported on first use (module __getattr__, PEP 562)
_LAZY = {
    "CRIImageService": "pullwarden.runtime",
    "CachedRecordStore": "pullwarden.records",
    "Clock": "pullwarden._clock",
    "Decision": "pullwarden.pullmanager",
    "EnsureResult": "pullwarden.imagemanager",
    "FileRecordStore": "pullwarden.records",
    "ImageManager": "pullwarden.imagemanager",
    "ImagePullCredentials": "pullwarden.records",
    "ImagePullIntent": "pullwarden.records",
    "ImagePullSecret": "pullwarden.records",
    "ImagePullServiceAccount": "pullwarden.records",
    "ImagePulledRecord": "pullwarden.records",
    "LocalImageService": "pullwarden.runtime",
    "Metrics": "pullwarden.metrics",
    "Node": "pullwarden.node",
    "PolicyEnforcer": "pullwarden.policy",
    "Protections": "pullwarden.pullmanager",
    "PullManager": "pullwarden.pullmanager",
    "RegistryClient": "pullwarden.runtime",
    "SystemClock": "pullwarden._clock",
    "VerificationPolicy": "pullwarden.policy",
    "credential_hash": "pullwarden.credentials",
    "validate_allowlist": "pullwarden.policy",
}

__all__ = [
    "CRIImageService",
    "CachedRecordStore",
    "Clock",
    "ConfigError",
    "ContainerRuntimeError",
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
    "PullOutcomeUnknownError",
    "PullwardenError",
    "RecordDecodeError",
    "RecordError",
    "RecordReadError",
    "RecordWriteError",
    "RegistryClient",
    "RegistryError",
    "RegistryUnavailableError",
    "RuntimeUnavailableError",
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

__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
