"""STAND-IN for unit tests of the image store: serves images from memory, no HTTP at all.

:class:`StubRegistry` implements only the three methods :class:`LocalImageService` calls on a
:class:`~pullwarden.runtime._registry.RegistryClient` (``head_manifest``, ``get_manifest``,
``fetch_blobs``) with the same contract: typed errors, verified content, no destination file left
behind on error. It is not a model of a registry and says nothing about the real client, which is
tested against the real ``docker-registry`` elsewhere.

Knobs: a per-repository allow list (anonymous or a wrong password → unauthorized, other users
→ denied), ``unavailable``, a ``head_without_digest`` switch, blobs that fail half-way (optionally
leaving the partial file, as a broken client would), a hook run before each blob, a chunked slow
write for crash tests, and moving a tag. A ``cancel`` token is honoured before each request and
between blob chunks. Counters: manifest HEADs and GETs, blob requests and
blob bytes served.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import tarfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pullwarden._cancel import CancelToken
from pullwarden.errors import (
    DeniedError,
    NotFoundError,
    RegistryError,
    RegistryUnavailableError,
    UnauthorizedError,
)
from pullwarden.reference import parse_normalized
from pullwarden.runtime._base import AuthConfig, Platform, ProgressCallback, PullProgress
from pullwarden.runtime._oci import (
    INDEX_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    digest_of,
    parse_index,
    parse_manifest,
    select_platform,
)
from pullwarden.runtime._registry import ResolvedImage

AMD64 = Platform("linux", "amd64")
ARM64 = Platform("linux", "arm64")


def gzip_tar(files: Mapping[str, bytes]) -> bytes:
    """A reproducible gzip'd tar of ``{path: content}`` (mtime 0, root-owned)."""
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(files):
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(files[name]), 0o644, 0
            tar.addfile(info, io.BytesIO(files[name]))
    return gzip.compress(raw.getvalue(), compresslevel=1, mtime=0)


def random_layer(rng: random.Random, size: int) -> bytes:
    """A gzip'd tar holding ``size`` incompressible bytes drawn from ``rng``."""
    return gzip_tar({f"data/{rng.getrandbits(64):016x}.bin": rng.randbytes(size)})


