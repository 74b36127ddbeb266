"""Pull records as files, laid out exactly as a kubelet keeps them (spec §4.1-§4.3, §4.7).

``<kubelet root>/image_manager/pulling/sha256-<hex>`` holds one :class:`ImagePullIntent` per raw
image string, ``<kubelet root>/image_manager/pulled/sha256-<hex>`` one :class:`ImagePulledRecord`
per imageRef; ``<hex>`` is the SHA-256 of the key's bytes.  Directories are created with mode
0700.  A file is written to a draft of its own, ``<target>.<16 random hex digits>.tmp``, created
exclusively (never through an existing name or a symlink) with mode 0600, then renamed over the
target, without fsync, as the kubelet does.  A kill at any instant therefore leaves the old or
the new file, never a torn one; at worst a stale draft remains, which every listing ignores
(its name ends in ``.tmp``) and :func:`~pullwarden.records._audit.scan` reports.  Because every
write has its own draft, any number of threads or processes may rewrite the same file at once:
the last rename wins and no reader ever sees a mixture.  (The kubelet uses the fixed name
``<target>.tmp`` and truncates it; a leftover of that name is left alone here, since it may be a
live kubelet's.)

Reading never follows a symlink, accepts only regular files and at most :data:`MAX_FILE_SIZE`
(4 MiB) per file; anything else is a :class:`~pullwarden.errors.RecordReadError`, which the pull
manager treats as "must verify".  Even a record holding thousands of Secrets for one image stays
under a megabyte; the cap keeps a planted or runaway file from costing memory.

Besides the :class:`~pullwarden.records._base.RecordStore` protocol this module offers the
start-up version migration (:meth:`FileRecordStore.migrate`, with a dry run for operators) and
file counts for the on-disk gauges.  The layout and the safe read live in
:mod:`pullwarden.records._layout`; the read-only consistency check of a kubelet's
``image_manager`` directory is :mod:`pullwarden.records._audit` (its ``scan``, ``FileProblem``
and ``ProblemKind`` are re-exported here only so that older imports keep working).
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Final, TypeVar

from pullwarden._files import remove_quietly, write_all
from pullwarden._values import frozen
from pullwarden.errors import RecordDecodeError, RecordError, RecordReadError, RecordWriteError
from pullwarden.records._audit import FileProblem, ProblemKind, scan
from pullwarden.records._base import Gauges, Listing, StartupListings
from pullwarden.records._codec import (
    CURRENT_VERSION,
    RecordKey,
    RecordSummary,
    decode_versioned,
    encode,
    exact_record_key,
    exact_record_summary,
    summarize,
)
from pullwarden.records._layout import (
    FILE_PREFIX,
    IMAGE_MANAGER_DIR,
    MAX_FILE_SIZE,
    PULLED_DIR,
    PULLING_DIR,
    TMP_SUFFIX,
    file_name_for,
    is_record_file_name,
    open_directory,
    read_file,
    read_file_at,
    record_names,
    strerror,
)
from pullwarden.records._model import ImagePulledRecord, ImagePullIntent

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

_DIR_MODE: Final = 0o700
_FILE_MODE: Final = 0o600
_DRAFT_FLAGS: Final = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

T = TypeVar("T", ImagePullIntent, ImagePulledRecord)


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


@frozen
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

    The migration scan reads every file once and decodes those not already in the exact
    v1beta1 form a kubelet writes (those it checks, which is cheaper); what it read is kept
    for one taker, the cache's warm-up (:meth:`take_startup_listings`), so that start-up reads
    each file once.

    ``create=False`` (with ``migrate=False``: a read-only open, for operator tools) skips
    creating the directories; a missing directory then reads as empty.  Writes always create
    missing directories, as the kubelet does before each write.

    ``lookups_only=True`` (what a :class:`~pullwarden.node.Node` opens) makes listings hold only
    what a lookup by key would find: a pulled record in a file not named for its imageRef, and
    a directory where a record or intent file would be, are errors of the listing, not skipped
    or listed.  The kubelet lists both ways (a sub-directory is skipped; a misnamed record is
    listed under the imageRef it holds), so a cache warmed from its listing could answer
    "absent" where a lookup reads an error, or serve a stray file's credentials in place of the
    record a lookup finds.  A listing with an error leaves the cache non-authoritative, so each
    such key is read from disk by its own file name.  It costs one SHA-256 per record listed.
    """

    def __init__(
        self,
        kubelet_root: Path | str,
        *,
        migrate: bool = True,
        create: bool = True,
        lookups_only: bool = False,
    ) -> None:
        self.kubelet_root = os.fspath(kubelet_root)
        self._lookups_only = lookups_only
        self.image_manager_dir = os.path.join(self.kubelet_root, IMAGE_MANAGER_DIR)
        self.pulling_dir = os.path.join(self.image_manager_dir, PULLING_DIR)
        self.pulled_dir = os.path.join(self.image_manager_dir, PULLED_DIR)
        self._pulling_prefix = self.pulling_dir + os.sep
        self._pulled_prefix = self.pulled_dir + os.sep
        for d in (self.pulling_dir, self.pulled_dir) if create else ():
            try:
                _make_dirs(d)
            except OSError as e:
                raise RecordWriteError(f"failed to create directory {d!r}: {strerror(e)}", d) from e
            if not os.path.isdir(d):
                raise RecordWriteError(f"failed to create directory {d!r}: not a directory", d)
        self.migration_report: MigrationReport | None = None
        self._startup_listings: StartupListings | None = None
        if migrate:
            report, listings = self._migrate(dry_run=False)
            self.migration_report = report
            # A misnamed file rewritten under its own name adds a file the scan did not see.
            if all(item.source == item.target for item in report.items):
                self._startup_listings = listings

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
        self._startup_listings = None
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
                f"failed to create temporary file {draft!r}: {strerror(e)}", target
            ) from e
        try:
            try:
                try:
                    write_all(fd, data)
                finally:
                    os.close(fd)
            except OSError as e:
                raise RecordWriteError(
                    f"failed to write temporary file {draft!r}: {strerror(e)}", target
                ) from e
            try:
                os.replace(draft, target)
            except OSError as e:
                raise RecordWriteError(
                    f"failed to rename {draft!r} to {target!r}: {strerror(e)}", target
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
                if name.endswith(TMP_SUFFIX) and _OWN_DRAFT_RE.fullmatch(name):
                    remove_quietly(os.path.join(directory, name))
                    removed += 1
        return removed

    def _delete(self, path: str) -> None:
        self._startup_listings = None
        try:
            os.remove(path)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise RecordWriteError(f"failed to delete {path!r}: {strerror(e)}", path) from e

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

    def delete_pulled_records(self, image_refs: Iterable[str]) -> dict[str, RecordWriteError]:
        """Delete the records of all ``image_refs`` through one descriptor of ``pulled/``.

        Returns the imageRefs whose file could not be deleted, with the error; a missing file
        (or a missing directory) is not an error.
        """
        self._startup_listings = None
        refs = list(image_refs)
        failed: dict[str, RecordWriteError] = {}
        if not refs:
            return failed
        try:
            dir_fd = open_directory(self.pulled_dir)
        except OSError as e:
            d = self.pulled_dir
            err = RecordWriteError(f"failed to open {d!r}: {strerror(e)}", d)
            return dict.fromkeys(refs, err)
        if dir_fd is None:
            return failed
        unlink = os.unlink
        try:
            for ref in refs:
                name = file_name_for(ref)
                try:
                    unlink(name, dir_fd=dir_fd)
                except FileNotFoundError:
                    pass
                except OSError as e:
                    path = self._pulled_prefix + name
                    failed[ref] = RecordWriteError(
                        f"failed to delete {path!r}: {strerror(e)}", path
                    )
        finally:
            os.close(dir_fd)
        return failed

    # -- reading -------------------------------------------------------------------------------

    def get_pulled_record(self, image_ref: str) -> ImagePulledRecord | None:
        """The record for ``image_ref``; ``None`` if there is none or the file holds another
        imageRef (hash collision guard).  Raises RecordReadError / RecordDecodeError."""
        path = self._pulled_prefix + file_name_for(image_ref)
        data = read_file(path)
        if data is None:
            return None
        record = _decode_as(path, data, ImagePulledRecord)[0]
        return record if record.image_ref == image_ref else None

    def intent_exists(self, image: str) -> bool:
        """Whether an intent file for exactly ``image`` exists.  Raises on unreadable files."""
        path = self._pulling_prefix + file_name_for(image)
        data = read_file(path)
        if data is None:
            return False
        return _decode_as(path, data, ImagePullIntent)[0].image == image

    def _list(
        self, directory: str, cls: type[T], old: list[tuple[str, T, str]] | None = None
    ) -> Listing[T]:
        """Every object that decodes and one error per file that does not, in file name order
        (see :meth:`_iter`)."""
        found: list[T] = []
        errors: list[RecordError] = []
        append, failed = found.append, errors.append
        for item in self._iter(directory, cls, old):
            if isinstance(item, RecordError):
                failed(item)
            else:
                append(item)  # type: ignore[arg-type]  # no exact reader: no pairs
        return Listing(found, errors)

    def _iter(
        self,
        directory: str,
        cls: type[T],
        old: list[tuple[str, T, str]] | None = None,
        exact: Callable[[bytes], RecordKey | RecordSummary | None] | None = None,
    ) -> Iterator[T | RecordError | tuple[Any, bytes]]:
        """Every object that decodes, or the error of a file that does not, in file name order;
        the directory is read through one descriptor.  ``old`` (when given) collects (file name,
        object, apiVersion) of the objects not stored in the current version.  ``exact`` (for
        records) reads a file without building it (:func:`exact_record_key` and the like): what
        it returns, if not None, comes as (that, content) instead of the object."""
        try:
            names = record_names(directory)
            dir_fd = None if names is None else open_directory(directory)
        except OSError as e:
            yield RecordReadError(f"failed to list {directory!r}: {strerror(e)}", directory)
            return
        if names is None or dir_fd is None:
            return
        prefix = directory + os.sep
        strict = self._lookups_only
        named = strict and cls is ImagePulledRecord  # a misnamed intent only adds evidence
        try:
            for name in names:
                path = prefix + name
                try:
                    data = read_file_at(dir_fd, name, path, skip_directories=not strict)
                    if data is None:  # deleted since the directory was read, or a directory
                        continue
                    if exact is not None:
                        read = exact(data)
                        if read is not None:
                            if named:
                                _check_name(path, name, read.image_ref)
                            yield read, data
                            continue
                    obj, version = _decode_as(path, data, cls)
                    if version != CURRENT_VERSION and old is not None:
                        old.append((name, obj, version))  # migrated under its own name
                    if named:
                        _check_name(path, name, _key(obj))
                except RecordError as e:
                    yield e
                    continue
                yield obj
        finally:
            os.close(dir_fd)

    def list_intents(self) -> Listing[ImagePullIntent]:
        """Every intent that decodes, in file name order, plus one error per file that does not."""
        self._startup_listings = None
        return self._list(self.pulling_dir, ImagePullIntent)

    def list_pulled_records(self) -> Listing[ImagePulledRecord]:
        """Every record that decodes, in file name order, plus one error per file that does not."""
        self._startup_listings = None
        return self._list(self.pulled_dir, ImagePulledRecord)

    def pulled_record_times(
        self, older_than: datetime | None = None
    ) -> Listing[tuple[str, datetime]]:
        """(imageRef, lastUpdatedTime) of every record that decodes (updated before
        ``older_than``, when given), in file name order, plus one error per file that does
        not; a record in the exact form is only checked."""
        self._startup_listings = None
        found: list[tuple[str, datetime]] = []
        errors: list[RecordError] = []
        for item in self._iter(self.pulled_dir, ImagePulledRecord, exact=exact_record_key):
            if isinstance(item, RecordError):
                errors.append(item)
                continue
            if isinstance(item, ImagePulledRecord):
                image_ref, when = item.image_ref, item.last_updated_time
            else:
                _, image_ref, when = item[0]
            if older_than is None or when < older_than:
                found.append((image_ref, when))
        return Listing(found, errors)

    def iter_pulled_summaries(self) -> Iterator[RecordSummary | RecordError]:
        """What :meth:`iter_pulled_records` gives, as :class:`RecordSummary` (for
        ``records ls``); a record in the exact form is summed up without being built."""
        self._startup_listings = None
        for item in self._iter(self.pulled_dir, ImagePulledRecord, exact=exact_record_summary):
            if isinstance(item, RecordError):
                yield item
            elif isinstance(item, ImagePulledRecord):
                yield summarize(item)
            else:
                yield item[0]

    def iter_pulled_records(self) -> Iterator[ImagePulledRecord | RecordError]:
        """:meth:`list_pulled_records` one at a time (each record, or the error of a file that
        does not decode), for a caller that need not hold them all (``records ls``)."""
        self._startup_listings = None
        return self._iter(self.pulled_dir, ImagePulledRecord)  # type: ignore[return-value]

    def take_startup_listings(self) -> StartupListings | None:
        """What the start-up migration scan read, as :meth:`list_intents` and
        :meth:`list_pulled_records` would give it (records in the exact form as their bytes,
        see :class:`StartupListings`), handed out once.

        ``None`` when the store was opened without migration, when the migration wrote a file
        under a new name, once anything was written, deleted or listed through this store, and
        after the first call.  The cache's warm-up takes them instead of reading every file a
        second time; a change another process made since the scan is not seen, just as the
        cache does not see one made after its warm-up.
        """
        listings, self._startup_listings = self._startup_listings, None
        return listings

    # -- gauges --------------------------------------------------------------------------------

    @staticmethod
    def _count(directory: str) -> int:
        try:
            names = _record_entries(directory)
        except OSError as e:
            raise RecordReadError(f"failed to list {directory!r}: {strerror(e)}", directory) from e
        return 0 if names is None else len(names)

    def count_intent_files(self) -> int:
        """Intent files as the on-disk gauge counts them (no directories, no ``.tmp``, only
        ``sha256-*`` names; spec §7.3)."""
        return self._count(self.pulling_dir)

    def count_record_files(self) -> int:
        """Pulled record files, counted like :meth:`count_intent_files`."""
        return self._count(self.pulled_dir)

    def gauges(self) -> Gauges:
        return Gauges(intent_files=self.count_intent_files, record_files=self.count_record_files)

    # -- migration -----------------------------------------------------------------------------

    def migrate(self, *, dry_run: bool = False) -> MigrationReport:
        """Rewrite every decodable file not in v1beta1 as v1beta1 (spec §4.7).

        ``pulling/`` is walked before ``pulled/``.  Each such object goes through the normal
        write path under the name recomputed from its content, keeping ``lastUpdatedTime`` as
        stored.  Undecodable files are left untouched and reported.  With ``dry_run`` nothing is
        written; the report lists what would be.
        """
        return self._migrate(dry_run)[0]

    def _migrate(self, dry_run: bool) -> tuple[MigrationReport, StartupListings]:
        """The migration, and what its scan read (before any rewrite).

        A record file already in the exact v1beta1 form is only checked, not built (nor
        rewritten: it is current); every other file is decoded in full.
        """
        report = MigrationReport(dry_run=dry_run)
        raw: list[tuple[str, bytes]] = []
        intents = self._migrate_dir(self.pulling_dir, ImagePullIntent, report)
        records = self._migrate_dir(self.pulled_dir, ImagePulledRecord, report, raw)
        return report, StartupListings(intents, records, raw, self._decode_raw_record)

    def _decode_raw_record(self, image_ref: str, data: bytes) -> ImagePulledRecord:
        """A record the start-up scan kept as its bytes (checked: building it cannot fail)."""
        return _decode_as(self.record_path(image_ref), data, ImagePulledRecord)[0]

    def _migrate_dir(
        self,
        directory: str,
        cls: type[T],
        report: MigrationReport,
        raw: list[tuple[str, bytes]] | None = None,
    ) -> Listing[T]:
        """Migrate one directory; returns what it read.  With ``raw`` (records) the files in
        the exact v1beta1 form go there as (imageRef, content), unbuilt (and current)."""
        old: list[tuple[str, T, str]] = []
        found: list[T] = []
        errors: list[RecordError] = []
        exact = _current_exact_key if raw is not None else None
        for item in self._iter(directory, cls, old, exact):
            if isinstance(item, RecordError):
                errors.append(item)
            elif isinstance(item, tuple):
                assert raw is not None  # only an exact reader gives pairs
                (_, image_ref, _), data = item
                raw.append((image_ref, data))
            else:
                found.append(item)
        listing = Listing(found, errors)
        for e in listing.errors:
            log.warning("record migration: leaving %s untouched: %s", e.path, e)
        report.errors.extend(listing.errors)
        for name, obj, version in old:
            path = os.path.join(directory, name)
            target = os.path.join(directory, file_name_for(_key(obj)))
            if not report.dry_run:
                try:
                    self._write_object(obj, CURRENT_VERSION)
                except RecordWriteError as e:
                    log.warning("record migration: failed to rewrite %s: %s", path, e)
                    report.errors.append(e)
                    continue
            report.items.append(MigrationItem(path, target, cls.__name__, version))
        return listing


_OWN_DRAFT_RE: Final = re.compile(r"sha256-[0-9a-f]{64}\.[0-9a-f]{16}\.tmp")


def _draft_path(target: str) -> str:
    """A fresh draft name for ``target``: ``<target>.<16 random hex digits>.tmp``."""
    return f"{target}.{os.urandom(8).hex()}{TMP_SUFFIX}"


def _current_exact_key(data: bytes) -> RecordKey | None:
    """:func:`exact_record_key` of a file in the exact form of the current version only."""
    key = exact_record_key(data)
    return key if key is not None and key[0] == CURRENT_VERSION else None


def _check_name(path: str, name: str, image_ref: str) -> None:
    """Raise unless ``name`` is the file name of ``image_ref`` (a lookup would read it)."""
    if file_name_for(image_ref) != name:
        raise RecordDecodeError(
            f"failed to decode {path!r}: holds the record of {image_ref!r}, which a lookup "
            "reads from another file",
            path,
        )


def _key(obj: ImagePullIntent | ImagePulledRecord) -> str:
    return obj.image if isinstance(obj, ImagePullIntent) else obj.image_ref
