"""Where a kubelet keeps its pull records, what their files are called, and how one is read.

``<kubelet root>/image_manager/pulling/sha256-<hex>`` holds one intent per raw image string,
``<kubelet root>/image_manager/pulled/sha256-<hex>`` one record per imageRef; ``<hex>`` is the
SHA-256 of the key's bytes (spec §4.1).  Names ending in ``.tmp`` are drafts of writes.

A record file is read without following a symlink, only when it is a regular file and only up
to :data:`MAX_FILE_SIZE`; anything else is a :class:`~pullwarden.errors.RecordReadError`.
Listings read a whole directory through one open descriptor of it (:func:`open_directory`,
:func:`record_names`, :func:`read_file_at`), which spares the kernel a path walk per file.

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
    "file_order_key",
    "is_record_file_name",
    "open_directory",
    "read_file",
    "read_file_at",
    "record_names",
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
_DIR_FLAGS: Final = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC

_sha256 = hashlib.sha256


def file_name_for(key: str) -> str:
    """``sha256-`` + hex SHA-256 of the key's bytes: the file name of an intent or record."""
    try:
        raw = key.encode()
    except UnicodeEncodeError:
        raw = go_bytes(key)
    return FILE_PREFIX + _sha256(raw).hexdigest()


def file_order_key(key: str) -> bytes:
    """Sorts keys as their files sort in a listing (the SHA-256 digest, which the hex of the
    file name spells in the same order)."""
    try:
        raw = key.encode()
    except UnicodeEncodeError:
        raw = go_bytes(key)
    return _sha256(raw).digest()


def is_record_file_name(name: str) -> bool:
    """Whether a listing considers a directory entry of this name (spec §4.1)."""
    return name.startswith(FILE_PREFIX) and not name.endswith(TMP_SUFFIX)


def strerror(e: OSError) -> str:
    """The text of an OS error for a message (its class name when it has none)."""
    return e.strerror or type(e).__name__


def _too_large(path: str) -> RecordReadError:
    return RecordReadError(f"failed to read {path!r}: larger than {MAX_SIZE_TEXT}", path)


def _not_regular(path: str) -> RecordReadError:
    return RecordReadError(f"failed to read {path!r}: not a regular file", path)


def _read_fd(fd: int, path: str, skip_directories: bool = False) -> bytes | None:
    """The content of an open regular file of at most :data:`MAX_FILE_SIZE` bytes (``None``
    for a directory when ``skip_directories``).

    The read itself tells a regular file from the rest: a directory fails it (``EISDIR``), a
    FIFO or device with nothing to give reads empty (then an ``fstat`` decides) or would block.
    An ``fstat`` for every file cost a tenth of reading 100,000 records on the machines we
    measure on.  (A FIFO that someone keeps writing to reads like a file; only someone who can
    write the directory can plant one, and they can write a record file just as well.)
    """
    try:
        data = os.read(fd, _READ_CHUNK)
    except IsADirectoryError:
        if skip_directories:
            return None
        raise _not_regular(path) from None
    except BlockingIOError:
        raise _not_regular(path) from None
    if not data:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise _not_regular(path)
        return data
    # A short read of a regular file means end of file, which saves a second read() on the hot
    # path; were it ever cut short otherwise, the truncated JSON fails to decode, which fails
    # safe.  The size is checked while reading, so a file that grows meanwhile is caught too.
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


def record_names(directory: str) -> list[str] | None:
    """The names a listing reads (``sha256-*``, not ``*.tmp``) in Go's byte order; ``None`` if
    the directory does not exist.  Other failures raise :class:`OSError`.

    Sub-directories are among them (``os.listdir`` costs half what ``os.scandir`` does, which
    could tell them apart); :func:`read_file_at` skips them when asked to.
    """
    try:
        names = [n for n in os.listdir(directory) if n.startswith(FILE_PREFIX)]
    except FileNotFoundError:
        return None
    names = [n for n in names if not n.endswith(TMP_SUFFIX)]
    if all(map(str.isascii, names)):
        names.sort()  # code point order is byte order for ASCII
    else:
        names.sort(key=os.fsencode)
    return names


def open_directory(directory: str) -> int | None:
    """A descriptor of ``directory`` for :func:`read_file_at`; ``None`` if it does not exist.
    Other failures raise :class:`OSError`.  The caller closes it."""
    try:
        return os.open(directory, _DIR_FLAGS)
    except FileNotFoundError:
        return None


def read_file_at(
    dir_fd: int, name: str, path: str, *, skip_directories: bool = False
) -> bytes | None:
    """:func:`read_file` of ``name`` in the directory open as ``dir_fd``; ``path`` names it in
    errors.  With ``skip_directories`` a sub-directory reads as ``None``, like a missing file."""
    try:
        fd = os.open(name, _READ_FLAGS, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RecordReadError(f"failed to read {path!r}: {strerror(e)}", path) from e
    try:
        return _read_fd(fd, path, skip_directories)
    except RecordReadError:
        raise
    except OSError as e:
        raise RecordReadError(f"failed to read {path!r}: {strerror(e)}", path) from e
    finally:
        os.close(fd)


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
