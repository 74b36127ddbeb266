"""OCI and Docker image manifests: media types, descriptors, parsing, platform selection."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import field
from typing import Any

from pullwarden._nesting import loads_json
from pullwarden._values import frozen
from pullwarden.errors import NotFoundError, UnsupportedMediaTypeError
from pullwarden.runtime._base import Platform

__all__ = [
    "ACCEPT",
    "CONFIG_TYPES",
    "INDEX_TYPES",
    "LAYER_TYPES",
    "MANIFEST_TYPES",
    "MAX_MANIFEST_BYTES",
    "Descriptor",
    "Index",
    "Manifest",
    "digest_of",
    "is_digest",
    "media_type_of",
    "parse_index",
    "parse_manifest",
    "select_platform",
]

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
OCI_LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
DOCKER_FOREIGN_LAYER = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"

INDEX_TYPES = frozenset({OCI_INDEX, DOCKER_LIST})
MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
CONFIG_TYPES = frozenset({OCI_CONFIG, DOCKER_CONFIG})
LAYER_TYPES = frozenset(
    {OCI_LAYER_GZIP, OCI_LAYER, OCI_LAYER_ZSTD, DOCKER_LAYER, DOCKER_FOREIGN_LAYER}
)

# Every manifest GET/HEAD must list these explicitly (docker-registry 2.8 answers 404 for OCI
# content, or 400 for Docker schema2, when the Accept header does not name the type).
ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))

MAX_MANIFEST_BYTES = 4 * 1024 * 1024

_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")


def is_digest(value: str) -> bool:
    """True for a well-formed ``sha256:<64 hex>`` digest (the only algorithm pulled)."""
    return _DIGEST.match(value) is not None


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@frozen
class Descriptor:
    media_type: str
    digest: str
    size: int
    platform: Platform | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform is not None:
            p: dict[str, str] = {"architecture": self.platform.architecture, "os": self.platform.os}
            if self.platform.variant:
                p["variant"] = self.platform.variant
            out["platform"] = p
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out


@frozen
class Manifest:
    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]


@frozen
class Index:
    media_type: str
    manifests: tuple[Descriptor, ...]


def _load(data: bytes, what: str) -> Mapping[str, Any]:
    try:
        doc = loads_json(data)
    except ValueError:  # not JSON, or nested too deeply (NestingError): not JSON we take
        raise UnsupportedMediaTypeError(f"{what} is not valid JSON") from None
    if not isinstance(doc, dict):
        raise UnsupportedMediaTypeError(f"{what} is not a JSON object")
    return doc


def _descriptor(raw: object, what: str) -> Descriptor:
    if not isinstance(raw, dict):
        raise UnsupportedMediaTypeError(f"{what}: a descriptor is not an object")
    media_type, digest, size = raw.get("mediaType"), raw.get("digest"), raw.get("size")
    if not isinstance(media_type, str) or not isinstance(digest, str):
        raise UnsupportedMediaTypeError(f"{what}: a descriptor lacks mediaType or digest")
    if not is_digest(digest):
        raise UnsupportedMediaTypeError(f"{what}: unsupported digest {digest!r}")
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise UnsupportedMediaTypeError(f"{what}: descriptor {digest} has no valid size")
    plat = raw.get("platform")
    platform = None
    if isinstance(plat, dict):
        platform = Platform(
            str(plat.get("os", "")), str(plat.get("architecture", "")), str(plat.get("variant", ""))
        )
    annotations = raw.get("annotations")
    return Descriptor(
        media_type,
        digest,
        size,
        platform,
        {str(k): str(v) for k, v in annotations.items()} if isinstance(annotations, dict) else {},
    )


def media_type_of(data: bytes, header_type: str) -> str:
    """The manifest's media type: its own ``mediaType`` field, else the Content-Type header."""
    doc = _load(data, "manifest")
    declared = doc.get("mediaType")
    return declared if isinstance(declared, str) and declared else header_type.split(";")[0]


def parse_manifest(data: bytes, media_type: str) -> Manifest:
    if media_type not in MANIFEST_TYPES:
        raise UnsupportedMediaTypeError(f"unsupported manifest media type {media_type!r}")
    doc = _load(data, "manifest")
    layers = doc.get("layers")
    if not isinstance(layers, list):
        raise UnsupportedMediaTypeError("manifest has no layers list")
    return Manifest(
        media_type,
        _descriptor(doc.get("config"), "manifest config"),
        tuple(_descriptor(layer, "manifest layer") for layer in layers),
    )


def parse_index(data: bytes, media_type: str) -> Index:
    if media_type not in INDEX_TYPES:
        raise UnsupportedMediaTypeError(f"unsupported index media type {media_type!r}")
    doc = _load(data, "index")
    manifests = doc.get("manifests")
    if not isinstance(manifests, list):
        raise UnsupportedMediaTypeError("index has no manifests list")
    return Index(media_type, tuple(_descriptor(m, "index entry") for m in manifests))


def select_platform(
    candidates: Sequence[Descriptor], want: Platform, where: str = ""
) -> Descriptor:
    """The index entry for ``want``: exact variant first, then an entry without a variant."""
    exact = [
        d
        for d in candidates
        if d.platform is not None
        and d.platform.os == want.os
        and d.platform.architecture == want.architecture
        and d.media_type in MANIFEST_TYPES
    ]
    for d in exact:
        if d.platform is not None and d.platform.variant == want.variant:
            return d
    if not want.variant:
        for d in exact:
            return d
    for d in exact:
        if d.platform is not None and not d.platform.variant:
            return d
    available = ", ".join(str(d.platform) for d in candidates if d.platform is not None)
    raise NotFoundError(
        f"{where}: no manifest for platform {want} (available: {available or 'none'})"
    )