def _encode(doc: Mapping[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


@dataclass(frozen=True)
class StubImage:
    """One single-platform image the stub serves."""

    manifest: bytes
    manifest_digest: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    platform: Platform

    @property
    def id(self) -> str:
        return self.config.digest

    @property
    def size(self) -> int:
        """Manifest + config + layers: what the store reports for it."""
        unique = {d.digest: d.size for d in (self.config, *self.layers)}
        return len(self.manifest) + sum(unique.values())

    def descriptor(self) -> Descriptor:
        return Descriptor(OCI_MANIFEST, self.manifest_digest, len(self.manifest), self.platform)


@dataclass
class StubRegistry:
    """In-memory images keyed by normalised repository name (``127.0.0.1:5000/ns/hello``)."""

    chunk_size: int = 64 * 1024
    chunk_delay: float = 0.0  # seconds slept after each chunk written
    default_platform: Platform = AMD64
    acl: dict[str, set[str]] = field(default_factory=dict)  # repo → allowed usernames
    passwords: dict[str, str] = field(default_factory=dict)  # username → password
    head_without_digest: bool = False
    fail_blobs: set[str] = field(default_factory=set)  # digests that fail half-way
    unavailable: bool = False
    keep_partial: bool = False  # misbehave: leave a failed blob's file behind
    before_blob: Callable[[Descriptor], None] | None = None  # called before each blob is written

    heads: int = 0
    gets: int = 0
    blob_requests: int = 0
    blob_bytes: int = 0

    def __post_init__(self) -> None:
        self._blobs: dict[str, bytes] = {}
        self._manifests: dict[str, dict[str, tuple[bytes, str]]] = {}  # repo → digest → body
        self._tags: dict[str, dict[str, str]] = {}  # repo → tag → digest
        self._lock = threading.Lock()

    # --- content ---------------------------------------------------------------------------

    def add_image(
        self,
        ref: str | None,
        layers: Sequence[bytes],
        *,
        platform: Platform = AMD64,
        label: str = "",
        repository: str = "",
    ) -> StubImage:
        """Store an OCI image built from gzip'd ``layers``; tag it when ``ref`` has a tag."""
        diff_ids = [digest_of(gzip.decompress(layer)) for layer in layers]
        config = _encode(
            {
                "architecture": platform.architecture,
                "os": platform.os,
                **({"variant": platform.variant} if platform.variant else {}),
                "config": {"Labels": {"stub": label}} if label else {},
                "rootfs": {"type": "layers", "diff_ids": diff_ids},
            }
        )
        config_desc = self._put_blob(config, OCI_CONFIG)
        layer_descs = tuple(self._put_blob(layer, OCI_LAYER_GZIP) for layer in layers)
        manifest = _encode(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config_desc.to_json(),
                "layers": [d.to_json() for d in layer_descs],
            }
        )
        image = StubImage(manifest, digest_of(manifest), config_desc, layer_descs, platform)
        repo = repository or (parse_normalized(ref).name if ref else "")
        self._put_manifest(repo, manifest, OCI_MANIFEST)
        if ref is not None:
            self._tag_from_ref(ref, image.manifest_digest)
        return image

    def add_index(self, ref: str, images: Sequence[StubImage]) -> str:
        """Store an OCI index over ``images`` (already in the repository); returns its digest."""
        index = _encode(
            {
                "schemaVersion": 2,
                "mediaType": OCI_INDEX,
                "manifests": [image.descriptor().to_json() for image in images],
            }
        )
        self._put_manifest(parse_normalized(ref).name, index, OCI_INDEX)
        digest = digest_of(index)
        self._tag_from_ref(ref, digest)
        return digest

    def blob(self, digest: str) -> bytes:
        return self._blobs[digest]

    def move_tag(self, ref: str, digest: str) -> None:
        """Point ``ref``'s tag at another manifest of the same repository."""
        self._tag_from_ref(ref, digest)

    def reset_counters(self) -> None:
        with self._lock:
            self.heads = self.gets = self.blob_requests = self.blob_bytes = 0

    # --- the RegistryClient surface the store uses -------------------------------------------

    def head_manifest(
        self, ref: str, auth: AuthConfig | None = None, *, cancel: CancelToken | None = None
    ) -> str | None:
        if cancel is not None:
            cancel.raise_if_cancelled()
        with self._lock:
            self.heads += 1
        repo, reference = self._check(ref, auth)
        digest = self._resolve(repo, reference)
        return None if self.head_without_digest else digest

    def get_manifest(
        self,
        ref: str,
        auth: AuthConfig | None = None,
        *,
        platform: Platform | None = None,
        cancel: CancelToken | None = None,
    ) -> ResolvedImage:
        if cancel is not None:
            cancel.raise_if_cancelled()
        with self._lock:
            self.gets += 1
        repo, reference = self._check(ref, auth)
        parsed = parse_normalized(ref)
        top_digest = self._resolve(repo, reference)
        body, media_type = self._manifests[repo][top_digest]
        index: bytes | None = None
        index_type = ""
        manifest_digest = top_digest
        if media_type in INDEX_TYPES:
            entries = parse_index(body, media_type).manifests
            chosen = select_platform(entries, platform or self.default_platform, ref)
            index, index_type = body, media_type
            manifest_digest = chosen.digest
            body, media_type = self._manifests[repo][manifest_digest]
        manifest = parse_manifest(body, media_type)
        return ResolvedImage(
            registry=parsed.domain,
            repository=parsed.path,
            name=repo,
            tag="" if parsed.digest else parsed.tag,
            digest=top_digest,
            manifest_digest=manifest_digest,
            manifest=body,
            manifest_media_type=media_type,
            config=manifest.config,
            layers=manifest.layers,
            index=index,
            index_media_type=index_type,
        )

    def fetch_blobs(
        self,
        resolved: ResolvedImage,
        items: Sequence[tuple[Descriptor, Path, str]],
        auth: AuthConfig | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        self._check(resolved.name, auth)
        for desc, dest, kind in items:
            if self.before_blob is not None:
                self.before_blob(desc)
            try:
                self._write_blob(resolved, desc, dest, kind, on_progress, cancel)
            except BaseException:
                if not self.keep_partial:
                    dest.unlink(missing_ok=True)
                raise

    # --- internals -------------------------------------------------------------------------

    def _put_blob(self, data: bytes, media_type: str) -> Descriptor:
        digest = digest_of(data)
        self._blobs[digest] = data
        return Descriptor(media_type, digest, len(data))

    def _put_manifest(self, repo: str, body: bytes, media_type: str) -> None:
        self._manifests.setdefault(repo, {})[digest_of(body)] = (body, media_type)

    def _tag_from_ref(self, ref: str, digest: str) -> None:
        parsed = parse_normalized(ref)
        if parsed.tag:
            self._tags.setdefault(parsed.name, {})[parsed.tag] = digest

    def _check(self, ref: str, auth: AuthConfig | None) -> tuple[str, str]:
        """Apply the knobs for one request; returns (repository name, tag or digest)."""
        parsed = parse_normalized(ref)
        where = {"registry": parsed.domain, "repository": parsed.path, "reference": str(parsed)}
        if self.unavailable:
            raise RegistryUnavailableError(f"{parsed.domain}: connection refused (stub)", **where)
        allowed = self.acl.get(parsed.name)
        if allowed is not None:
            user = auth.username if auth is not None else ""
            if not user or self.passwords.get(user) != (auth.password if auth else None):
                raise UnauthorizedError(f"pulling {parsed}: 401 Unauthorized (stub)", **where)
            if user not in allowed:
                raise DeniedError(f"pulling {parsed}: access denied (stub)", **where)
        return parsed.name, parsed.digest or parsed.tag or "latest"

    def _resolve(self, repo: str, reference: str) -> str:
        if reference.startswith("sha256:"):
            digest = reference
        else:
            digest = self._tags.get(repo, {}).get(reference, "")
        if digest not in self._manifests.get(repo, {}):
            raise NotFoundError(f"{repo}:{reference}: not found (stub)", repository=repo)
        return digest

    def _write_blob(
        self,
        resolved: ResolvedImage,
        desc: Descriptor,
        dest: Path,
        kind: str,
        on_progress: ProgressCallback | None,
        cancel: CancelToken | None,
    ) -> None:
        data = self._blobs.get(desc.digest)
        if data is None:
            raise NotFoundError(f"blob {desc.digest} unknown (stub)", repository=resolved.name)
        with self._lock:
            self.blob_requests += 1
        cut = len(data) // 2 if desc.digest in self.fail_blobs else len(data)
        hasher = hashlib.sha256()
        with open(dest, "wb") as f:
            for start in range(0, cut, self.chunk_size) if cut else ():
                if cancel is not None:
                    cancel.raise_if_cancelled()
                chunk = data[start : min(start + self.chunk_size, cut)]
                f.write(chunk)
                hasher.update(chunk)
                with self._lock:
                    self.blob_bytes += len(chunk)
                if on_progress is not None:
                    on_progress(PullProgress(desc.digest, kind, start + len(chunk), desc.size))
                if self.chunk_delay:
                    time.sleep(self.chunk_delay)
        if cut < len(data):
            raise RegistryUnavailableError(
                f"blob {desc.digest}: connection reset half-way (stub)", repository=resolved.name
            )
        if "sha256:" + hasher.hexdigest() != desc.digest:  # pragma: no cover - stub invariant
            raise RegistryError(f"stub served wrong bytes for {desc.digest}")
        if on_progress is not None and not data:
            on_progress(PullProgress(desc.digest, kind, 0, 0))
