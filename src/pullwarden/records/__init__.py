"""Pull records: the types, the kubelet-compatible codec, the file store and the cache."""

from pullwarden.records.base import Listing, RecordStore
from pullwarden.records.cache import CachedRecordStore
from pullwarden.records.codec import V1ALPHA1, V1BETA1, decode, decode_versioned, encode
from pullwarden.records.fs import FileRecordStore, scan
from pullwarden.records.model import (
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
)

__all__ = [
    "V1ALPHA1",
    "V1BETA1",
    "CachedRecordStore",
    "FileRecordStore",
    "ImagePullCredentials",
    "ImagePullIntent",
    "ImagePullSecret",
    "ImagePullServiceAccount",
    "ImagePulledRecord",
    "Listing",
    "RecordStore",
    "decode",
    "decode_versioned",
    "encode",
    "scan",
]
