"""A read-only consistency check of a kubelet's ``image_manager`` directory, for operators.

:func:`scan` walks ``<kubelet root>/image_manager`` and reports, in path order, every entry a
kubelet would trip over or silently ignore: unreadable, oversized and undecodable record files,
foreign kinds, misnamed files, stale ``.tmp`` drafts, and files or directories the kubelet does
not use.  It never writes, and it reads each record file at most once, the way a lookup would
(:func:`~pullwarden.records._layout.read_file`: no symlinks, regular files only, size-capped).

One entry is judged by :func:`_check_entry`, in three steps that each stop at the first problem:
what the entry is (:func:`_entry_problem`: a directory, a draft, a foreign name, not a regular
file, too large), whether it can be read, and what it holds (:func:`_content_problems`: a
decodable object of the directory's kind, stored under its own name, in the current version).

``pullwarden records check`` prints what :func:`scan` returns.
"""

from __future__ import annotations

import enum
import os
import stat
from operator import attrgetter
from pathlib import Path
from typing import Final

from pullwarden._nesting import loads_json
from pullwarden._values import frozen
from pullwarden.errors import RecordDecodeError, RecordReadError
from pullwarden.records._codec import (
    API_VERSIONS,
    CURRENT_VERSION,
    KIND_INTENT,
    KIND_RECORD,
    decode_versioned,
    exact_record_key,
)
from pullwarden.records._layout import (
    FILE_PREFIX,
    IMAGE_MANAGER_DIR,
    MAX_FILE_SIZE,
    MAX_SIZE_TEXT,
    PULLED_DIR,
    PULLING_DIR,
    TMP_SUFFIX,
    file_name_for,
    read_file,
    strerror,
)
from pullwarden.records._model import ImagePullIntent

__all__ = ["FileProblem", "ProblemKind", "scan"]


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
    """A record file larger than :data:`~pullwarden.records._layout.MAX_FILE_SIZE`: lookups
    refuse to read it."""
    UNEXPECTED_FILE = "unexpected-file"
    """A file the kubelet does not use, or a record-named entry that is not a regular file."""
    UNEXPECTED_DIRECTORY = "unexpected-directory"
    """A sub-directory where the kubelet keeps none."""


@frozen
class FileProblem:
    path: str
    kind: ProblemKind
    message: str


_KIND_OF_DIR: Final = {PULLING_DIR: KIND_INTENT, PULLED_DIR: KIND_RECORD}


def scan(kubelet_root: Path | str, *, old_versions: bool = False) -> list[FileProblem]:
    """Check ``<kubelet_root>/image_manager`` without changing anything.

    Reports unreadable, oversized and undecodable record files, foreign kinds, misnamed files,
    stale ``.tmp`` drafts and entries the kubelet does not use, in path order.  v1alpha1 files are
    valid records; they are reported (as :attr:`ProblemKind.OLD_VERSION`) only when
    ``old_versions`` is set.  A missing directory is not a problem (a kubelet creates it on
    start-up).
    """
    root = os.path.join(os.fspath(kubelet_root), IMAGE_MANAGER_DIR)
    try:
        top = _sorted_entries(root)
    except FileNotFoundError:
        return []
    except OSError as e:
        return [FileProblem(root, ProblemKind.UNREADABLE, f"cannot list: {strerror(e)}")]
    problems: list[FileProblem] = []
    for entry in top:
        is_dir = entry.is_dir(follow_symlinks=False)
        kind = _KIND_OF_DIR.get(entry.name)
        if kind is not None and is_dir:
            problems += _scan_record_dir(entry.path, kind, old_versions)
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


def _sorted_entries(directory: str) -> list[os.DirEntry[str]]:
    """The entries of ``directory`` in Go's byte order of their names."""
    with os.scandir(directory) as it:
        entries = list(it)
    if all(e.name.isascii() for e in entries):
        entries.sort(key=_name)  # code point order is byte order for ASCII
    else:
        entries.sort(key=lambda e: os.fsencode(e.name))
    return entries


_name: Final = attrgetter("name")


def _scan_record_dir(directory: str, kind: str, old_versions: bool) -> list[FileProblem]:
    """The problems of every entry of ``pulling/`` (``kind`` = ImagePullIntent) or ``pulled/``."""
    try:
        entries = _sorted_entries(directory)
    except OSError as e:
        return [FileProblem(directory, ProblemKind.UNREADABLE, f"cannot list: {strerror(e)}")]
    problems: list[FileProblem] = []
    for entry in entries:
        problems += _check_entry(entry, kind, old_versions=old_versions)
    return problems


