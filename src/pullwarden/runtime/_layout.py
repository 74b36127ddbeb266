"""OCI image layouts on disk: build small deterministic images, read them back, push them.

The tests, the benchmark and the demo need real images without a container engine. This module
writes them as an OCI image layout (``oci-layout``, ``index.json``, ``blobs/sha256/<hex>``) that
``skopeo copy oci:DIR:REF`` and :func:`push_layout` can send to a registry.

Every byte is a function of the inputs: tar entries are sorted PAX entries owned by root with
mtime 0, and gzip headers carry mtime 0. The same call therefore yields the same digests on every
machine, so tests can precompute what a registry must answer.
"""

from __future__ import annotations

import gzip
import io
import json
import random
import tarfile
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from pullwarden._files import write_atomically
from pullwarden._values import frozen
from pullwarden.runtime._base import AuthConfig, Platform
from pullwarden.runtime._oci import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    INDEX_TYPES,
    MANIFEST_TYPES,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    Descriptor,
    digest_of,
    is_digest,
    parse_index,
    parse_manifest,
)

if TYPE_CHECKING:
    from pullwarden.runtime._registry import RegistryClient

__all__ = [
    "LINUX_AMD64",
    "REF_NAME_ANNOTATION",
    "BuiltImage",
    "build_image",
    "build_index",
    "make_tar",
    "push_layout",
    "random_layer",
    "read_blob",
    "read_layout",
]

REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

_LAYOUT_FILE = "oci-layout"
_INDEX_FILE = "index.json"
_LAYOUT_VERSION = {"imageLayoutVersion": "1.0.0"}

LINUX_AMD64 = Platform("linux", "amd64")


@frozen
class BuiltImage:
    """What :func:`build_image` wrote: the digests a registry must later report for it.

    ``size`` is the manifest's own size (what a descriptor of it carries); ``total_size`` adds
    the config and the compressed layers, which is how containerd sizes an image.
    """

    manifest_digest: str
    config_digest: str
    layer_digests: tuple[str, ...]
    size: int
    media_type: str
    platform: Platform = LINUX_AMD64
    config_size: int = 0
    layer_sizes: tuple[int, ...] = ()

    @property
    def total_size(self) -> int:
        return self.size + self.config_size + sum(self.layer_sizes)

    def descriptor(self) -> Descriptor:
        """A descriptor of the manifest that names its platform (an index entry)."""
        return Descriptor(self.media_type, self.manifest_digest, self.size, self.platform)


def make_tar(files: Mapping[str, bytes]) -> bytes:
    """An uncompressed, reproducible tar of ``{path: content}`` with its parent directories."""
    directories: set[str] = set()
    for name in files:
        parts = _clean_member_name(name).parts
        for depth in range(1, len(parts)):
            directories.add("/".join(parts[:depth]))
    entries: dict[str, bytes | None] = dict.fromkeys(directories)
    for name, data in files.items():
        entries[str(_clean_member_name(name))] = data

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(entries):
            content = entries[name]
            info = tarfile.TarInfo(name)
            info.mtime = 0
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if content is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.mode = 0o644
                info.size = len(content)
                tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def random_layer(size: int, seed: int) -> bytes:
    """An uncompressed tar holding one file of ``size`` pseudo-random bytes drawn from ``seed``.

    Random content does not compress, so a gzip level of 1 (or 0) is the sensible choice when
    building benchmark images from it.
    """
    if size < 0:
        raise ValueError("size must not be negative")
    data = random.Random(seed).randbytes(size)
    return make_tar({f"random-{seed}.bin": data})


