"""The node's image manager: the kubelet's ``EnsureImageExists`` (spec §1).

:class:`ImageManager` decides, for each container of a pod, whether its image may be used as
it is, must be pulled, or must be refused, and pulls it with the pod's credentials; the
answer is an :class:`EnsureResult`.  The rest of this package is its machinery: back-off,
the serial and parallel pullers, the registry rate limit and the credential lookup.
"""

from pullwarden.imagemanager._backoff import IMAGE_BACKOFF_INITIAL, IMAGE_BACKOFF_MAX, Backoff
from pullwarden.imagemanager._credentials import CredentialLookup, credential_ref
from pullwarden.imagemanager._errors import (
    ERR_IMAGE_INSPECT,
    ERR_IMAGE_NEVER_PULL,
    ERR_IMAGE_PULL,
    ERR_IMAGE_PULL_BACK_OFF,
    ERR_INVALID_IMAGE_NAME,
    ERR_REGISTRY_UNAVAILABLE,
    ERR_SIGNATURE_VALIDATION_FAILED,
    ERROR_VALUES,
    aggregate_error_text,
    classify_pull_error,
)
from pullwarden.imagemanager._manager import (
    PULL_POLICIES,
    EnsureResult,
    ImageManager,
    PluginKeyrings,
    PullProgressHook,
)
from pullwarden.imagemanager._pullers import (
    MAX_IMAGE_PULL_REQUESTS,
    STOP_GRACE,
    ParallelPuller,
    PullOutcome,
    SerialPuller,
    pull_with_credentials,
)
from pullwarden.imagemanager._throttle import QPS_EXCEEDED, TokenBucket

__all__ = [
    "ERROR_VALUES",
    "ERR_IMAGE_INSPECT",
    "ERR_IMAGE_NEVER_PULL",
    "ERR_IMAGE_PULL",
    "ERR_IMAGE_PULL_BACK_OFF",
    "ERR_INVALID_IMAGE_NAME",
    "ERR_REGISTRY_UNAVAILABLE",
    "ERR_SIGNATURE_VALIDATION_FAILED",
    "IMAGE_BACKOFF_INITIAL",
    "IMAGE_BACKOFF_MAX",
    "MAX_IMAGE_PULL_REQUESTS",
    "PULL_POLICIES",
    "QPS_EXCEEDED",
    "STOP_GRACE",
    "Backoff",
    "CredentialLookup",
    "EnsureResult",
    "ImageManager",
    "ParallelPuller",
    "PluginKeyrings",
    "PullOutcome",
    "PullProgressHook",
    "SerialPuller",
    "TokenBucket",
    "aggregate_error_text",
    "classify_pull_error",
    "credential_ref",
    "pull_with_credentials",
]
