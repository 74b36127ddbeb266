"""Where a kubelet keeps its pull records, what their files are called, and how one is read.

``<kubelet root>/image_manager/pulling/sha256-<hex>`` holds one intent per raw image string,
``<kubelet root>/image_manager/pulled/sha256-<hex>`` one record per imageRef; ``<hex>`` is the
SHA-256 of the key's bytes (spec §4.1).  Names ending in ``.tmp`` are drafts of writes.

A record file is read without following a symlink, only when it is a regular file and only up
to :data:`MAX_FILE_SIZE`; anything else is a :class:`~pullwarden.errors.RecordReadError`.

Private to :mod:`pullwarden.records`: the file store (:mod:`~pullwarden.records._fs`) and the
read-only audit (:mod:`~pullwarden.records._audit`) both build on it, and neither on the other.
"""

from __future__ import annotations

import hashlib
import os
import stat
from typing import Final

from pullwarden._gojson import go_bytes
from pullwarden.errors import RecordReadError

__all__ = [
    "FILE_PREFIX",
    "IMAGE_MANAGER_DIR",
    "MAX_FILE_SIZE",
    "MAX_SIZE_TEXT",
    "PULLED_DIR",
    "PULLING_DIR",
    "TMP_SUFFIX",
    "file_name_for",
    "is_record_file_name",
    "read_file",
    "strerror",
]

IMAGE_MANAGER_DIR: Final = "image_manager"
PULLING_DIR: Final = "pulling"
PULLED_DIR: Final = "pulled"
FILE_PREFIX: Final = "sha256-"
TMP_SUFFIX: Final = ".tmp"
MAX_FILE_SIZE: Final = 4 << 20
"""The largest intent or record file read (4 MiB); a larger one is a read error."""
MAX_SIZE_TEXT: Final = f"{MAX_FILE_SIZE >> 20} MiB"

# O_NONBLOCK keeps a FIFO planted in a record directory from hanging the open (the fstat that
# follows rejects it); it changes nothing for regular files.
_READ_FLAGS: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW
_READ_CHUNK: Final = 1 << 16

_sha256 = hashlib.sha256


def file_name_for(key: str) -> str:
    """``sha256-`` + hex SHA-256 of the key's bytes: the file name of an intent or record."""
    try:
        raw = key.encode()
    except UnicodeEncodeError:
        raw = go_bytes(key)
    return FILE_PREFIX + _sha256(raw).hexdigest()


def is_record_file_name(name: str) -> bool:
    """Whether a listing considers a directory entry of this name (spec §4.1)."""
    return name.startswith(FILE_PREFIX) and not name.endswith(TMP_SUFFIX)


def strerror(e: OSError) -> str:
    """The text of an OS error for a message (its class name when it has none)."""
    return e.strerror or type(e).__name__


def _too_large(path: str) -> RecordReadError:
    return RecordReadError(f"failed to read {path!r}: larger than {MAX_SIZE_TEXT}", path)


def _read_fd(fd: int, path: str) -> bytes:
    """The content of an open regular file of at most :data:`MAX_FILE_SIZE` bytes."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        raise RecordReadError(f"failed to read {path!r}: not a regular file", path)
    # A short read of a regular file means end of file, which saves a second read() on the hot
    # path; were it ever cut short otherwise, the truncated JSON fails to decode, which fails
    # safe.  The size is checked while reading, so a file that grows meanwhile is caught too.
    data = os.read(fd, _READ_CHUNK)
    if len(data) < _READ_CHUNK:
        return data
    chunks = [data]
    size = len(data)
    while chunk := os.read(fd, _READ_CHUNK):
        size += len(chunk)
        if size > MAX_FILE_SIZE:
            raise _too_large(path)
        chunks.append(chunk)
    return b"".join(chunks)


def read_file(path: str) -> bytes | None:
    """The whole file, or ``None`` if it does not exist; other failures raise RecordReadError.

    Symlinks are not followed, anything but a regular file is refused, and so is a file larger
    than :data:`MAX_FILE_SIZE`.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RecordReadError(f"failed to read {path!r}: {strerror(e)}", path) from e
    try:
        return _read_fd(fd, path)
    except RecordReadError:
        raise
    except OSError as e:
        raise RecordReadError(f"failed to read {path!r}: {strerror(e)}", path) from e
    finally:
        os.close(fd)
