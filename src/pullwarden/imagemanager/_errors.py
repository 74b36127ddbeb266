"""The kubelet's image error values and how a failed pull is classified (spec §1.7).

The values are the strings a container's waiting state shows as its reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Final

from pullwarden._gofmt import aggregate_text
from pullwarden.errors import PullwardenError

__all__ = [
    "ERROR_VALUES",
    "ERR_IMAGE_INSPECT",
    "ERR_IMAGE_NEVER_PULL",
    "ERR_IMAGE_PULL",
    "ERR_IMAGE_PULL_BACK_OFF",
    "ERR_INVALID_IMAGE_NAME",
    "ERR_REGISTRY_UNAVAILABLE",
    "ERR_SIGNATURE_VALIDATION_FAILED",
    "aggregate_error_text",
    "classify_pull_error",
    "log_unexpected",
]

log = logging.getLogger("pullwarden.imagemanager")

ERR_IMAGE_PULL_BACK_OFF: Final = "ImagePullBackOff"
ERR_IMAGE_INSPECT: Final = "ImageInspectError"
ERR_IMAGE_PULL: Final = "ErrImagePull"
ERR_IMAGE_NEVER_PULL: Final = "ErrImageNeverPull"
ERR_INVALID_IMAGE_NAME: Final = "InvalidImageName"
ERR_REGISTRY_UNAVAILABLE: Final = "RegistryUnavailable"
ERR_SIGNATURE_VALIDATION_FAILED: Final = "SignatureValidationFailed"

ERROR_VALUES: Final = frozenset(
    {
        ERR_IMAGE_PULL_BACK_OFF,
        ERR_IMAGE_INSPECT,
        ERR_IMAGE_PULL,
        ERR_IMAGE_NEVER_PULL,
        ERR_INVALID_IMAGE_NAME,
        ERR_REGISTRY_UNAVAILABLE,
        ERR_SIGNATURE_VALIDATION_FAILED,
    }
)


def aggregate_error_text(texts: Iterable[str]) -> str:
    """Several error texts as one, the way Kubernetes aggregates errors.

    One error is shown as it is; several are de-duplicated (first occurrence kept) and, when
    more than one distinct text remains, joined by ``, `` inside square brackets.
    """
    return aggregate_text(dict.fromkeys(texts))


def classify_pull_error(
    image: str, text: str, registry_unavailable: bool = False
) -> tuple[str, str]:
    """(error value, message) for a pull of ``image`` that failed with ``text``.

    A runtime error text beginning with ``RegistryUnavailable`` or ``SignatureValidationFailed``
    selects that value, and the message explains it with whatever followed the prefix.
    ``registry_unavailable`` says that pullwarden's own registry client found the registry
    unreachable on every attempt (a :class:`~pullwarden.errors.RegistryUnavailableError`); it
    gets the same value and message form, with the error text after a colon.  Anything else
    is ``ErrImagePull`` with the error text as the message.
    """
    if text.startswith(ERR_REGISTRY_UNAVAILABLE):
        rest = text[len(ERR_REGISTRY_UNAVAILABLE) :]
        return (
            ERR_REGISTRY_UNAVAILABLE,
            f"image pull failed for {image} because the registry is unavailable{rest}",
        )
    if text.startswith(ERR_SIGNATURE_VALIDATION_FAILED):
        rest = text[len(ERR_SIGNATURE_VALIDATION_FAILED) :]
        return (
            ERR_SIGNATURE_VALIDATION_FAILED,
            f"image pull failed for {image} because the signature validation failed{rest}",
        )
    if registry_unavailable:
        return (
            ERR_REGISTRY_UNAVAILABLE,
            f"image pull failed for {image} because the registry is unavailable: {text}",
        )
    return ERR_IMAGE_PULL, text


def log_unexpected(err: BaseException) -> None:
    """Log ``err`` with its traceback unless it is an error pullwarden expects at a seam."""
    if not isinstance(err, PullwardenError | OSError):
        log.error("unexpected %s", type(err).__name__, exc_info=err)