def build_image(
    layout_dir: Path,
    ref_name: str,
    layers: Sequence[bytes] | None = None,
    *,
    files: Mapping[str, bytes] | None = None,
    platform: Platform = LINUX_AMD64,
    docker: bool = False,
    cmd: Sequence[str] = ("/bin/true",),
    gzip_level: int = 6,
) -> BuiltImage:
    """Write an image into the layout at ``layout_dir`` and tag it ``ref_name`` in index.json.

    ``layers`` are uncompressed tars (bottom first); ``files`` is a shortcut for a single layer
    made from ``{path: content}``. With neither, the image gets one small layer naming
    ``ref_name``. ``docker`` selects the Docker schema2 media types instead of the OCI ones.
    An existing entry with the same ref name is replaced; blobs are shared between images.
    """
    if layers is not None and files is not None:
        raise ValueError("pass either layers or files, not both")
    if not 0 <= gzip_level <= 9:
        raise ValueError("gzip_level must be between 0 and 9")
    if files is not None:
        raw_layers: Sequence[bytes] = [make_tar(files)]
    elif layers is not None:
        raw_layers = layers
    else:
        raw_layers = [make_tar({"hello.txt": f"hello from {ref_name}\n".encode()})]

    manifest_type, config_type, layer_type = (
        (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER)
        if docker
        else (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP)
    )
    _init_layout(layout_dir)

    layer_descriptors: list[Descriptor] = []
    diff_ids: list[str] = []
    for raw in raw_layers:
        diff_ids.append(digest_of(raw))
        compressed = gzip.compress(raw, compresslevel=gzip_level, mtime=0)
        layer_descriptors.append(_write_blob(layout_dir, compressed, layer_type))

    config = _config_json(platform, cmd, diff_ids)
    config_descriptor = _write_blob(layout_dir, config, config_type)
    manifest = _encode(
        {
            "schemaVersion": 2,
            "mediaType": manifest_type,
            "config": config_descriptor.to_json(),
            "layers": [d.to_json() for d in layer_descriptors],
        }
    )
    written = _write_blob(layout_dir, manifest, manifest_type)
    manifest_descriptor = Descriptor(written.media_type, written.digest, written.size, platform)
    _tag(layout_dir, ref_name, manifest_descriptor)
    return BuiltImage(
        manifest_digest=manifest_descriptor.digest,
        config_digest=config_descriptor.digest,
        layer_digests=tuple(d.digest for d in layer_descriptors),
        size=manifest_descriptor.size,
        media_type=manifest_type,
        platform=platform,
        config_size=config_descriptor.size,
        layer_sizes=tuple(d.size for d in layer_descriptors),
    )


def build_index(
    layout_dir: Path,
    ref_name: str,
    images: Sequence[BuiltImage],
    *,
    docker: bool = False,
) -> str:
    """Write a multi-platform index over ``images`` (already in this layout) and tag it.

    Each entry carries its image's platform. ``docker`` writes a Docker manifest list instead of
    an OCI index. Returns the index digest.
    """
    if not images:
        raise ValueError("an index needs at least one image")
    media_type = DOCKER_LIST if docker else OCI_INDEX
    index = _encode(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [image.descriptor().to_json() for image in images],
        }
    )
    descriptor = _write_blob(layout_dir, index, media_type)
    _tag(layout_dir, ref_name, descriptor)
    return descriptor.digest


def read_layout(layout_dir: Path) -> dict[str, Descriptor]:
    """The layout's tagged entries: ref name → descriptor (entries without a name are skipped)."""
    data = (layout_dir / _INDEX_FILE).read_bytes()
    index = parse_index(data, OCI_INDEX)
    return {
        d.annotations[REF_NAME_ANNOTATION]: d
        for d in index.manifests
        if REF_NAME_ANNOTATION in d.annotations
    }


def read_blob(layout_dir: Path, digest: str) -> bytes:
    """The bytes of blob ``digest``, checked against the digest."""
    if not is_digest(digest):
        raise ValueError(f"not a sha256 digest: {digest!r}")
    data = _blob_path(layout_dir, digest).read_bytes()
    if digest_of(data) != digest:
        raise ValueError(f"blob {digest} in {layout_dir} is corrupt")
    return data


def push_layout(
    client: RegistryClient,
    layout_dir: Path,
    ref_name: str,
    target: str,
    auth: AuthConfig | None = None,
) -> str:
    """Push the image or index tagged ``ref_name`` to ``target`` (``host/repo:tag``).

    Blobs go first, then each child manifest by digest, then the top-level manifest or index
    under ``target``'s tag. ``client.push_blob`` (given each blob's file) and
    ``client.push_manifest`` receive the repository part of ``target`` (``host/repo``).
    Returns the top-level digest.
    """
    repository, tag = _split_target(target)
    layout = read_layout(layout_dir)
    try:
        top = layout[ref_name]
    except KeyError:
        raise KeyError(f"{layout_dir} has no image named {ref_name!r}") from None

    data = read_blob(layout_dir, top.digest)
    if top.media_type in INDEX_TYPES:
        for child in parse_index(data, top.media_type).manifests:
            child_data = read_blob(layout_dir, child.digest)
            _push_image_manifest(client, layout_dir, repository, child, child_data, auth)
        return client.push_manifest(repository, tag, data, top.media_type, auth)
    if top.media_type in MANIFEST_TYPES:
        _push_manifest_blobs(client, layout_dir, repository, top.media_type, data, auth)
        return client.push_manifest(repository, tag, data, top.media_type, auth)
    raise ValueError(f"{ref_name!r} in {layout_dir} has unsupported media type {top.media_type}")


