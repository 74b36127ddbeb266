"""Pull records: the types, the kubelet-compatible codec, the file store, the cache, the audit.

Import the supported names from here; the modules behind them are private: ``_model`` (the
record types), ``_codec`` (kubelet-compatible JSON), ``_base`` (the ``RecordStore`` protocol),
``_fs`` (the files, as a kubelet keeps them), ``_cache`` (the write-through cache), ``_audit``
(the read-only ``scan``) and ``_layout`` (the directory layout and the safe file read).
"""

from pullwarden.records._audit import FileProblem, ProblemKind, scan
from pullwarden.records._base import Listing, RecordStore
from pullwarden.records._cache import CachedRecordStore
from pullwarden.records._codec import (
    V1ALPHA1,
    V1BETA1,
    RecordSummary,
    decode,
    decode_versioned,
    encode,
    summarize,
)
from pullwarden.records._fs import IMAGE_MANAGER_DIR, FileRecordStore
from pullwarden.records._model import (
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
    RecordHit,
)

__all__ = [
    "IMAGE_MANAGER_DIR",
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
    "RecordHit",
    "RecordStore",
    "RecordSummary",
    "decode",
    "decode_versioned",
    "encode",
    "scan",
    "summarize",
]