def _check_entry(
    entry: os.DirEntry[str], kind: str, *, old_versions: bool = False
) -> list[FileProblem]:
    """What is wrong with one entry of a record directory holding objects of ``kind``.

    Empty when the entry is a record file a kubelet reads as intended (or vanished meanwhile).
    """
    path = entry.path
    try:
        st = entry.stat(follow_symlinks=False)
    except OSError as e:
        return [FileProblem(path, ProblemKind.UNREADABLE, f"cannot stat: {strerror(e)}")]
    problem = _entry_problem(path, entry.name, st)
    if problem is not None:
        return [problem]
    try:
        data = read_file(path)
    except RecordReadError as e:
        return [FileProblem(path, ProblemKind.UNREADABLE, str(e))]
    if data is None:
        return []
    return _content_problems(path, entry.name, data, kind, old_versions)


def _entry_problem(path: str, name: str, st: os.stat_result) -> FileProblem | None:
    """The problem with an entry before its content is read: what it is, its name, its size."""
    if stat.S_ISDIR(st.st_mode):
        return FileProblem(
            path, ProblemKind.UNEXPECTED_DIRECTORY, "sub-directory; the kubelet ignores it"
        )
    if name.endswith(TMP_SUFFIX):
        return FileProblem(
            path,
            ProblemKind.STALE_TMP,
            "draft of an interrupted (or in-progress) write; listings ignore it",
        )
    if not name.startswith(FILE_PREFIX):
        return FileProblem(path, ProblemKind.UNEXPECTED_FILE, f"not a {FILE_PREFIX}* name; ignored")
    if not stat.S_ISREG(st.st_mode):
        what = "symbolic link" if stat.S_ISLNK(st.st_mode) else "special file"
        return FileProblem(
            path,
            ProblemKind.UNEXPECTED_FILE,
            f"{what}, not a regular file; the kubelet would try to read it",
        )
    if st.st_size > MAX_FILE_SIZE:
        return FileProblem(
            path,
            ProblemKind.TOO_LARGE,
            f"{st.st_size} bytes, more than the {MAX_SIZE_TEXT} a record file may hold; "
            "pullwarden treats it as unreadable (every pod must verify)",
        )
    return None


def _content_problems(
    path: str, name: str, data: bytes, kind: str, old_versions: bool
) -> list[FileProblem]:
    """What is wrong with what a record file holds: its kind, its name, its version."""
    exact = exact_record_key(data)  # a record as a kubelet writes it: checked, not built
    if exact is not None:
        found_kind = KIND_RECORD
        version, key, _ = exact
    else:
        try:
            obj, version = decode_versioned(data)
        except RecordDecodeError as e:
            return [_undecodable(path, data, kind, e)]
        if isinstance(obj, ImagePullIntent):
            found_kind, key = KIND_INTENT, obj.image
        else:
            found_kind, key = KIND_RECORD, obj.image_ref
    if found_kind != kind:
        return [
            FileProblem(
                path, ProblemKind.FOREIGN_KIND, f"holds an {found_kind}, expected an {kind}"
            )
        ]
    problems: list[FileProblem] = []
    expected = file_name_for(key)
    if name != expected:
        problems.append(
            FileProblem(
                path,
                ProblemKind.MISNAMED,
                f"content belongs in {expected}; lookups will not find this file",
            )
        )
    if old_versions and version != CURRENT_VERSION:
        problems.append(
            FileProblem(
                path,
                ProblemKind.OLD_VERSION,
                f"stored as {version}; start-up migration rewrites it as {CURRENT_VERSION}",
            )
        )
    return problems


def _undecodable(path: str, data: bytes, kind: str, err: RecordDecodeError) -> FileProblem:
    """A file that does not decode: another kind of object altogether, or a broken record."""
    gvk = _peek_gvk(data)
    known_kinds = (KIND_INTENT, KIND_RECORD)
    if gvk is not None and (gvk[0] not in API_VERSIONS or gvk[1] not in known_kinds):
        api_version, found_kind = gvk
        return FileProblem(
            path,
            ProblemKind.FOREIGN_KIND,
            f"holds kind {found_kind!r} of apiVersion {api_version!r}, not {kind}",
        )
    return FileProblem(path, ProblemKind.UNDECODABLE, str(err))


def _peek_gvk(data: bytes) -> tuple[object, object] | None:
    """(apiVersion, kind) of a JSON object, decoded leniently; ``None`` if not a JSON object."""
    try:
        doc = loads_json(data)
    except ValueError:  # UnicodeDecodeError and NestingError included
        return None
    if not isinstance(doc, dict):
        return None
    return doc.get("apiVersion"), doc.get("kind")
