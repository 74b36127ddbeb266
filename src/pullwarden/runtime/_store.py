"""The embedded image store: the default :class:`~pullwarden.runtime._base.ImageService`.

Everything lives under one root directory::

    <root>/
      lock                 flock'd by every writer: commit of a pull, remove, gc, start-up sweep
      index.json           the image index (below); always replaced whole, by rename
      blobs/sha256/<hex>   content-addressed blobs: index, manifest, config and layer bytes,
                           shared between images and only ever created by rename
      tmp/                 drafts of index.json, and per running pull a lease file
                           ``<id>.lease`` plus a work directory ``<id>/`` for its downloads

**Commit protocol.** A pull first puts every blob it needs into ``blobs/`` (downloads go to its
work directory and are renamed into place), then writes the manifest (and index) bytes as blobs,
and only then rewrites ``index.json``. That rename is the single commit point: an image the index
names always has all its blobs, so a process killed at any instant leaves either the old index or
the new one. What a dead pull leaves behind is a stale lease and work directory (swept when a
store opens, and by :meth:`LocalImageService.gc`) and possibly blobs nothing references (removed
by ``gc``). While a pull runs, its lease keeps ``gc`` from deleting the blobs it is about to
register, whether the ``gc`` runs in this process or another one sharing the root.

**Index format** (``index.json``, version 1)::

    {
      "version": 1,
      "refs": {                                   # every name held, full and normalised:
        "127.0.0.1:5000/ns/hello:v1": "sha256:<top>",           # a tag, and the digest
        "127.0.0.1:5000/ns/hello@sha256:<top>": "sha256:<top>"  # it was pulled at
      },
      "targets": {                                # what a name resolves to, keyed by top digest
        "sha256:<top>": {
          "mediaType": "...", "size": 123,        # the top-level object: an index or a manifest
          "manifest": {"mediaType": "...", "digest": "sha256:...", "size": 456},
          "config": {"mediaType": "...", "digest": "sha256:<image id>", "size": 789},
          "layers": [{"mediaType": "...", "digest": "sha256:...", "size": 1011}],
          "platform": "linux/amd64",              # the entry chosen from an index; "" otherwise
          "pulledAt": "2025-01-02T03:04:05+00:00"
        }
      }
    }

The ``manifest`` equals the top level unless the top level is an index. A target no name points
to is dropped whenever the index is written.

**Images** are what containerd reports through CRI: names are grouped by the config digest
their target leads to, which is the image ``id``. ``repo_tags`` are the tag names,
``repo_digests`` the ``repo@<top-level digest>`` names (the index digest for a multi-platform
image). When a tag moves to another image, the old image keeps its ``repo@digest`` name and stays
listed. ``size`` counts, like containerd, every blob of the most recently pulled target: index
(if any), manifest, config and compressed layers.

**Cancellation and stalls.** :meth:`LocalImageService.pull_image` takes a ``cancel`` token. If
the pull returns, the image is committed; if it raises, nothing was. The token is checked inside
the store lock immediately before ``index.json`` is written, so a cancel that arrives before the
commit point always wins, and one that arrives after it is not observable as an error. While
blobs download, a :class:`~pullwarden.runtime._blobs.ProgressWatchdog` cancels the pull with a
:class:`~pullwarden.errors.RegistryUnavailableError` when no blob bytes arrive for
``progress_timeout`` seconds (containerd's ``image_pull_progress_timeout``, 5 minutes by
default).

**Re-verification.** Pulling a name the store already holds, with all its blobs present, costs a
single manifest ``HEAD``: when the registry answers with the digest we hold, the pull is done.
Registry errors from that ``HEAD`` propagate, so refused credentials fail the pull even though
every byte is local. A ``HEAD`` without a digest, or with another one, continues as a full
manifest ``GET`` that still downloads only the blobs that are missing.

Durability: ``index.json`` is fsynced before its rename; blobs are not (a power cut may leave a
short blob, which the size checks treat as missing and download again). One store root holds one
platform's view of a multi-platform image; sharing a root between platforms is not supported.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from pullwarden._cancel import CancelToken
from pullwarden._clock import Clock, SystemClock
from pullwarden._files import write_atomically
from pullwarden._gofmt import go_duration, seconds_to_ns
from pullwarden._nesting import NestingError, loads_json
from pullwarden._values import frozen
from pullwarden.errors import (
    DigestMismatchError,
    ImageStoreError,
    PullwardenError,
    RegistryUnavailableError,
)
from pullwarden.reference import parse_image_name
from pullwarden.runtime._base import (
    AuthConfig,
    FsUsage,
    Image,
    Platform,
    PodSandbox,
    ProgressCallback,
    PullProgress,
)
from pullwarden.runtime._blobs import BlobDir, Lease, ProgressWatchdog, sweep_temp
from pullwarden.runtime._oci import (
    Descriptor,
    digest_of,
    is_digest,
    parse_index,
    select_platform,
)

if TYPE_CHECKING:
    from pullwarden.runtime._registry import ResolvedImage

__all__ = ["INDEX_VERSION", "ContentSource", "LocalImageService"]

INDEX_VERSION = 1
_INDEX_FILE = "index.json"
_LOCK_FILE = "lock"
_TMP_DIR = "tmp"
_DIR_MODE = 0o700
_HEX_ID_LEN = 64
DEFAULT_PROGRESS_TIMEOUT = 300.0  # containerd's image_pull_progress_timeout (5m)

log = logging.getLogger("pullwarden.runtime._store")


class ContentSource(Protocol):
    """The part of :class:`~pullwarden.runtime._registry.RegistryClient` the store uses."""

    def head_manifest(
        self, ref: str, auth: AuthConfig | None = None, *, cancel: CancelToken | None = None
    ) -> str | None: ...

    def get_manifest(
        self,
        ref: str,
        auth: AuthConfig | None = None,
        *,
        platform: Platform | None = None,
        cancel: CancelToken | None = None,
    ) -> ResolvedImage: ...

    def fetch_blobs(
        self,
        resolved: ResolvedImage,
        items: Sequence[tuple[Descriptor, Path, str]],
        auth: AuthConfig | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        """Write each item's blob to its path as the bytes arrive (the progress watchdog
        watches those files); stop and raise ``cancel.error`` once ``cancel`` is cancelled."""
        ...


# --- the index ---------------------------------------------------------------------------------


@frozen
class _Target:
    """What a name resolves to: the top-level object and the image manifest it leads to."""

    digest: str
    media_type: str
    size: int
    manifest: Descriptor
    config: Descriptor
    layers: tuple[Descriptor, ...]
    platform: str = ""
    pulled_at: str = ""

    @property
    def is_index(self) -> bool:
        return self.manifest.digest != self.digest

    @property
    def blobs(self) -> tuple[Descriptor, ...]:
        """Every blob this target needs, top level first, each digest once."""
        top = (Descriptor(self.media_type, self.digest, self.size),) if self.is_index else ()
        seen: dict[str, Descriptor] = {}
        for d in (*top, self.manifest, self.config, *self.layers):
            seen.setdefault(d.digest, d)
        return tuple(seen.values())

    @property
    def total_size(self) -> int:
        return sum(d.size for d in self.blobs)


@frozen
class _State:
    """One version of the index: names → top-level digests → targets."""

    refs: Mapping[str, str]
    targets: Mapping[str, _Target]

    def target_of(self, name: str) -> _Target | None:
        digest = self.refs.get(name)
        return None if digest is None else self.targets[digest]

    def with_names(self, names: Sequence[str], target: _Target) -> _State:
        refs = dict(self.refs)
        for name in names:
            refs[name] = target.digest
        targets = dict(self.targets)
        targets[target.digest] = target
        return _State(refs, targets).pruned()

    def without_image(self, image_id: str) -> _State:
        refs = {n: d for n, d in self.refs.items() if self.targets[d].config.digest != image_id}
        return _State(refs, self.targets).pruned()

    def pruned(self) -> _State:
        live = set(self.refs.values())
        return _State(self.refs, {d: t for d, t in self.targets.items() if d in live})

    def live_digests(self) -> set[str]:
        return {b.digest for t in self.targets.values() for b in t.blobs}


_EMPTY = _State({}, {})


class _Corrupt(Exception):
    """Raised inside the decoder; turned into one ImageStoreError naming the file."""


def _encode_descriptor(d: Descriptor) -> dict[str, Any]:
    return {"mediaType": d.media_type, "digest": d.digest, "size": d.size}


def _encode_index(state: _State) -> bytes:
    targets = {
        digest: {
            "mediaType": t.media_type,
            "size": t.size,
            "manifest": _encode_descriptor(t.manifest),
            "config": _encode_descriptor(t.config),
            "layers": [_encode_descriptor(d) for d in t.layers],
            "platform": t.platform,
            "pulledAt": t.pulled_at,
        }
        for digest, t in state.targets.items()
    }
    doc = {"version": INDEX_VERSION, "refs": dict(state.refs), "targets": targets}
    return json.dumps(doc, sort_keys=True, indent=1).encode() + b"\n"


def _field(obj: Mapping[str, Any], key: str, kind: type, where: str) -> Any:
    value = obj.get(key)
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _Corrupt(f"{where}: {key!r} is missing or not a {kind.__name__}")
    return value


def _decode_descriptor(raw: object, where: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise _Corrupt(f"{where} is not an object")
    digest = _field(raw, "digest", str, where)
    if not is_digest(digest):
        raise _Corrupt(f"{where}: {digest!r} is not a sha256 digest")
    size = _field(raw, "size", int, where)
    if size < 0:
        raise _Corrupt(f"{where}: negative size")
    return Descriptor(_field(raw, "mediaType", str, where), digest, size)


def _decode_target(digest: str, raw: object) -> _Target:
    where = f"target {digest}"
    if not is_digest(digest):
        raise _Corrupt(f"{where}: not a sha256 digest")
    if not isinstance(raw, dict):
        raise _Corrupt(f"{where} is not an object")
    layers = _field(raw, "layers", list, where)
    target = _Target(
        digest=digest,
        media_type=_field(raw, "mediaType", str, where),
        size=_field(raw, "size", int, where),
        manifest=_decode_descriptor(raw.get("manifest"), f"{where} manifest"),
        config=_decode_descriptor(raw.get("config"), f"{where} config"),
        layers=tuple(_decode_descriptor(x, f"{where} layer") for x in layers),
        platform=str(raw.get("platform", "")),
        pulled_at=str(raw.get("pulledAt", "")),
    )
    if target.size < 0:
        raise _Corrupt(f"{where}: negative size")
    return target


def _decode_index(data: bytes) -> _State:
    try:
        doc = loads_json(data)
    except NestingError:
        raise _Corrupt("not valid JSON (nested too deeply)") from None
    except ValueError as err:  # UnicodeDecodeError included
        raise _Corrupt(f"not valid JSON ({err})") from None
    if not isinstance(doc, dict):
        raise _Corrupt("not a JSON object")
    version = doc.get("version")
    if version != INDEX_VERSION:
        if isinstance(version, int) and not isinstance(version, bool) and version > 1:
            raise _Corrupt(f"written by a newer pullwarden (index version {version})")
        raise _Corrupt(f"unknown index version {version!r}")
    raw_targets = _field(doc, "targets", dict, "index")
    raw_refs = _field(doc, "refs", dict, "index")
    targets = {str(d): _decode_target(str(d), t) for d, t in raw_targets.items()}
    refs: dict[str, str] = {}
    for name, digest in raw_refs.items():
        if not isinstance(digest, str) or digest not in targets:
            raise _Corrupt(f"name {name!r} points to unknown target {digest!r}")
        refs[str(name)] = digest
    return _State(refs, targets)


def _build_images(state: _State) -> dict[str, Image]:
    """Group names by image id (config digest), as CRI shows images."""
    tags: dict[str, list[str]] = {}
    digests: dict[str, list[str]] = {}
    newest: dict[str, _Target] = {}
    for name, top in state.refs.items():
        target = state.targets[top]
        image_id = target.config.digest
        (digests if "@" in name else tags).setdefault(image_id, []).append(name)
        tags.setdefault(image_id, [])
        digests.setdefault(image_id, [])
        best = newest.get(image_id)
        if best is None or (target.pulled_at, target.digest) > (best.pulled_at, best.digest):
            newest[image_id] = target
    return {
        image_id: Image(
            id=image_id,
            repo_tags=tuple(sorted(tags[image_id])),
            repo_digests=tuple(sorted(digests[image_id])),
            size=target.total_size,
        )
        for image_id, target in newest.items()
    }


@frozen
class _Snapshot:
    """A decoded index, the images derived from it, and the file identity it was read from."""

    stamp: tuple[int, int, int, int] | None
    state: _State
    images: Mapping[str, Image]


def _stamp(st: os.stat_result) -> tuple[int, int, int, int]:
    return (st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


# --- lookups -----------------------------------------------------------------------------------


@frozen
class _Wanted:
    """A parsed image argument: the stored name to look for, and what to ask the registry."""

    name: str  # "repo:tag" or "repo@digest" (the store's key)
    repository: str
    tag: str
    digest: str

    @property
    def remote(self) -> str:
        """The reference sent to the registry client (tag and digest when both were given)."""
        text = self.repository
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text


def _parse_wanted(image: str) -> _Wanted:
    repository, tag, digest = parse_image_name(image)
    name = f"{repository}@{digest}" if digest else f"{repository}:{tag}"
    return _Wanted(name, repository, tag, digest)


def _as_image_id(image: str) -> str | None:
    """``sha256:<hex>`` or bare ``<hex>`` (64 lowercase hex digits) → the id; else None."""
    candidate = image if image.startswith("sha256:") else "sha256:" + image
    if len(candidate) == len("sha256:") + _HEX_ID_LEN and is_digest(candidate):
        return candidate
    return None


# --- the service -------------------------------------------------------------------------------


class LocalImageService:
    """Images pulled into a directory: content-addressed blobs plus one atomic index.

    Thread-safe, and safe for several processes sharing ``root``: writers serialise on a
    ``flock`` and re-read the index inside it. See the module docstring for layout and format.
    ``progress_timeout`` (seconds; None or 0 turns it off) fails a pull whose blob downloads
    make no progress for that long.
    """

    @staticmethod
    def holds_images(root: Path) -> bool:
        """Whether a store at ``root`` holds an image, read without opening (so creating) it.

        An index that cannot be read or decoded counts as holding some: the answer stands in
        for what the store would list, and doubt must not make its images look absent.
        """
        try:
            data = (Path(root) / _INDEX_FILE).read_bytes()
        except FileNotFoundError:
            return False
        except OSError:
            return True
        try:
            return bool(_decode_index(data).refs)
        except _Corrupt:
            return True

    def __init__(
        self,
        root: Path,
        *,
        client: ContentSource | None = None,
        platform: Platform | None = None,
        clock: Clock | None = None,
        progress_timeout: float | None = DEFAULT_PROGRESS_TIMEOUT,
    ) -> None:
        self._root = Path(root)
        self._progress_timeout = progress_timeout if progress_timeout else None
        self._platform = platform
        self._clock: Clock = clock or SystemClock()
        self._index_path = self._root / _INDEX_FILE
        self._tmp = self._root / _TMP_DIR
        self._writer = threading.Lock()  # serialises this process's writers (with the flock)
        self._reader = threading.Lock()  # guards the cached snapshot
        self._snapshot_cache = _Snapshot(None, _EMPTY, {})
        with self._disk_errors("cannot open the store"):
            self._root.mkdir(parents=True, exist_ok=True, mode=_DIR_MODE)
            self._tmp.mkdir(exist_ok=True, mode=_DIR_MODE)
            self._blobs = BlobDir(self._root)
            self._lock_fd = os.open(
                self._root / _LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600
            )
        # Without a client the store makes its own when a pull first needs one: listing and
        # removing images never contact a registry, so they build no client (nor TLS context).
        self._given_client = client
        self._own_client: ContentSource | None = None
        self._client_lock = threading.Lock()
        self._closed = False
        try:
            with self._locked():
                sweep_temp(self._tmp)
                self._snapshot()
        except BaseException:
            self.close()
            raise

    @property
    def root(self) -> Path:
        return self._root

    @property
    def _client(self) -> ContentSource:
        """The client given, else the store's own, made on first use (closed by :meth:`close`)."""
        if self._given_client is not None:
            return self._given_client
        with self._client_lock:
            if self._closed:
                raise ImageStoreError(f"the image store at {self._root} is closed")
            if self._own_client is None:
                from pullwarden.runtime._registry import RegistryClient

                self._own_client = RegistryClient(platform=self._platform)
            return self._own_client

    # --- ImageService ----------------------------------------------------------------------

    def pull_image(
        self,
        image: str,
        auth: AuthConfig | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        cancel: CancelToken | None = None,
        sandbox: PodSandbox | None = None,  # the embedded store has no pods to tell
    ) -> str:
        """Pull ``image`` with ``auth``; returns the image id (the config digest).

        A name already held with all its blobs is re-verified with one manifest ``HEAD``;
        registry errors propagate unchanged (typed :class:`~pullwarden.errors.RegistryError`).
        Returning means committed, raising means nothing was committed; ``cancel`` stops the
        pull (see the module docstring).
        """
        if cancel is not None:
            cancel.raise_if_cancelled()
        wanted = _parse_wanted(image)
        held = self._snapshot().state.target_of(wanted.name)
        if held is not None and self._reverifiable(held):
            remote_digest = self._client.head_manifest(wanted.remote, auth, cancel=cancel)
            if remote_digest == held.digest:
                _report_cached(held, on_progress)
                return held.config.digest
        resolved = self._client.get_manifest(
            wanted.remote, auth, platform=self._platform, cancel=cancel
        )
        return self._register(wanted, resolved, auth, on_progress, cancel)

    def image_status(self, image: str) -> Image | None:
        """The image named by a tag (familiar or full), ``repo@digest``, id or bare hex id.

        None when no such image is held; InvalidReferenceError when ``image`` is none of these.
        """
        snapshot = self._snapshot()
        image_id = self._resolve_id(snapshot.state, image)
        return None if image_id is None else snapshot.images.get(image_id)

    def list_images(self) -> list[Image]:
        return sorted(self._snapshot().images.values(), key=lambda i: i.id)

    def remove_image(self, image: str) -> None:
        """Remove the image ``image`` names, with all its names, then collect garbage.

        An image the store does not hold is not an error (as with CRI ``RemoveImage``).
        """
        with self._locked():
            state = self._snapshot().state
            image_id = self._resolve_id(state, image)
            if image_id is None:
                return
            if any(t.config.digest == image_id for t in state.targets.values()):
                self._write_index(state.without_image(image_id))
            self._collect(self._snapshot().state)

    def fs_usage(self) -> FsUsage:
        """Bytes (apparent file sizes) and inodes (files and directories) under the root."""
        used = inodes = 0
        with self._disk_errors("cannot measure the store"):
            for entry in _walk(self._root):
                try:
                    st = entry.stat(follow_symlinks=False)
                except FileNotFoundError:  # a running pull renamed or dropped it meanwhile
                    continue
                inodes += 1
                if not entry.is_dir(follow_symlinks=False):
                    used += st.st_size
        return FsUsage(used_bytes=used, inodes_used=inodes, mountpoint=str(self._root))

    def gc(self) -> int:
        """Delete blobs no image needs and no running pull holds; returns the bytes freed."""
        with self._locked():
            return self._collect(self._snapshot().state)

    def close(self) -> None:
        """Release the lock file and, when the store made its own client, the client."""
        fd, self._lock_fd = getattr(self, "_lock_fd", -1), -1
        if fd >= 0:
            os.close(fd)
        lock = getattr(self, "_client_lock", None)
        if lock is None:
            return
        with lock:
            own, self._own_client = self._own_client, None
            self._closed = True
        closer: Callable[[], object] | None = getattr(own, "close", None)
        if closer is not None:
            closer()

    def __enter__(self) -> LocalImageService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- pulling ---------------------------------------------------------------------------

    def _reverifiable(self, held: _Target) -> bool:
        """All blobs present, and (for an index) the entry we hold is the one we would pick."""
        if not all(self._blobs.has(b.digest, b.size) for b in held.blobs):
            return False
        if not held.is_index:
            return True
        try:
            raw = self._blobs.path(held.digest).read_bytes()
            entry = select_platform(
                parse_index(raw, held.media_type).manifests, self._platform or Platform.host()
            )
        except (OSError, PullwardenError):
            return False
        return entry.digest == held.manifest.digest

    def _register(
        self,
        wanted: _Wanted,
        resolved: ResolvedImage,
        auth: AuthConfig | None,
        on_progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> str:
        target = self._target_of(resolved)
        if on_progress is not None:
            m = target.manifest
            on_progress(PullProgress(m.digest, "manifest", m.size, m.size))
        with self._locked(), self._disk_errors("cannot start the pull"):
            lease = Lease(self._tmp, (b.digest for b in target.blobs))
        try:
            self._fetch_missing(wanted, resolved, lease, auth, on_progress, cancel)
            with self._disk_errors(f"cannot store the manifest of {wanted.remote}"):
                self._blobs.put(resolved.manifest, resolved.manifest_digest, lease.workdir)
                if resolved.index is not None:
                    self._blobs.put(resolved.index, resolved.digest, lease.workdir)
            names = [f"{wanted.repository}@{resolved.digest}"]
            if wanted.tag and not wanted.digest:
                names.insert(0, wanted.name)
            with self._locked():
                missing = [b.digest for b in target.blobs if not self._blobs.has(b.digest, b.size)]
                if missing:
                    raise ImageStoreError(
                        f"image store {self._root}: blobs of {wanted.remote} vanished before "
                        f"the image was registered: {', '.join(missing)}"
                    )
                if cancel is not None:
                    cancel.raise_if_cancelled()  # the last moment a cancel can stop the commit
                self._write_index(self._snapshot().state.with_names(names, target))
        finally:
            lease.release()
        return target.config.digest

    def _target_of(self, resolved: ResolvedImage) -> _Target:
        """The index record for ``resolved``, after checking the bytes we are about to store."""
        where = {
            "registry": resolved.registry,
            "repository": resolved.repository,
            "reference": resolved.tag or resolved.digest,
        }
        if digest_of(resolved.manifest) != resolved.manifest_digest:
            raise DigestMismatchError(
                f"manifest of {resolved.name} does not match {resolved.manifest_digest}", **where
            )
        manifest = Descriptor(
            resolved.manifest_media_type, resolved.manifest_digest, len(resolved.manifest)
        )
        media_type, size, platform = manifest.media_type, manifest.size, ""
        if resolved.index is not None:
            if digest_of(resolved.index) != resolved.digest:
                raise DigestMismatchError(
                    f"index of {resolved.name} does not match {resolved.digest}", **where
                )
            media_type, size = resolved.index_media_type, len(resolved.index)
            platform = _platform_in_index(resolved.index, media_type, resolved.manifest_digest)
        elif resolved.digest != resolved.manifest_digest:
            raise DigestMismatchError(
                f"{resolved.name}: top-level digest {resolved.digest} is not the manifest's "
                f"{resolved.manifest_digest} and there is no index",
                **where,
            )
        return _Target(
            digest=resolved.digest,
            media_type=media_type,
            size=size,
            manifest=manifest,
            config=_plain(resolved.config),
            layers=tuple(_plain(d) for d in resolved.layers),
            platform=platform,
            pulled_at=self._clock.now().isoformat(),
        )

    def _fetch_missing(
        self,
        wanted: _Wanted,
        resolved: ResolvedImage,
        lease: Lease,
        auth: AuthConfig | None,
        on_progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> None:
        """Download the config and layers not yet present, then rename them into ``blobs/``."""
        items: list[tuple[Descriptor, Path, str]] = []
        seen: set[str] = set()
        blobs = [(resolved.config, "config")] + [(d, "layer") for d in resolved.layers]
        for descriptor, kind in blobs:
            if descriptor.digest in seen:
                continue
            seen.add(descriptor.digest)
            if self._blobs.has(descriptor.digest, descriptor.size):
                if on_progress is not None:
                    size = descriptor.size
                    on_progress(PullProgress(descriptor.digest, kind, size, size, cached=True))
            else:
                self._blobs.path(descriptor.digest)  # refuses a malformed digest early
                items.append((descriptor, lease.workdir / descriptor.digest[7:], kind))
        if not items:
            return
        # The downloads run under a child of the caller's token, which the watchdog cancels
        # (with its own error) when they stall; the caller's token is left alone.
        token = cancel.child() if cancel is not None else CancelToken()
        try:
            with self._disk_errors(f"cannot download blobs of {resolved.name}"):
                with self._watchdog(token, [path for _, path, _ in items], wanted, resolved):
                    self._client.fetch_blobs(
                        resolved, items, auth, on_progress=on_progress, cancel=token
                    )
                for descriptor, path, _ in items:
                    self._blobs.adopt(path, descriptor.digest, descriptor.size)
        finally:
            token.release()

    def _watchdog(
        self, token: CancelToken, paths: Sequence[Path], wanted: _Wanted, resolved: ResolvedImage
    ) -> ProgressWatchdog | nullcontext[None]:
        timeout = self._progress_timeout
        if timeout is None:
            return nullcontext()

        def stalled() -> PullwardenError:
            return RegistryUnavailableError(
                f"pulling {wanted.remote}: registry unavailable: no blob data arrived for "
                f"{go_duration(seconds_to_ns(timeout))} (image pull progress timeout)",
                registry=resolved.registry,
                repository=resolved.repository,
                reference=resolved.tag or resolved.digest,
            )

        return ProgressWatchdog(token, paths, timeout, stalled, self._clock.monotonic)

    # --- index I/O and locking ---------------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """Exclusive against this process's writers (thread lock) and other processes (flock)."""
        with self._writer:
            if self._lock_fd < 0:
                raise ImageStoreError(f"image store {self._root} is closed")
            with self._disk_errors("cannot lock the store"):
                fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def _snapshot(self) -> _Snapshot:
        """The current index, re-read only when ``index.json`` was replaced since last time."""
        with self._reader:
            cached = self._snapshot_cache
            try:
                fd = os.open(self._index_path, os.O_RDONLY | os.O_CLOEXEC)
            except FileNotFoundError:
                if cached.stamp is not None:
                    self._snapshot_cache = cached = _Snapshot(None, _EMPTY, {})
                return cached
            except OSError as err:
                self._fail("cannot read", err)
            try:
                stamp = _stamp(os.fstat(fd))
                if stamp == cached.stamp:
                    return cached
                with os.fdopen(fd, "rb", closefd=False) as f:
                    data = f.read()
            except OSError as err:
                self._fail("cannot read", err)
            finally:
                os.close(fd)
            try:
                state = _decode_index(data)
            except _Corrupt as err:
                raise ImageStoreError(
                    f"image store index {self._index_path} is corrupt: {err}; move it aside to "
                    "start with an empty store (its blobs are then garbage-collected)"
                ) from None
            self._snapshot_cache = cached = _Snapshot(stamp, state, _build_images(state))
            return cached

    def _write_index(self, state: _State) -> None:
        """Replace ``index.json`` (caller holds the lock); the commit point of every change.

        The rename is the commit: it either raises (nothing changed) or the change is made, and
        nothing after it raises, so that "raised" always means "not committed".  A failed
        directory fsync only means the rename may not survive a power cut; it is logged.
        """
        with self._disk_errors(f"cannot write {self._index_path}"):
            write_atomically(self._index_path, _encode_index(state), workdir=self._tmp, sync=True)
        try:
            _fsync_dir(self._root)
        except OSError as err:
            log.warning(
                "image store %s: index.json was replaced but the directory could not be synced "
                "(%s); the change may not survive a power failure",
                self._root,
                err.strerror or err,
            )
        try:
            self._snapshot()
        except ImageStoreError as err:  # the next read tries again, and reports it then
            log.warning("%s", err)

    def _collect(self, state: _State) -> int:
        """GC under the lock: sweep stale temp files, delete blobs nobody references."""
        with self._disk_errors("garbage collection failed"):
            keep = state.live_digests() | sweep_temp(self._tmp)
            freed = 0
            for digest, _ in list(self._blobs.entries()):
                if digest not in keep:
                    freed += self._blobs.remove(digest)
        return freed

    def _resolve_id(self, state: _State, image: str) -> str | None:
        image_id = _as_image_id(image)
        if image_id is not None:
            known = any(t.config.digest == image_id for t in state.targets.values())
            return image_id if known else None
        target = state.target_of(_parse_wanted(image).name)
        return None if target is None else target.config.digest

    @contextmanager
    def _disk_errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except OSError as err:
            self._fail(what, err)

    def _fail(self, what: str, err: OSError) -> NoReturn:
        detail = err.strerror or str(err)
        where = f" ({err.filename})" if err.filename else ""
        raise ImageStoreError(f"image store {self._root}: {what}: {detail}{where}") from err


def _plain(d: Descriptor) -> Descriptor:
    """A descriptor reduced to what the index records."""
    return Descriptor(d.media_type, d.digest, d.size)


def _platform_in_index(index: bytes, media_type: str, manifest_digest: str) -> str:
    try:
        entries = parse_index(index, media_type).manifests
    except PullwardenError:
        return ""
    for entry in entries:
        if entry.digest == manifest_digest and entry.platform is not None:
            return str(entry.platform)
    return ""


def _report_cached(target: _Target, on_progress: ProgressCallback | None) -> None:
    if on_progress is None:
        return
    seen: set[str] = set()
    for d, kind in [(target.config, "config")] + [(d, "layer") for d in target.layers]:
        if d.digest not in seen:
            seen.add(d.digest)
            on_progress(PullProgress(d.digest, kind, d.size, d.size, cached=True))


def _walk(top: Path) -> Iterator[os.DirEntry[str]]:
    with os.scandir(top) as it:
        entries = list(it)
    for entry in entries:
        yield entry
        if entry.is_dir(follow_symlinks=False):
            try:
                yield from _walk(Path(entry.path))
            except FileNotFoundError:  # a pull's work directory went away meanwhile
                continue


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
