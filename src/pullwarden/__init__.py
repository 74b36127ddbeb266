"""pullwarden: the kubelet image pull path with KEP-2535 credential verification.

The supported names are re-exported here; the modules they come from are:

* :mod:`pullwarden.reference` — image reference grammar
* :mod:`pullwarden.credentials` — docker configs, keyring, credential hash
* :mod:`pullwarden.records` — record types, codec, file store, cache
* :mod:`pullwarden.policy` — verification policies and the allowlist
* :mod:`pullwarden.pullmanager` — the verification decision and record keeping
* :mod:`pullwarden.errors` — the exception tree
"""

from pullwarden._clock import Clock, FakeClock, SystemClock
from pullwarden.credentials import credential_hash
from pullwarden.errors import PullwardenError
from pullwarden.metrics import Metrics
from pullwarden.policy import PolicyEnforcer, VerificationPolicy, validate_allowlist
from pullwarden.pullmanager import Decision, PullManager
from pullwarden.records import (
    CachedRecordStore,
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
)

__version__ = "0.1.0"

__all__ = [
    "CachedRecordStore",
    "Clock",
    "Decision",
    "FakeClock",
    "FileRecordStore",
    "ImagePullCredentials",
    "ImagePullIntent",
    "ImagePullSecret",
    "ImagePullServiceAccount",
    "ImagePulledRecord",
    "Metrics",
    "PolicyEnforcer",
    "PullManager",
    "PullwardenError",
    "SystemClock",
    "VerificationPolicy",
    "__version__",
    "credential_hash",
    "validate_allowlist",
]
