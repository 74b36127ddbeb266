"""Private helpers of the embedded image store: the blob directory, pull leases, the temp area.

Nothing here knows about images or names. :class:`BlobDir` keeps content-addressed files under
``blobs/sha256/<hex>``; :class:`Lease` lets a running pull protect the digests it is about to
register from garbage collection; :func:`sweep_temp` clears the temp area of everything that no
live pull owns and returns the digests the live pulls hold; :class:`ProgressWatchdog` cancels a
pull whose downloads stop growing.

A lease is a file ``tmp/<id>.lease`` listing digests (JSON), held under an exclusive ``flock``
for the whole pull, plus a private work directory ``tmp/<id>/`` for that pull's downloads. The
kernel drops the ``flock`` when its holder dies, so "can I lock it?" tells a dead pull's lease
from a live one without pids or clocks. ``flock`` conflicts between two open file descriptions
even inside one process, so the same test works between threads.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import stat
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from types import TracebackType

from pullwarden._cancel import CancelToken
from pullwarden._files import remove_quietly, write_all, write_atomically
from pullwarden._nesting import loads_json
from pullwarden.errors import ImageStoreError, PullwardenError
from pullwarden.runtime._oci import is_digest

__all__ = ["LEASE_SUFFIX", "BlobDir", "Lease", "ProgressWatchdog", "sweep_temp"]

LEASE_SUFFIX = ".lease"
_ALGORITHM = "sha256"
_HEX_LEN = 64
_DIR_MODE = 0o700
_FILE_MODE = 0o600


class BlobDir:
    """Content-addressed files ``<root>/blobs/sha256/<hex>``; every file enters by rename."""

    def __init__(self, root: Path) -> None:
        self.dir = root / "blobs" / _ALGORITHM
        self.dir.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)

    def path(self, digest: str) -> Path:
        """Where the blob ``digest`` lives; refuses anything but ``sha256:<64 hex>``."""
        if not is_digest(digest):
            raise ImageStoreError(f"refusing malformed blob digest {digest!r}")
        return self.dir / digest[len(_ALGORITHM) + 1 :]

    def has(self, digest: str, size: int) -> bool:
        """True when the blob is present as a regular file of exactly ``size`` bytes."""
        try:
            st = os.stat(self.path(digest))
        except FileNotFoundError:
            return False
        return stat.S_ISREG(st.st_mode) and st.st_size == size

    def adopt(self, src: Path, digest: str, size: int) -> None:
        """Move the finished download ``src`` into place after checking its length."""
        try:
            st = os.stat(src)
        except FileNotFoundError:
            raise ImageStoreError(f"the download of blob {digest} left no file") from None
        if st.st_size != size:
            os.unlink(src)
            raise ImageStoreError(
                f"the download of blob {digest} has {st.st_size} bytes, expected {size}"
            )
        os.replace(src, self.path(digest))

    def put(self, data: bytes, digest: str, workdir: Path) -> None:
        """Store ``data`` (already checked against ``digest``) unless an intact copy exists."""
        if self.has(digest, len(data)):
            return
        write_atomically(self.path(digest), data, workdir=workdir)

    def entries(self) -> Iterator[tuple[str, Path]]:
        """(digest, path) of every blob file; names that are not 64 hex digits are skipped."""
        with os.scandir(self.dir) as it:
            for entry in it:
                name = entry.name
                if len(name) == _HEX_LEN and is_digest(f"{_ALGORITHM}:{name}"):
                    yield f"{_ALGORITHM}:{name}", Path(entry.path)

    def remove(self, digest: str) -> int:
        """Delete one blob; returns the bytes freed (0 when it was already gone)."""
        path = self.path(digest)
        try:
            size = os.stat(path).st_size
            os.unlink(path)
        except FileNotFoundError:
            return 0
        return size


class Lease:
    """A running pull's claim on some digests, and its private work directory.

    Create it while holding the store lock (so no sweep can see it half-made); release it when
    the pull has committed or failed. Releasing needs no lock: a sweep that races with it at
    worst deletes what the release was deleting anyway.
    """

    def __init__(self, tmp: Path, digests: Iterable[str]) -> None:
        self.id = uuid.uuid4().hex
        self.path = tmp / (self.id + LEASE_SUFFIX)
        self.workdir = tmp / self.id
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, _FILE_MODE)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            write_all(fd, json.dumps(sorted(set(digests))).encode())
            self.workdir.mkdir(mode=_DIR_MODE)
        except BaseException:
            os.close(fd)
            remove_quietly(self.path)  # never hides the error that brought us here
            raise
        self._fd: int | None = fd

    def release(self) -> None:
        """Drop the work directory and the lease; safe to call twice; never raises.

        It runs after a pull's commit, and "raised" must keep meaning "not committed": what it
        cannot remove is stale once the lock is gone, and the next sweep takes it.
        """
        if self._fd is None:
            return
        shutil.rmtree(self.workdir, ignore_errors=True)
        remove_quietly(self.path)
        with contextlib.suppress(OSError):
            os.close(self._fd)
        self._fd = None


def sweep_temp(tmp: Path) -> frozenset[str]:
    """Delete what no live pull owns from ``tmp``; return the digests live pulls hold.

    Call it only under the store lock: index drafts are written under that lock, so any draft
    found here was abandoned by a writer that died.
    """
    live_ids: set[str] = set()
    held: set[str] = set()
    stale: list[Path] = []
    with os.scandir(tmp) as it:
        entries = [(e.name, Path(e.path)) for e in it]
    for name, path in entries:
        if not name.endswith(LEASE_SUFFIX):
            continue
        digests = _probe_lease(path)
        if digests is None:
            stale.append(path)
        else:
            live_ids.add(name[: -len(LEASE_SUFFIX)])
            held.update(digests)
    for name, path in entries:
        if name.endswith(LEASE_SUFFIX) or name in live_ids:
            continue
        stale.append(path)
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)  # anything else it raises is a failed collection
    return frozenset(held)


def _probe_lease(path: Path) -> list[str] | None:
    """The digests of a live lease, or None when its holder is gone (or it vanished)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            return _read_lease(fd, path)
        return None  # we got the lock: nobody holds it any more
    finally:
        os.close(fd)


