"""Pull records: the types, the kubelet-compatible codec, the file store and the cache."""

from pullwarden.records.base import Listing, RecordStore
from pullwarden.records.model import (
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
)

__all__ = [
    "ImagePullCredentials",
    "ImagePullIntent",
    "ImagePullSecret",
    "ImagePullServiceAccount",
    "ImagePulledRecord",
    "Listing",
    "RecordStore",
]
