"""Where the development registry keeps content: in memory, or in a directory.

Both keep the same model as a distribution registry:

* blobs, content-addressed by sha256 digest, shared by all repositories (manifests are blobs
  too);
* per repository: the blobs linked into it (a blob is served from a repository only when it was
  uploaded, mounted or imported there, so per-repository rules cannot be bypassed through
  another repository's name), the manifests it holds (digest → media type) and its tags
  (tag → digest).

:class:`DirectoryStorage` lays this out under its root as::

    blobs/sha256/<hex>                              blob content
    repositories/<name>/_layers/<hex>               empty file: blob linked into <name>
    repositories/<name>/_manifests/<hex>            the manifest's media type
    repositories/<name>/_tags/<tag>                 the tag's digest
    _uploads/<uuid>                                 upload sessions in progress

Every file is written to a temporary name and renamed into place, so a stopped or killed
server leaves complete files only, and a new server over the same directory serves the same
content.  One server per directory at a time.

Uploads are :class:`Upload` objects that hash as they receive data; the caller checks the
digest and then commits or discards them.
"""

from __future__ import annotations

import hashlib
import io
import os
import threading
import uuid
from abc import ABC, abstractmethod
from pathlib import Path
from typing import BinaryIO

from pullwarden._files import write_atomically

__all__ = ["DirectoryStorage", "MemoryStorage", "Storage", "Upload"]


def _hex(digest: str) -> str:
    algorithm, _, hexpart = digest.partition(":")
    if algorithm != "sha256" or len(hexpart) != 64:
        raise ValueError(f"not a sha256 digest: {digest!r}")
    return hexpart


class Upload(ABC):
    """An upload session's data so far, hashed as it arrives; ``repository`` owns it."""

    def __init__(self, repository: str) -> None:
        self.id = uuid.uuid4().hex
        self.repository = repository
        self.size = 0
        self.lock = threading.Lock()  # one request at a time per session
        self._hash = hashlib.sha256()

    def write(self, data: bytes) -> None:
        self._write(data)
        self._hash.update(data)
        self.size += len(data)

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    @abstractmethod
    def _write(self, data: bytes) -> None: ...

    @abstractmethod
    def discard(self) -> None:
        """Throw the data away (a cancelled or failed upload)."""


class Storage(ABC):
    """The content of a registry; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # -- blobs --

    @abstractmethod
    def blob_size(self, digest: str) -> int | None:
        """The size of blob ``digest``, or None when it is not stored."""

    @abstractmethod
    def open_blob(self, digest: str) -> BinaryIO:
        """A readable file object over blob ``digest`` (KeyError when not stored)."""

    def read_blob(self, digest: str) -> bytes:
        with self.open_blob(digest) as handle:
            return handle.read()

    @abstractmethod
    def put_blob(self, data: bytes) -> str:
        """Store ``data``; returns its digest."""

    @abstractmethod
    def begin_upload(self, repository: str) -> Upload: ...

    @abstractmethod
    def commit_upload(self, upload: Upload) -> str:
        """Store the upload's data as the blob of its digest; returns the digest."""

    # -- repositories --

    @abstractmethod
    def link_blob(self, repository: str, digest: str) -> None: ...

    @abstractmethod
    def blob_linked(self, repository: str, digest: str) -> bool: ...

    @abstractmethod
    def add_manifest(self, repository: str, digest: str, media_type: str) -> None:
        """Record that ``repository`` holds manifest ``digest`` (already stored as a blob)."""

    @abstractmethod
    def manifest_type(self, repository: str, digest: str) -> str | None:
        """The media type of manifest ``digest`` in ``repository``; None when not held."""

    @abstractmethod
    def set_tag(self, repository: str, tag: str, digest: str) -> None: ...

    @abstractmethod
    def resolve_tag(self, repository: str, tag: str) -> str | None: ...

    @abstractmethod
    def tags(self, repository: str) -> list[str] | None:
        """The repository's tags, sorted; None when the repository does not exist."""

    @abstractmethod
    def repositories(self) -> list[str]:
        """Every repository name, sorted."""


# --- memory --------------------------------------------------------------------------------


class _MemoryUpload(Upload):
    def __init__(self, repository: str) -> None:
        super().__init__(repository)
        self.buffer = bytearray()

    def _write(self, data: bytes) -> None:
        self.buffer += data

    def discard(self) -> None:
        self.buffer = bytearray()


class _Repo:
    def __init__(self) -> None:
        self.layers: set[str] = set()
        self.manifests: dict[str, str] = {}
        self.tags: dict[str, str] = {}