def _push_image_manifest(
    client: RegistryClient,
    layout_dir: Path,
    repository: str,
    descriptor: Descriptor,
    data: bytes,
    auth: AuthConfig | None,
) -> None:
    if descriptor.media_type not in MANIFEST_TYPES:
        raise ValueError(f"nested index {descriptor.digest} is not supported")
    _push_manifest_blobs(client, layout_dir, repository, descriptor.media_type, data, auth)
    client.push_manifest(repository, descriptor.digest, data, descriptor.media_type, auth)


def _push_manifest_blobs(
    client: RegistryClient,
    layout_dir: Path,
    repository: str,
    media_type: str,
    data: bytes,
    auth: AuthConfig | None,
) -> None:
    manifest = parse_manifest(data, media_type)
    for blob in (manifest.config, *manifest.layers):
        # The file, not its bytes: the client streams and hashes it, the registry checks it.
        client.push_blob(repository, _blob_path(layout_dir, blob.digest), auth)


def _split_target(target: str) -> tuple[str, str]:
    """``host/repo:tag`` → (``host/repo``, ``tag``); the tag is required."""
    slash = target.rfind("/")
    colon = target.rfind(":")
    if "@" in target or colon <= slash or colon == len(target) - 1:
        raise ValueError(f"push target {target!r} must be HOST/REPOSITORY:TAG")
    return target[:colon], target[colon + 1 :]


def _clean_member_name(name: str) -> PurePosixPath:
    path = PurePosixPath(name.lstrip("/"))
    if not path.parts or any(part in ("", ".", "..") for part in path.parts):
        raise ValueError(f"invalid path in layer: {name!r}")
    return path


def _config_json(platform: Platform, cmd: Sequence[str], diff_ids: Sequence[str]) -> bytes:
    config: dict[str, Any] = {"architecture": platform.architecture, "os": platform.os}
    if platform.variant:
        config["variant"] = platform.variant
    config["config"] = {"Cmd": list(cmd)}
    config["rootfs"] = {"type": "layers", "diff_ids": list(diff_ids)}
    return _encode(config)


def _encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


def _init_layout(layout_dir: Path) -> None:
    (layout_dir / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    marker = layout_dir / _LAYOUT_FILE
    if not marker.exists():
        write_atomically(marker, _encode(_LAYOUT_VERSION))


def _blob_path(layout_dir: Path, digest: str) -> Path:
    algorithm, _, hex_digest = digest.partition(":")
    return layout_dir / "blobs" / algorithm / hex_digest


def _write_blob(layout_dir: Path, data: bytes, media_type: str) -> Descriptor:
    digest = digest_of(data)
    path = _blob_path(layout_dir, digest)
    if not path.exists():
        write_atomically(path, data)
    return Descriptor(media_type, digest, len(data))


def _tag(layout_dir: Path, ref_name: str, descriptor: Descriptor) -> None:
    """Point ``ref_name`` at ``descriptor`` in index.json, replacing an older entry."""
    _init_layout(layout_dir)
    index_path = layout_dir / _INDEX_FILE
    entries: list[dict[str, Any]] = []
    if index_path.exists():
        existing = json.loads(index_path.read_bytes())
        entries = [
            entry
            for entry in existing.get("manifests", [])
            if entry.get("annotations", {}).get(REF_NAME_ANNOTATION) != ref_name
        ]
    named = Descriptor(
        descriptor.media_type,
        descriptor.digest,
        descriptor.size,
        descriptor.platform,
        {REF_NAME_ANNOTATION: ref_name},
    )
    entries.append(named.to_json())
    document = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
    write_atomically(index_path, _encode(document))
