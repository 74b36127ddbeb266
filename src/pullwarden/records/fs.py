"""Pull records as files, laid out exactly as a kubelet keeps them (spec §4.1-§4.3, §4.7).

``<kubelet root>/image_manager/pulling/sha256-<hex>`` holds one :class:`ImagePullIntent` per raw
image string, ``<kubelet root>/image_manager/pulled/sha256-<hex>`` one :class:`ImagePulledRecord`
per imageRef; ``<hex>`` is the SHA-256 of the key's bytes.  Directories are created with mode
0700.  A file is written to a draft of its own, ``<target>.<16 random hex digits>.tmp``, created
exclusively (never through an existing name or a symlink) with mode 0600, then renamed over the
target, without fsync, as the kubelet does.  A kill at any instant therefore leaves the old or
the new file, never a torn one; at worst a stale draft remains, which every listing ignores
(its name ends in ``.tmp``) and :func:`scan` reports.  Because every write has its own draft,
any number of threads or processes may rewrite the same file at once: the last rename wins and
no reader ever sees a mixture.  (The kubelet uses the fixed name ``<target>.tmp`` and truncates
it; a leftover of that name is left alone here, since it may be a live kubelet's.)

Reading never follows a symlink, accepts only regular files and at most :data:`MAX_FILE_SIZE`
(4 MiB) per file; anything else is a :class:`~pullwarden.errors.RecordReadError`, which the pull
manager treats as "must verify".  Even a record holding thousands of Secrets for one image stays
under a megabyte; the cap keeps a planted or runaway file from costing memory.

Besides the :class:`~pullwarden.records.base.RecordStore` protocol this module offers the
start-up version migration (:meth:`FileRecordStore.migrate`, with a dry run for operators), file
counts for the on-disk gauges, and :func:`scan`, a read-only consistency check of a kubelet's
``image_manager`` directory.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, TypeVar

from pullwarden._files import remove_quietly, write_all
from pullwarden._gojson import go_bytes
from pullwarden._nesting import loads_json
from pullwarden.errors import RecordDecodeError, RecordError, RecordReadError, RecordWriteError
from pullwarden.records.base import Listing
from pullwarden.records.codec import (
    API_VERSIONS,
    CURRENT_VERSION,
    KIND_INTENT,
    KIND_RECORD,
    decode_versioned,
    encode,
)
from pullwarden.records.model import ImagePulledRecord, ImagePullIntent

__all__ = [
    "FILE_PREFIX",
    "IMAGE_MANAGER_DIR",
    "MAX_FILE_SIZE",
    "PULLED_DIR",
    "PULLING_DIR",
    "TMP_SUFFIX",
    "FileProblem",
    "FileRecordStore",
    "MigrationItem",
    "MigrationReport",
    "ProblemKind",
    "file_name_for",
    "is_record_file_name",
    "scan",
]

log = logging.getLogger(__name__)

IMAGE_MANAGER_DIR: Final = "image_manager"
PULLING_DIR: Final = "pulling"
PULLED_DIR: Final = "pulled"
FILE_PREFIX: Final = "sha256-"
TMP_SUFFIX: Final = ".tmp"
MAX_FILE_SIZE: Final = 4 << 20
"""The largest intent or record file read (4 MiB); a larger one is a read error."""

_DIR_MODE: Final = 0o700
_FILE_MODE: Final = 0o600
# O_NONBLOCK keeps a FIFO planted in a record directory from hanging the open (the fstat that
# follows rejects it); it changes nothing for regular files.
_READ_FLAGS: Final = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOFOLLOW
_DRAFT_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_CHUNK: Final = 1 << 16
_MAX_SIZE_TEXT: Final = f"{MAX_FILE_SIZE >> 20} MiB"

_sha256 = hashlib.sha256

T = TypeVar("T", ImagePullIntent, ImagePulledRecord)


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


def _strerror(e: OSError) -> str:
    return e.strerror or type(e).__name__


def _too_large(path: str) -> RecordReadError:
    return RecordReadError(f"failed to read {path!r}: larger than {_MAX_SIZE_TEXT}", path)


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


def _read_file(path: str) -> bytes | None:
    """The whole file, or ``None`` if it does not exist; other failures raise RecordReadError.

    Symlinks are not followed, anything but a regular file is refused, and so is a file larger
    than :data:`MAX_FILE_SIZE`.
    """
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        return None
    except OSError as e:
        raise RecordReadError(f"failed to read {path!r}: {_strerror(e)}", path) from e
    try:
        return _read_fd(fd, path)
    except RecordReadError:
        raise
    except OSError as e:
        raise RecordReadError(f"failed to read {path!r}: {_strerror(e)}", path) from e
    finally:
        os.close(fd)


def _decode_as(path: str, data: bytes, cls: type[T]) -> tuple[T, str]:
    """Decode a file that must hold a ``cls``; errors carry the path."""
    try:
        obj, version = decode_versioned(data)
    except RecordDecodeError as e:
        raise RecordDecodeError(f"failed to decode {path!r}: {e}", path) from None
    if type(obj) is not cls:
        raise RecordDecodeError(
            f"failed to decode {path!r}: holds an {type(obj).__name__}, not an {cls.__name__}",
            path,
        )
    return obj, version


def _make_dirs(path: str) -> None:
    """``mkdir -p`` with mode 0700 for every directory created (as Go's MkdirAll does)."""
    try:
        os.mkdir(path, _DIR_MODE)
    except FileExistsError:
        return
    except FileNotFoundError:
        parent = os.path.dirname(path)
        if not parent or parent == path:
            raise
        _make_dirs(parent)
        try:
            os.mkdir(path, _DIR_MODE)
        except FileExistsError:
            return


def _record_entries(directory: str) -> list[str] | None:
    """Names a listing reads, in Go's byte order; ``None`` if the directory does not exist."""
    try:
        with os.scandir(directory) as it:
            names = [
                e.name
                for e in it
                if e.name.startswith(FILE_PREFIX)
                and not e.name.endswith(TMP_SUFFIX)
                and not e.is_dir(follow_symlinks=False)
            ]
    except FileNotFoundError:
        return None
    names.sort(key=os.fsencode)
    return names


@dataclass(frozen=True, slots=True)
class MigrationItem:
    """One file the start-up migration rewrote (or, in a dry run, would rewrite)."""

    source: str
    """The file that was read."""
    target: str
    """The file written: the name recomputed from the content; differs from ``source`` only for
    a misnamed file, which is then left in place."""
    kind: str
    from_version: str


@dataclass(slots=True)
class MigrationReport:
    """What :meth:`FileRecordStore.migrate` did; ``errors`` holds files it could not decode
    (left untouched) and rewrites that failed."""

    dry_run: bool
    items: list[MigrationItem] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


class FileRecordStore:
    """The kubelet's file-backed pull records accessor; implements ``RecordStore``.

    ``FileRecordStore(root)`` creates ``<root>/image_manager/{pulling,pulled}`` (mode 0700, the
    root too if missing) and, unless ``migrate=False``, rewrites every v1alpha1 file as v1beta1
    (spec §4.7; the outcome is kept in :attr:`migration_report`).  Raises
    :class:`~pullwarden.errors.RecordWriteError` if the directories cannot be created.

    ``create=False`` (with ``migrate=False``: a read-only open, for operator tools) skips
    creating the directories; a missing directory then reads as empty.  Writes always create
    missing directories, as the kubelet does before each write.
    """

    def __init__(
        self, kubelet_root: Path | str, *, migrate: bool = True, create: bool = True
    ) -> None:
        self.kubelet_root = os.fspath(kubelet_root)
        self.image_manager_dir = os.path.join(self.kubelet_root, IMAGE_MANAGER_DIR)
        self.pulling_dir = os.path.join(self.image_manager_dir, PULLING_DIR)
        self.pulled_dir = os.path.join(self.image_manager_dir, PULLED_DIR)
        self._pulling_prefix = self.pulling_dir + os.sep
        self._pulled_prefix = self.pulled_dir + os.sep
        for d in (self.pulling_dir, self.pulled_dir) if create else ():
            try:
                _make_dirs(d)
            except OSError as e:
                raise RecordWriteError(
                    f"failed to create directory {d!r}: {_strerror(e)}", d
                ) from e
            if not os.path.isdir(d):
                raise RecordWriteError(f"failed to create directory {d!r}: not a directory", d)
        self.migration_report: MigrationReport | None = None
        if migrate:
            self.migration_report = self.migrate()

    def __repr__(self) -> str:
        return f"FileRecordStore({self.kubelet_root!r})"

    # -- paths ---------------------------------------------------------------------------------

    def intent_path(self, image: str) -> str:
        """The file holding the intent for the raw image string ``image``."""
        return self._pulling_prefix + file_name_for(image)

    def record_path(self, image_ref: str) -> str:
        """The file holding the pulled record for ``image_ref``."""
        return self._pulled_prefix + file_name_for(image_ref)

    # -- writing -------------------------------------------------------------------------------

    def _write(self, directory: str, name: str, data: bytes) -> None:
        """Write ``data`` to a draft of this call's own and rename it over ``directory/name``.

        The draft is removed on any failure (an interrupt included).
        """
        target = os.path.join(directory, name)
        draft = _draft_path(target)
        try:
            try:
                fd = os.open(draft, _DRAFT_FLAGS, _FILE_MODE)
            except FileNotFoundError:
                # Someone removed the directories since start-up: recreate them (0700).
                _make_dirs(directory)
                fd = os.open(draft, _DRAFT_FLAGS, _FILE_MODE)
        except OSError as e:
            raise RecordWriteError(
                f"failed to create temporary file {draft!r}: {_strerror(e)}", target
            ) from e
        try:
            try:
                try:
                    write_all(fd, data)
                finally:
                    os.close(fd)
            except OSError as e:
                raise RecordWriteError(
                    f"failed to write temporary file {draft!r}: {_strerror(e)}", target
                ) from e
            try:
                os.replace(draft, target)
            except OSError as e:
                raise RecordWriteError(
                    f"failed to rename {draft!r} to {target!r}: {_strerror(e)}", target
                ) from e
        except BaseException:
            remove_quietly(draft)
            raise

    def sweep_drafts(self) -> int:
        """Remove drafts this module's writes left behind (``<target>.<16 hex>.tmp``).

        Only for the one process that owns the directory (a node holding its root's lock):
        another writer's draft in progress would go too.  A kubelet's own ``<target>.tmp`` is
        left alone.  Returns how many were removed.
        """
        removed = 0
        for directory in (self.pulling_dir, self.pulled_dir):
            try:
                names = os.listdir(directory)
            except OSError:
                continue
            for name in names:
                if _OWN_DRAFT_RE.fullmatch(name):
                    remove_quietly(os.path.join(directory, name))
                    removed += 1
        return removed

    @staticmethod
    def _delete(path: str) -> None:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise RecordWriteError(f"failed to delete {path!r}: {_strerror(e)}", path) from e

    @staticmethod
    def _encode(obj: ImagePullIntent | ImagePulledRecord, version: str) -> bytes:
        try:
            return encode(obj, version)
        except (TypeError, ValueError, OverflowError) as e:
            raise RecordWriteError(f"failed to serialize {type(obj).__name__}: {e}") from e

    def _write_object(self, obj: ImagePullIntent | ImagePulledRecord, version: str) -> str:
        data = self._encode(obj, version)
        directory = self.pulling_dir if isinstance(obj, ImagePullIntent) else self.pulled_dir
        name = file_name_for(_key(obj))
        self._write(directory, name, data)
        return os.path.join(directory, name)

    def write_intent(self, intent: ImagePullIntent) -> None:
        self._write(
            self.pulling_dir, file_name_for(intent.image), self._encode(intent, CURRENT_VERSION)
        )

    def write_pulled_record(self, record: ImagePulledRecord) -> None:
        self._write(
            self.pulled_dir, file_name_for(record.image_ref), self._encode(record, CURRENT_VERSION)
        )

    def delete_intent(self, image: str) -> None:
        self._delete(self._pulling_prefix + file_name_for(image))

    def delete_pulled_record(self, image_ref: str) -> None:
        self._delete(self._pulled_prefix + file_name_for(image_ref))

    # -- reading -------------------------------------------------------------------------------

    def get_pulled_record(self, image_ref: str) -> ImagePulledRecord | None:
        """The record for ``image_ref``; ``None`` if there is none or the file holds another
        imageRef (hash collision guard).  Raises RecordReadError / RecordDecodeError."""
        path = self._pulled_prefix + file_name_for(image_ref)
        data = _read_file(path)
        if data is None:
            return None
        record = _decode_as(path, data, ImagePulledRecord)[0]
        return record if record.image_ref == image_ref else None

    def intent_exists(self, image: str) -> bool:
        """Whether an intent file for exactly ``image`` exists.  Raises on unreadable files."""
        path = self._pulling_prefix + file_name_for(image)
        data = _read_file(path)
        if data is None:
            return False
        return _decode_as(path, data, ImagePullIntent)[0].image == image

    def _list(
        self, directory: str, cls: type[T]
    ) -> tuple[list[tuple[str, T, str]], list[RecordError]]:
        """(path, object, apiVersion) of every file that decodes, and the errors of the rest."""
        found: list[tuple[str, T, str]] = []
        errors: list[RecordError] = []
        try:
            names = _record_entries(directory)
        except OSError as e:
            errors.append(
                RecordReadError(f"failed to list {directory!r}: {_strerror(e)}", directory)
            )
            return found, errors
        if names is None:
            return found, errors
        for name in names:
            path = os.path.join(directory, name)
            try:
                data = _read_file(path)
                if data is None:  # deleted since the directory was read
                    continue
                obj, version = _decode_as(path, data, cls)
            except RecordError as e:
                errors.append(e)
                continue
            found.append((path, obj, version))
        return found, errors

    def list_intents(self) -> Listing[ImagePullIntent]:
        """Every intent that decodes, in file name order, plus one error per file that does not."""
        found, errors = self._list(self.pulling_dir, ImagePullIntent)
        return Listing([obj for _, obj, _ in found], errors)

    def list_pulled_records(self) -> Listing[ImagePulledRecord]:
        """Every record that decodes, in file name order, plus one error per file that does not."""
        found, errors = self._list(self.pulled_dir, ImagePulledRecord)
        return Listing([obj for _, obj, _ in found], errors)

    # -- gauges --------------------------------------------------------------------------------

    @staticmethod
    def _count(directory: str) -> int:
        try:
            names = _record_entries(directory)
        except OSError as e:
            raise RecordReadError(f"failed to list {directory!r}: {_strerror(e)}", directory) from e
        return 0 if names is None else len(names)

    def count_intent_files(self) -> int:
        """Intent files as the on-disk gauge counts them (no directories, no ``.tmp``, only
        ``sha256-*`` names; spec §7.3)."""
        return self._count(self.pulling_dir)

    def count_record_files(self) -> int:
        """Pulled record files, counted like :meth:`count_intent_files`."""
        return self._count(self.pulled_dir)

    # -- migration -----------------------------------------------------------------------------

    def migrate(self, *, dry_run: bool = False) -> MigrationReport:
        """Rewrite every decodable file not in v1beta1 as v1beta1 (spec §4.7).

        ``pulling/`` is walked before ``pulled/``.  Each such object goes through the normal
        write path under the name recomputed from its content, keeping ``lastUpdatedTime`` as
        stored.  Undecodable files are left untouched and reported.  With ``dry_run`` nothing is
        written; the report lists what would be.
        """
        report = MigrationReport(dry_run=dry_run)
        self._migrate_dir(self.pulling_dir, ImagePullIntent, report)
        self._migrate_dir(self.pulled_dir, ImagePulledRecord, report)
        return report

    def _migrate_dir(self, directory: str, cls: type[T], report: MigrationReport) -> None:
        found, errors = self._list(directory, cls)
        for e in errors:
            log.warning("record migration: leaving %s untouched: %s", e.path, e)
        report.errors.extend(errors)
        for path, obj, version in found:
            if version == CURRENT_VERSION:
                continue
            target = os.path.join(directory, file_name_for(_key(obj)))
            if not report.dry_run:
                try:
                    self._write_object(obj, CURRENT_VERSION)
                except RecordWriteError as e:
                    log.warning("record migration: failed to rewrite %s: %s", path, e)
                    report.errors.append(e)
                    continue
            report.items.append(MigrationItem(path, target, cls.__name__, version))


_OWN_DRAFT_RE: Final = re.compile(r"sha256-[0-9a-f]{64}\.[0-9a-f]{16}\.tmp")


def _draft_path(target: str) -> str:
    """A fresh draft name for ``target``: ``<target>.<16 random hex digits>.tmp``."""
    return f"{target}.{os.urandom(8).hex()}{TMP_SUFFIX}"


def _key(obj: ImagePullIntent | ImagePulledRecord) -> str:
    return obj.image if isinstance(obj, ImagePullIntent) else obj.image_ref


# ------------------------------------------------------------------------------------------------
# scan: a read-only consistency check for operators
# ------------------------------------------------------------------------------------------------


class ProblemKind(enum.Enum):
    """What :func:`scan` found wrong with a directory entry."""

    UNREADABLE = "unreadable"
    """A record file that exists but cannot be read."""
    UNDECODABLE = "undecodable"
    """Not a valid ImagePullIntent/ImagePulledRecord (bad JSON, unknown field, wrong type...)."""
    FOREIGN_KIND = "foreign-kind"
    """A well-formed object of another kind/apiVersion, or of the other directory's kind."""
    MISNAMED = "misnamed"
    """The file name is not ``sha256-`` + the hash of the image/imageRef it holds."""
    OLD_VERSION = "old-version"
    """A v1alpha1 file: valid, but start-up migration would rewrite it (informational; only
    reported when asked for)."""
    STALE_TMP = "stale-tmp"
    """A ``*.tmp`` file: a draft left over from an interrupted write (or a write in progress),
    ours (``<target>.<hex>.tmp``) or a kubelet's (``<target>.tmp``)."""
    TOO_LARGE = "too-large"
    """A record file larger than :data:`MAX_FILE_SIZE`: lookups refuse to read it."""
    UNEXPECTED_FILE = "unexpected-file"
    """A file the kubelet does not use, or a record-named entry that is not a regular file."""
    UNEXPECTED_DIRECTORY = "unexpected-directory"
    """A sub-directory where the kubelet keeps none."""


@dataclass(frozen=True, slots=True)
class FileProblem:
    path: str
    kind: ProblemKind
    message: str


def _peek_gvk(data: bytes) -> tuple[object, object] | None:
    """(apiVersion, kind) of a JSON object, decoded leniently; ``None`` if not a JSON object."""
    try:
        doc = loads_json(data)
    except ValueError:  # UnicodeDecodeError and NestingError included
        return None
    if not isinstance(doc, dict):
        return None
    return doc.get("apiVersion"), doc.get("kind")


def _scan_record_dir(
    directory: str, kind: str, problems: list[FileProblem], old_versions: bool
) -> None:
    try:
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
    except OSError as e:
        problems.append(
            FileProblem(directory, ProblemKind.UNREADABLE, f"cannot list: {_strerror(e)}")
        )
        return
    other = KIND_RECORD if kind == KIND_INTENT else KIND_INTENT
    add = problems.append
    for entry in entries:
        name, path = entry.name, entry.path
        try:
            st = entry.stat(follow_symlinks=False)
        except OSError as e:
            add(FileProblem(path, ProblemKind.UNREADABLE, f"cannot stat: {_strerror(e)}"))
            continue
        if stat.S_ISDIR(st.st_mode):
            add(
                FileProblem(
                    path, ProblemKind.UNEXPECTED_DIRECTORY, "sub-directory; the kubelet ignores it"
                )
            )
            continue
        if name.endswith(TMP_SUFFIX):
            add(
                FileProblem(
                    path,
                    ProblemKind.STALE_TMP,
                    "draft of an interrupted (or in-progress) write; listings ignore it",
                )
            )
            continue
        if not name.startswith(FILE_PREFIX):
            add(
                FileProblem(
                    path, ProblemKind.UNEXPECTED_FILE, f"not a {FILE_PREFIX}* name; ignored"
                )
            )
            continue
        if not stat.S_ISREG(st.st_mode):
            what = "symbolic link" if stat.S_ISLNK(st.st_mode) else "special file"
            add(
                FileProblem(
                    path,
                    ProblemKind.UNEXPECTED_FILE,
                    f"{what}, not a regular file; the kubelet would try to read it",
                )
            )
            continue
        if st.st_size > MAX_FILE_SIZE:
            add(
                FileProblem(
                    path,
                    ProblemKind.TOO_LARGE,
                    f"{st.st_size} bytes, more than the {_MAX_SIZE_TEXT} a record file may hold; "
                    "pullwarden treats it as unreadable (every pod must verify)",
                )
            )
            continue
        try:
            data = _read_file(path)
        except RecordReadError as e:
            add(FileProblem(path, ProblemKind.UNREADABLE, str(e)))
            continue
        if data is None:
            continue
        try:
            obj, version = decode_versioned(data)
        except RecordDecodeError as e:
            gvk = _peek_gvk(data)
            if gvk is not None and (gvk[0] not in API_VERSIONS or gvk[1] not in (kind, other)):
                api_version, found_kind = gvk
                add(
                    FileProblem(
                        path,
                        ProblemKind.FOREIGN_KIND,
                        f"holds kind {found_kind!r} of apiVersion {api_version!r}, not {kind}",
                    )
                )
            else:
                add(FileProblem(path, ProblemKind.UNDECODABLE, str(e)))
            continue
        if isinstance(obj, ImagePullIntent):
            found_kind, key = KIND_INTENT, obj.image
        else:
            found_kind, key = KIND_RECORD, obj.image_ref
        if found_kind != kind:
            add(
                FileProblem(
                    path, ProblemKind.FOREIGN_KIND, f"holds an {found_kind}, expected an {kind}"
                )
            )
            continue
        expected = file_name_for(key)
        if name != expected:
            add(
                FileProblem(
                    path,
                    ProblemKind.MISNAMED,
                    f"content belongs in {expected}; lookups will not find this file",
                )
            )
        if old_versions and version != CURRENT_VERSION:
            add(
                FileProblem(
                    path,
                    ProblemKind.OLD_VERSION,
                    f"stored as {version}; start-up migration rewrites it as {CURRENT_VERSION}",
                )
            )


def scan(kubelet_root: Path | str, *, old_versions: bool = False) -> list[FileProblem]:
    """Check ``<kubelet_root>/image_manager`` without changing anything.

    Reports unreadable, oversized and undecodable record files, foreign kinds, misnamed files,
    stale ``.tmp`` drafts and entries the kubelet does not use, in path order.  v1alpha1 files are
    valid records; they are reported (as :attr:`ProblemKind.OLD_VERSION`) only when
    ``old_versions`` is set.  A missing directory is not a problem (a kubelet creates it on
    start-up).
    """
    root = os.path.join(os.fspath(kubelet_root), IMAGE_MANAGER_DIR)
    problems: list[FileProblem] = []
    try:
        with os.scandir(root) as it:
            top = sorted(it, key=lambda e: os.fsencode(e.name))
    except FileNotFoundError:
        return problems
    except OSError as e:
        return [FileProblem(root, ProblemKind.UNREADABLE, f"cannot list: {_strerror(e)}")]
    for entry in top:
        is_dir = entry.is_dir(follow_symlinks=False)
        if entry.name in (PULLING_DIR, PULLED_DIR) and is_dir:
            kind = KIND_INTENT if entry.name == PULLING_DIR else KIND_RECORD
            _scan_record_dir(entry.path, kind, problems, old_versions)
        elif is_dir:
            problems.append(
                FileProblem(
                    entry.path,
                    ProblemKind.UNEXPECTED_DIRECTORY,
                    "not a directory this kubelet version uses",
                )
            )
        else:
            problems.append(
                FileProblem(entry.path, ProblemKind.UNEXPECTED_FILE, "not a file the kubelet uses")
            )
    return problems