class MemoryStorage(Storage):
    """Everything in dictionaries; gone when the process ends."""

    def __init__(self) -> None:
        super().__init__()
        self._blobs: dict[str, bytes] = {}
        self._repos: dict[str, _Repo] = {}

    def blob_size(self, digest: str) -> int | None:
        with self._lock:
            data = self._blobs.get(digest)
        return None if data is None else len(data)

    def open_blob(self, digest: str) -> BinaryIO:
        with self._lock:
            return io.BytesIO(self._blobs[digest])

    def put_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        with self._lock:
            self._blobs.setdefault(digest, bytes(data))
        return digest

    def begin_upload(self, repository: str) -> Upload:
        return _MemoryUpload(repository)

    def commit_upload(self, upload: Upload) -> str:
        assert isinstance(upload, _MemoryUpload)
        digest = upload.digest
        with self._lock:
            self._blobs.setdefault(digest, bytes(upload.buffer))
        upload.discard()
        return digest

    def _repo(self, name: str) -> _Repo:
        return self._repos.setdefault(name, _Repo())

    def link_blob(self, repository: str, digest: str) -> None:
        with self._lock:
            self._repo(repository).layers.add(digest)

    def blob_linked(self, repository: str, digest: str) -> bool:
        with self._lock:
            repo = self._repos.get(repository)
            return repo is not None and digest in repo.layers and digest in self._blobs

    def add_manifest(self, repository: str, digest: str, media_type: str) -> None:
        with self._lock:
            self._repo(repository).manifests[digest] = media_type

    def manifest_type(self, repository: str, digest: str) -> str | None:
        with self._lock:
            repo = self._repos.get(repository)
            return None if repo is None else repo.manifests.get(digest)

    def set_tag(self, repository: str, tag: str, digest: str) -> None:
        with self._lock:
            self._repo(repository).tags[tag] = digest

    def resolve_tag(self, repository: str, tag: str) -> str | None:
        with self._lock:
            repo = self._repos.get(repository)
            return None if repo is None else repo.tags.get(tag)

    def tags(self, repository: str) -> list[str] | None:
        with self._lock:
            repo = self._repos.get(repository)
            return None if repo is None else sorted(repo.tags)

    def repositories(self) -> list[str]:
        with self._lock:
            return sorted(self._repos)


# --- directory -----------------------------------------------------------------------------


class _FileUpload(Upload):
    def __init__(self, repository: str, directory: Path) -> None:
        super().__init__(repository)
        self.path = directory / self.id
        self._file: BinaryIO | None = open(self.path, "wb")  # noqa: SIM115 - closed on commit

    def _write(self, data: bytes) -> None:
        if self._file is None:
            raise ValueError("upload already finished")
        self._file.write(data)

    def finish(self) -> Path:
        if self._file is not None:
            self._file.close()
            self._file = None
        return self.path

    def discard(self) -> None:
        self.finish()
        self.path.unlink(missing_ok=True)


class DirectoryStorage(Storage):
    """Content under ``root`` (created if missing); survives a restart of the server."""

    def __init__(self, root: Path) -> None:
        super().__init__()
        self.root = Path(root)
        self._blob_dir = self.root / "blobs" / "sha256"
        self._repo_dir = self.root / "repositories"
        self._upload_dir = self.root / "_uploads"
        for directory in (self._blob_dir, self._repo_dir, self._upload_dir):
            directory.mkdir(parents=True, exist_ok=True)
        for stale in self._upload_dir.iterdir():  # sessions of an earlier run
            stale.unlink(missing_ok=True)

    def _blob_path(self, digest: str) -> Path:
        return self._blob_dir / _hex(digest)

    def _repo_path(self, repository: str) -> Path:
        # Names were validated against the distribution grammar: no "..", no leading "/".
        return self._repo_dir.joinpath(*repository.split("/"))

    def blob_size(self, digest: str) -> int | None:
        try:
            return self._blob_path(digest).stat().st_size
        except (OSError, ValueError):
            return None

    def open_blob(self, digest: str) -> BinaryIO:
        try:
            return open(self._blob_path(digest), "rb")
        except FileNotFoundError:
            raise KeyError(digest) from None

    def put_blob(self, data: bytes) -> str:
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        path = self._blob_path(digest)
        with self._lock:
            if not path.exists():
                write_atomically(path, data)
        return digest

    def begin_upload(self, repository: str) -> Upload:
        return _FileUpload(repository, self._upload_dir)

    def commit_upload(self, upload: Upload) -> str:
        assert isinstance(upload, _FileUpload)
        digest = upload.digest
        source = upload.finish()
        with self._lock:
            if self._blob_path(digest).exists():
                source.unlink(missing_ok=True)
            else:
                os.replace(source, self._blob_path(digest))
        return digest

    def link_blob(self, repository: str, digest: str) -> None:
        path = self._repo_path(repository) / "_layers" / _hex(digest)
        with self._lock:
            if not path.exists():
                write_atomically(path, b"")

    def blob_linked(self, repository: str, digest: str) -> bool:
        try:
            link = self._repo_path(repository) / "_layers" / _hex(digest)
        except ValueError:
            return False
        return link.exists() and self._blob_path(digest).exists()

    def add_manifest(self, repository: str, digest: str, media_type: str) -> None:
        with self._lock:
            write_atomically(
                self._repo_path(repository) / "_manifests" / _hex(digest), media_type.encode()
            )

    def manifest_type(self, repository: str, digest: str) -> str | None:
        try:
            path = self._repo_path(repository) / "_manifests" / _hex(digest)
            return path.read_text() or None
        except (OSError, ValueError):
            return None

    def set_tag(self, repository: str, tag: str, digest: str) -> None:
        with self._lock:
            write_atomically(self._repo_path(repository) / "_tags" / tag, digest.encode())

    def resolve_tag(self, repository: str, tag: str) -> str | None:
        try:
            return (self._repo_path(repository) / "_tags" / tag).read_text() or None
        except OSError:
            return None

    def tags(self, repository: str) -> list[str] | None:
        repo = self._repo_path(repository)
        if not (repo / "_manifests").is_dir() and not (repo / "_layers").is_dir():
            return None
        tag_dir = repo / "_tags"
        if not tag_dir.is_dir():
            return []
        return sorted(p.name for p in tag_dir.iterdir() if not p.name.startswith("."))

    def repositories(self) -> list[str]:
        found: list[str] = []
        for marker in ("_manifests", "_layers"):
            for path in self._repo_dir.rglob(marker):
                found.append(path.parent.relative_to(self._repo_dir).as_posix())
        return sorted(set(found))