def _read_lease(fd: int, path: Path) -> list[str]:
    chunks = []
    while chunk := os.read(fd, 65536):
        chunks.append(chunk)
    try:
        digests = loads_json(b"".join(chunks))
    except ValueError:  # not JSON, or nested too deeply (NestingError)
        digests = None
    if not isinstance(digests, list) or not all(isinstance(d, str) for d in digests):
        # A live lease is always complete (it is written under the store lock), so this is
        # foreign or damaged; refusing is safer than collecting blobs a pull may need.
        raise ImageStoreError(f"pull lease {path} is unreadable; refusing to collect garbage")
    return digests


class ProgressWatchdog:
    """Cancels ``token`` with ``error()`` once the files at ``paths`` stop growing.

    Progress means blob bytes arriving: the downloads write each chunk as it comes, so any
    change in the files' sizes (a file appearing, growing, or restarting after a retry) within
    ``timeout`` seconds keeps the pull alive, as containerd's ``image_pull_progress_timeout``
    does.  A pull stuck connecting, waiting for an answer or reading a stalled body makes no
    such change and is cancelled.  The sizes are looked at every ``min(1 s, timeout / 4)`` from
    a thread of its own, so the download path pays nothing; ``clock`` (monotonic seconds) says
    how long nothing has changed.  Use as a context manager around the downloads.
    """

    def __init__(
        self,
        token: CancelToken,
        paths: Sequence[Path],
        timeout: float,
        error: Callable[[], PullwardenError],
        clock: Callable[[], float],
    ) -> None:
        self._token = token
        self._paths = tuple(paths)
        self._timeout = timeout
        self._error = error
        self._clock = clock
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._watch, name="pullwarden-progress-watchdog", daemon=True
        )

    def __enter__(self) -> ProgressWatchdog:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._stop.set()
        self._thread.join()

    def _sizes(self) -> tuple[int, ...]:
        sizes = []
        for path in self._paths:
            try:
                sizes.append(os.stat(path).st_size)
            except OSError:
                sizes.append(-1)
        return tuple(sizes)

    def _watch(self) -> None:
        interval = min(1.0, self._timeout / 4)
        seen, since = self._sizes(), self._clock()
        while not self._stop.wait(interval):
            if self._token.cancelled:
                return
            sizes, now = self._sizes(), self._clock()
            if sizes != seen:
                seen, since = sizes, now
            elif now - since >= self._timeout:
                self._token.cancel(self._error())
                return
