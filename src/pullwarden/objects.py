"""Kubernetes objects read from manifests (YAML or JSON, one or many documents, or a ``List``).

Only the fields the image pull path needs are kept.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from pullwarden.errors import ManifestError

__all__ = [
    "Container",
    "Pod",
    "Secret",
    "ServiceAccount",
    "iter_documents",
    "load_secrets",
    "secret_from_manifest",
]


@dataclass(frozen=True, slots=True)
class Container:
    """One container of a pod spec; ``image_pull_policy`` is already defaulted (§1.1)."""

    name: str
    image: str
    image_pull_policy: str  # "Always" | "IfNotPresent" | "Never"


@dataclass(frozen=True, slots=True)
class Pod:
    """What the image pull path needs of a Pod."""

    uid: str
    namespace: str
    name: str
    containers: tuple[Container, ...] = ()
    init_containers: tuple[Container, ...] = ()
    image_pull_secrets: tuple[str, ...] = ()  # Secret names in the pod's namespace, in order
    service_account_name: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    uid: str
    namespace: str
    name: str
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Secret:
    """A Secret's coordinates, type and decoded data (the values never appear in its repr)."""

    uid: str
    namespace: str
    name: str
    type: str
    data: Mapping[str, bytes] = field(default_factory=dict, repr=False)


def iter_documents(text: str, source: str) -> Iterator[Mapping[str, Any]]:
    """Every object in a manifest: YAML streams, JSON, and the items of ``kind: List``."""
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as err:
        raise ManifestError(f"{source}: not valid YAML or JSON: {err}") from None
    for doc in docs:
        if doc is None:
            continue
        if not isinstance(doc, Mapping):
            raise ManifestError(f"{source}: expected an object, got {type(doc).__name__}")
        if str(doc.get("kind", "")).endswith("List") and isinstance(doc.get("items"), list):
            for item in doc["items"]:
                if not isinstance(item, Mapping):
                    raise ManifestError(f"{source}: a List item is not an object")
                yield item
        else:
            yield doc


def secret_from_manifest(doc: Mapping[str, Any], source: str = "manifest") -> Secret:
    """A :class:`Secret` from its manifest; ``data`` is base64, ``stringData`` wins per key."""
    if doc.get("kind") != "Secret":
        raise ManifestError(f"{source}: kind {doc.get('kind')!r} is not a Secret")
    meta = doc.get("metadata") or {}
    if not isinstance(meta, Mapping) or not meta.get("name"):
        raise ManifestError(f"{source}: the Secret has no metadata.name")
    name = str(meta["name"])
    namespace = str(meta.get("namespace") or "default")
    data: dict[str, bytes] = {}
    raw = doc.get("data") or {}
    if not isinstance(raw, Mapping):
        raise ManifestError(f"{source}: Secret {namespace}/{name}: data is not a map")
    for key, value in raw.items():
        try:
            data[str(key)] = base64.b64decode(str(value or ""), validate=True)
        except (binascii.Error, ValueError):
            raise ManifestError(
                f"{source}: Secret {namespace}/{name}: data[{key!r}] is not valid base64"
            ) from None
    strings = doc.get("stringData") or {}
    if not isinstance(strings, Mapping):
        raise ManifestError(f"{source}: Secret {namespace}/{name}: stringData is not a map")
    for key, value in strings.items():
        data[str(key)] = str(value).encode()
    return Secret(
        uid=str(meta.get("uid") or ""),
        namespace=namespace,
        name=name,
        type=str(doc.get("type") or "Opaque"),
        data=data,
    )


def load_secrets(path: Path) -> list[Secret]:
    """Every Secret in a manifest file (other kinds are skipped)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ManifestError(f"{path}: cannot read: {err}") from None
    if path.suffix == ".json":
        try:
            json.loads(text)  # a precise message for broken JSON; YAML would accept less clearly
        except json.JSONDecodeError as err:
            raise ManifestError(f"{path}: not valid JSON: {err}") from None
    return [
        secret_from_manifest(doc, str(path))
        for doc in iter_documents(text, str(path))
        if doc.get("kind") == "Secret"
    ]
