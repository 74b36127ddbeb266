"""Pull records: the types, the kubelet-compatible codec, the file store, the cache, the audit.

Modules: :mod:`~pullwarden.records.model` (the record types), :mod:`~pullwarden.records.codec`
(kubelet-compatible JSON), :mod:`~pullwarden.records.base` (the ``RecordStore`` protocol),
:mod:`~pullwarden.records.fs` (the files, as a kubelet keeps them), :mod:`~pullwarden.records.cache`
(the write-through cache) and :mod:`~pullwarden.records.audit` (the read-only ``scan``); the
private :mod:`~pullwarden.records._layout` holds the directory layout and the safe file read.
"""

from pullwarden.records.audit import FileProblem, ProblemKind, scan
from pullwarden.records.base import Listing, RecordStore
from pullwarden.records.cache import CachedRecordStore
from pullwarden.records.codec import V1ALPHA1, V1BETA1, decode, decode_versioned, encode
from pullwarden.records.fs import FileRecordStore
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
    "FileProblem",
    "FileRecordStore",
    "ImagePullCredentials",
    "ImagePullIntent",
    "ImagePullSecret",
    "ImagePullServiceAccount",
    "ImagePulledRecord",
    "Listing",
    "ProblemKind",
    "RecordStore",
    "decode",
    "decode_versioned",
    "encode",
    "scan",
]
