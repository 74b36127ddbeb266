"""Kubernetes objects read from manifests (YAML or JSON, one or many documents, or a ``List``).

Files are read the way ``kubectl apply -f`` reads them: a YAML stream of ``---``-separated
documents, or one or more JSON objects, where any ``kind: *List`` contributes its ``items``.
Pods, Secrets and ServiceAccounts (``apiVersion: v1``) are kept, with only the fields the image
pull path needs; every other kind is counted and skipped.

What the API server would have done before a kubelet sees the object is done here too:

* ``metadata.namespace`` defaults to ``default``.
* A container's empty ``imagePullPolicy`` is defaulted from its image (spec §1.1): ``Always``
  when the image's tag is ``latest`` (also when it has neither tag nor digest), otherwise
  ``IfNotPresent``.  The image itself is not checked against the reference grammar: a pod with an
  invalid image is accepted and fails later with ``InvalidImageName``, as on a real node.
* ``spec.serviceAccountName`` defaults to ``spec.serviceAccount``, then to ``default``; a pod
  without ``imagePullSecrets`` inherits those of its ServiceAccount when that ServiceAccount is
  among the loaded objects (the ServiceAccount admission plugin's behaviour).
* Secret ``data`` is strict base64, ``stringData`` wins per key, ``type`` defaults to ``Opaque``;
  docker config Secrets must hold their key with a JSON object in it.

**Stable UIDs.**  An object keeps its ``metadata.uid`` when the manifest has one.  Without one,
the UID is derived, so that a later run over the same files sees the same Secret coordinates
(pull records match Secrets by namespace, name *and* UID)::

    uuid5(UID_NAMESPACE, f"{kind}/{namespace}/{name}")

with ``UID_NAMESPACE = 6a685630-df4f-4bfd-965e-7529937407e0``.  Deleting and re-creating an
object in a real cluster changes its UID; to model that, give ``metadata.uid`` explicitly.

Every problem raises :class:`~pullwarden.errors.ManifestError` naming the file, the 1-based
document and the field path, e.g.
``pods.yaml: document 2 (Pod team-a/web): spec.containers[0].image: required``.
"""

from __future__ import annotations

import binascii
import json
import re
import sys
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import field, replace
from pathlib import Path
from typing import Any, Final, TextIO

import yaml

from pullwarden._nesting import NestingError, check_json, check_yaml, loads_json
from pullwarden._values import frozen
from pullwarden.errors import ManifestError
from pullwarden.reference import default_pull_policy

__all__ = [
    "PULL_POLICIES",
    "PULL_SECRET_TYPES",
    "UID_NAMESPACE",
    "Container",
    "CredentialRef",
    "Objects",
    "Pod",
    "Secret",
    "ServiceAccount",
    "Skipped",
    "derived_uid",
    "iter_documents",
    "load_objects",
    "load_secrets",
    "pod_from_manifest",
    "secret_from_manifest",
    "service_account_from_manifest",
]

UID_NAMESPACE: Final = uuid.UUID("6a685630-df4f-4bfd-965e-7529937407e0")
"""The uuid5 namespace of derived UIDs (a fixed constant: changing it changes every UID)."""

PULL_POLICIES: Final = ("Always", "IfNotPresent", "Never")

_DOCKERCFG_TYPE: Final = "kubernetes.io/dockercfg"
_DOCKERCONFIGJSON_TYPE: Final = "kubernetes.io/dockerconfigjson"
PULL_SECRET_TYPES: Final = (_DOCKERCONFIGJSON_TYPE, _DOCKERCFG_TYPE)
"""The Secret types the kubelet reads image pull credentials from (others it ignores)."""
_REQUIRED_KEY: Final[Mapping[str, str]] = {
    _DOCKERCFG_TYPE: ".dockercfg",
    _DOCKERCONFIGJSON_TYPE: ".dockerconfigjson",
}
_CONFIG_KEY: Final = re.compile(r"[-._a-zA-Z0-9]+")
_MANIFEST_SUFFIXES: Final = (".yaml", ".yml", ".json")


@frozen
class Container:
    """One container of a pod spec; ``image_pull_policy`` is already defaulted (§1.1)."""

    name: str
    image: str
    image_pull_policy: str  # "Always" | "IfNotPresent" | "Never"


@frozen
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


@frozen
class ServiceAccount:
    """A ServiceAccount's coordinates, plus the pull secrets it hands to pods that have none."""

    uid: str
    namespace: str
    name: str
    annotations: Mapping[str, str] = field(default_factory=dict)
    image_pull_secrets: tuple[str, ...] = ()


@frozen
class Secret:
    """A Secret's coordinates, type and decoded data (the values never appear in its repr)."""

    uid: str
    namespace: str
    name: str
    type: str
    data: Mapping[str, bytes] = field(default_factory=dict, repr=False)


@frozen
class CredentialRef:
    """Whose credentials pulled an image or matched its record, never the credentials.

    ``kind`` is ``secret`` (a pull Secret: ``namespace``/``name``), ``serviceAccount`` (a
    credential provider plugin's credentials bound to the pod's ServiceAccount), ``node``
    (node-wide: the node's docker config, a plugin's node-wide credentials, or a record of a
    node-wide or anonymous pull) or ``anonymous`` (no credentials at all).  ``provider`` names
    the credential provider plugin, when one supplied them.  :meth:`to_json` is the
    ``credential`` object of ``pullwarden run -o json``.
    """

    kind: str
    namespace: str = ""
    name: str = ""
    provider: str = ""

    def to_json(self) -> dict[str, str]:
        doc = {"kind": self.kind}
        if self.kind in ("secret", "serviceAccount"):
            doc |= {"namespace": self.namespace, "name": self.name}
        if self.provider:
            doc["provider"] = self.provider
        return doc

    def describe(self) -> str:
        """In words: ``secret ns/name``, ``service account ns/name from credential provider
        ecr``, ``node credentials``, ``anonymous``."""
        via = f" from credential provider {self.provider}" if self.provider else ""
        if self.kind == "secret":
            return f"secret {self.namespace}/{self.name}"
        if self.kind == "serviceAccount":
            return f"service account {self.namespace}/{self.name}{via}"
        if self.kind == "node":
            return f"node-wide credentials{via}" if via else "node credentials"
        return "anonymous"


@frozen
class Skipped:
    """An object :func:`load_objects` read but does not use (a Deployment, a ConfigMap, ...)."""

    kind: str
    api_version: str
    namespace: str
    name: str
    file: str
    document: int = 0

    def describe(self) -> str:
        """``Deployment team-a/web (apps/v1) in FILE, document N``."""
        who = f"{self.namespace}/{self.name}" if self.namespace else self.name or "(no name)"
        where = f"{self.file}, document {self.document}" if self.document else self.file
        version = f" ({self.api_version})" if self.api_version else ""
        return f"{self.kind} {who}{version} in {where}"


@frozen
class Objects:
    """Everything :func:`load_objects` found, keyed the way the kubelet looks objects up."""

    pods: list[Pod] = field(default_factory=list)  # in file order
    secrets: dict[tuple[str, str], Secret] = field(default_factory=dict)  # (namespace, name)
    service_accounts: dict[tuple[str, str], ServiceAccount] = field(default_factory=dict)
    skipped: tuple[Skipped, ...] = ()  # objects of other kinds, in file order

    @property
    def ignored(self) -> int:
        """How many objects were skipped."""
        return len(self.skipped)

    @property
    def ignored_kinds(self) -> dict[str, int]:
        """How many objects of each kind were skipped."""
        return dict(Counter(s.kind for s in self.skipped))


def derived_uid(kind: str, namespace: str, name: str) -> str:
    """The stable UID given to an object whose manifest has no ``metadata.uid``."""
    return str(uuid.uuid5(UID_NAMESPACE, f"{kind}/{namespace}/{name}"))


# --- where a problem is ----------------------------------------------------------------------


@frozen
class _Where:
    """The file, document, List item path and object a field belongs to, for messages."""

    file: str
    document: int = 0  # 1-based; 0 when unknown
    prefix: str = ""  # "items[2]." for an object inside a List
    label: str = ""  # "Pod team-a/web"

    def error(self, path: str, problem: str) -> ManifestError:
        head = self.file
        if self.document:
            head += f": document {self.document}"
        if self.label:
            head += f" ({self.label})"
        full = self.prefix + path if path else self.prefix.rstrip(".")
        message = f"{head}: {full}: {problem}" if full else f"{head}: {problem}"
        return ManifestError(message, file=self.file, document=self.document, field=full)


def describe_value(value: Any, *, show_strings: bool = False) -> str:
    """How an error message names a YAML/JSON value of the wrong type.

    Strings are shown only when asked: in manifests they may be secret data.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, str):
        return f"string {json.dumps(value)}" if show_strings else "a string"
    if isinstance(value, int | float):
        return f"number {value}"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "a map"
    return type(value).__name__


def _string(obj: Mapping[str, Any], key: str, where: _Where, path: str) -> str:
    """``obj[key]`` as a string; missing or null gives ``""``."""
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise where.error(path, f"expected a string, got {describe_value(value)}")
    return value


def _mapping(obj: Mapping[str, Any], key: str, where: _Where, path: str) -> Mapping[Any, Any]:
    """``obj[key]`` as a map; missing or null gives an empty map."""
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise where.error(path, f"expected a map, got {describe_value(value)}")
    return value


def _list(obj: Mapping[str, Any], key: str, where: _Where, path: str) -> list[Any]:
    """``obj[key]`` as a list; missing or null gives an empty list."""
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise where.error(path, f"expected a list, got {describe_value(value)}")
    return value


def _string_map(obj: Mapping[str, Any], key: str, where: _Where, path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for k, v in _mapping(obj, key, where, path).items():
        if not isinstance(v, str):
            raise where.error(f"{path}[{k}]", f"expected a string, got {describe_value(v)}")
        out[str(k)] = v
    return out


@frozen
class _Meta:
    name: str
    namespace: str
    uid: str
    annotations: dict[str, str]


def _metadata(doc: Mapping[str, Any], kind: str, where: _Where, derive_uid: bool) -> _Meta:
    """Read ``metadata``; on return ``where`` should be relabelled with the object's name."""
    meta = _mapping(doc, "metadata", where, "metadata")
    name = _string(meta, "name", where, "metadata.name")
    namespace = _string(meta, "namespace", where, "metadata.namespace") or "default"
    if not name:
        raise where.error("metadata.name", "required")
    where = replace(where, label=f"{kind} {namespace}/{name}")
    uid = _string(meta, "uid", where, "metadata.uid")
    if not uid and derive_uid:
        uid = derived_uid(kind, namespace, name)
    annotations = _string_map(meta, "annotations", where, "metadata.annotations")
    return _Meta(name, namespace, uid, annotations)


def _labelled(where: _Where, kind: str, doc: Mapping[str, Any]) -> _Where:
    """``where`` labelled with the object's kind and (best effort) namespace/name."""
    meta = doc.get("metadata")
    if isinstance(meta, Mapping) and isinstance(meta.get("name"), str) and meta["name"]:
        ns = meta.get("namespace")
        namespace = ns if isinstance(ns, str) and ns else "default"
        return replace(where, label=f"{kind} {namespace}/{meta['name']}")
    return replace(where, label=kind)


# --- Pods ------------------------------------------------------------------------------------


def _containers(
    spec: Mapping[str, Any], key: str, where: _Where, seen: dict[str, str]
) -> tuple[Container, ...]:
    out: list[Container] = []
    for i, raw in enumerate(_list(spec, key, where, f"spec.{key}")):
        path = f"spec.{key}[{i}]"
        if not isinstance(raw, Mapping):
            raise where.error(path, f"expected an object, got {describe_value(raw)}")
        name = _string(raw, "name", where, f"{path}.name")
        if not name:
            raise where.error(f"{path}.name", "required")
        if name in seen:
            raise where.error(
                f"{path}.name", f"duplicate value {json.dumps(name)} (see {seen[name]})"
            )
        seen[name] = f"{path}.name"
        image = _string(raw, "image", where, f"{path}.image")
        if not image:
            raise where.error(f"{path}.image", "required")
        if image != image.strip():
            raise where.error(f"{path}.image", "must not have leading or trailing whitespace")
        policy = _string(raw, "imagePullPolicy", where, f"{path}.imagePullPolicy")
        if not policy:
            policy = default_pull_policy(image)
        elif policy not in PULL_POLICIES:
            supported = ", ".join(f'"{p}"' for p in PULL_POLICIES)
            raise where.error(
                f"{path}.imagePullPolicy",
                f"unsupported value {json.dumps(policy)}: supported values: {supported}",
            )
        out.append(Container(name=name, image=image, image_pull_policy=policy))
    return tuple(out)


def _pull_secret_names(obj: Mapping[str, Any], where: _Where, path: str) -> tuple[str, ...]:
    """Names from ``imagePullSecrets: [{name: ...}]``; entries without a name are skipped."""
    names: list[str] = []
    for i, ref in enumerate(_list(obj, "imagePullSecrets", where, path)):
        if not isinstance(ref, Mapping):
            raise where.error(f"{path}[{i}]", f"expected an object, got {describe_value(ref)}")
        name = _string(ref, "name", where, f"{path}[{i}].name")
        if name:  # the kubelet ignores empty names, which the API server lets through
            names.append(name)
    return tuple(names)


def _pod(doc: Mapping[str, Any], where: _Where, derive_uid: bool) -> Pod:
    where = _labelled(where, "Pod", doc)
    meta = _metadata(doc, "Pod", where, derive_uid)
    if not isinstance(doc.get("spec"), Mapping):
        if doc.get("spec") is None:
            raise where.error("spec", "required")
        raise where.error("spec", f"expected a map, got {describe_value(doc.get('spec'))}")
    spec: Mapping[str, Any] = doc["spec"]
    seen: dict[str, str] = {}
    init_containers = _containers(spec, "initContainers", where, seen)
    containers = _containers(spec, "containers", where, seen)
    if not containers:
        raise where.error("spec.containers", "required (at least one container)")
    account = (
        _string(spec, "serviceAccountName", where, "spec.serviceAccountName")
        or _string(spec, "serviceAccount", where, "spec.serviceAccount")
        or "default"
    )
    return Pod(
        uid=meta.uid,
        namespace=meta.namespace,
        name=meta.name,
        containers=containers,
        init_containers=init_containers,
        image_pull_secrets=_pull_secret_names(spec, where, "spec.imagePullSecrets"),
        service_account_name=account,
        annotations=meta.annotations,
    )


def pod_from_manifest(
    doc: Mapping[str, Any], source: str = "manifest", *, derive_uid: bool = True
) -> Pod:
    """A :class:`Pod` from its decoded manifest (see the module notes for the defaulting)."""
    if doc.get("kind") != "Pod":
        raise ManifestError(f"{source}: kind {doc.get('kind')!r} is not a Pod", file=source)
    return _pod(doc, _Where(source), derive_uid)


# --- Secrets and ServiceAccounts -------------------------------------------------------------


def _decode_base64(value: str) -> bytes:
    """Strict standard base64, ignoring line breaks as Go's decoder does."""
    return binascii.a2b_base64(value.replace("\r", "").replace("\n", ""), strict_mode=True)


def _secret(doc: Mapping[str, Any], where: _Where, derive_uid: bool) -> Secret:
    where = _labelled(where, "Secret", doc)
    meta = _metadata(doc, "Secret", where, derive_uid)
    secret_type = _string(doc, "type", where, "type") or "Opaque"
    data: dict[str, bytes] = {}
    for key, value in _mapping(doc, "data", where, "data").items():
        path = f"data[{key}]"
        if not isinstance(key, str) or not _CONFIG_KEY.fullmatch(key):
            raise where.error(
                path, "a valid key must consist of alphanumeric characters, '-', '_' or '.'"
            )
        if value is None:
            data[key] = b""
            continue
        if not isinstance(value, str):
            raise where.error(path, f"expected a base64 string, got {describe_value(value)}")
        try:
            data[key] = _decode_base64(value)
        except (binascii.Error, ValueError) as err:
            # The message of binascii names the problem, never the data.
            raise where.error(path, f"not valid base64 ({err})") from None
    for key, value in _mapping(doc, "stringData", where, "stringData").items():
        path = f"stringData[{key}]"
        if not isinstance(key, str) or not _CONFIG_KEY.fullmatch(key):
            raise where.error(
                path, "a valid key must consist of alphanumeric characters, '-', '_' or '.'"
            )
        if not isinstance(value, str):
            raise where.error(path, f"expected a string, got {describe_value(value)}")
        data[key] = value.encode("utf-8")
    required = _REQUIRED_KEY.get(secret_type)
    if required is not None:
        path = f"data[{required}]"
        if required not in data:
            raise where.error(path, f"required for a Secret of type {secret_type}")
        try:
            parsed = loads_json(data[required])
        except (ValueError, UnicodeDecodeError) as err:
            if isinstance(err, json.JSONDecodeError):
                detail = err.msg
            elif isinstance(err, NestingError):
                detail = str(err)
            else:
                detail = "not UTF-8"
            raise where.error(path, f"not a valid docker config: {detail}") from None
        if not isinstance(parsed, dict):
            raise where.error(path, "not a valid docker config: expected a JSON object")
    return Secret(
        uid=meta.uid, namespace=meta.namespace, name=meta.name, type=secret_type, data=data
    )


def secret_from_manifest(
    doc: Mapping[str, Any], source: str = "manifest", derive_uid: bool = True
) -> Secret:
    """A :class:`Secret` from its manifest; ``data`` is base64, ``stringData`` wins per key.

    Without ``metadata.uid`` the UID is derived (:func:`derived_uid`), or left empty when
    ``derive_uid`` is false (for callers that must match a real cluster's UIDs).
    """
    if doc.get("kind") != "Secret":
        raise ManifestError(f"{source}: kind {doc.get('kind')!r} is not a Secret", file=source)
    return _secret(doc, _Where(source), derive_uid)


def _service_account(doc: Mapping[str, Any], where: _Where, derive_uid: bool) -> ServiceAccount:
    where = _labelled(where, "ServiceAccount", doc)
    meta = _metadata(doc, "ServiceAccount", where, derive_uid)
    return ServiceAccount(
        uid=meta.uid,
        namespace=meta.namespace,
        name=meta.name,
        annotations=meta.annotations,
        image_pull_secrets=_pull_secret_names(doc, where, "imagePullSecrets"),
    )


def service_account_from_manifest(
    doc: Mapping[str, Any], source: str = "manifest", *, derive_uid: bool = True
) -> ServiceAccount:
    """A :class:`ServiceAccount` from its decoded manifest."""
    if doc.get("kind") != "ServiceAccount":
        raise ManifestError(
            f"{source}: kind {doc.get('kind')!r} is not a ServiceAccount", file=source
        )
    return _service_account(doc, _Where(source), derive_uid)


# --- reading files ---------------------------------------------------------------------------

try:
    from yaml import CSafeLoader as _BaseLoader
except ImportError:  # pragma: no cover - PyYAML built without libyaml
    from yaml import SafeLoader as _BaseLoader  # type: ignore[assignment]


class _ManifestLoader(_BaseLoader):
    """Safe YAML loading that keeps unquoted dates as the strings Kubernetes would see."""


_ManifestLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in _BaseLoader.yaml_implicit_resolvers.items()
}


def _raw_documents(text: str, source: str, json_only: bool) -> Iterator[tuple[int, Any]]:
    """(1-based number, decoded document) for each document of a file; empty ones skipped.

    Text that starts like JSON is read as a stream of JSON documents; if that fails and the
    file may be YAML, it is read as YAML (of which JSON is a subset).  Documents nested deeper
    than :data:`pullwarden._nesting.MAX_DEPTH` are refused before anything is parsed.
    """
    if text.lstrip().startswith(("{", "[")):
        docs = _json_documents(text, source, json_only)
        if docs is not None:
            yield from ((n, d) for n, d in enumerate(docs, 1) if d is not None)
            return
    yield from _yaml_documents(text, source)


def _json_documents(text: str, source: str, json_only: bool) -> list[Any] | None:
    """The JSON documents of ``text``; None when it is not JSON but may still be YAML."""
    decoder = json.JSONDecoder()
    docs: list[Any] = []
    pos = 0
    try:
        check_json(text)
        while True:
            while pos < len(text) and text[pos] in " \t\r\n":
                pos += 1
            if pos >= len(text):
                return docs
            doc, pos = decoder.raw_decode(text, pos)
            docs.append(doc)
    except NestingError as err:
        # In a YAML file the check is repeated with YAML's rules for strings.
        if json_only:
            raise ManifestError(
                f"{source}: line {err.line}, column {err.column}: not valid JSON: {err}",
                file=source,
            ) from None
    except json.JSONDecodeError as err:
        if json_only:
            raise ManifestError(
                f"{source}: line {err.lineno}, column {err.colno}: not valid JSON: {err.msg}",
                file=source,
                document=len(docs) + 1,
            ) from None
    return None


def _yaml_documents(text: str, source: str) -> Iterator[tuple[int, Any]]:
    """(1-based number, document) for each non-empty YAML document of ``text``."""
    try:
        check_yaml(text, _ManifestLoader)
    except NestingError as err:
        raise ManifestError(
            f"{source}: document {err.document}: line {err.line}, column {err.column}: "
            f"not valid YAML: {err}",
            file=source,
            document=err.document,
        ) from None
    number = 0
    try:
        for doc in yaml.load_all(text, Loader=_ManifestLoader):
            number += 1
            if doc is not None:
                yield number, doc
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = err.problem or err.context or "malformed"
        raise ManifestError(
            f"{source}: document {number + 1}: {where}not valid YAML: {problem}",
            file=source,
            document=number + 1,
        ) from None
    except yaml.YAMLError as err:
        raise ManifestError(
            f"{source}: not valid YAML: {err}", file=source, document=number + 1
        ) from None


def _objects_in(raw: Any, where: _Where) -> Iterator[tuple[_Where, Mapping[str, Any]]]:
    """The objects of one document: the document itself, or a List's items (recursively)."""
    if not isinstance(raw, Mapping):
        raise where.error("", f"expected a Kubernetes object (a map), got {describe_value(raw)}")
    kind = raw.get("kind")
    if not isinstance(kind, str) or not kind:
        raise where.error("kind", "required" if kind is None else "expected a non-empty string")
    if kind.endswith("List"):
        for i, item in enumerate(_list(raw, "items", where, "items")):
            yield from _objects_in(item, replace(where, prefix=f"{where.prefix}items[{i}]."))
        return
    yield where, raw


def _read(path: Path, stdin: TextIO | None) -> tuple[str, str]:
    """(text, source name) of a manifest file, or of standard input for ``-``."""
    source = "<stdin>" if str(path) == "-" else str(path)
    try:
        if source == "<stdin>":
            stream = stdin if stdin is not None else sys.stdin
            binary = getattr(stream, "buffer", None)  # its bytes: the locale may mask bad ones
            text = binary.read().decode() if binary is not None else stream.read()
            text.encode()  # what a text stream let through must be UTF-8 too
        else:
            text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, UnicodeEncodeError) as err:  # never the byte: it may be a secret's
        raise ManifestError(
            f"{source}: cannot read: not valid UTF-8 (at character {err.start})", file=source
        ) from None
    except OSError as err:
        raise ManifestError(f"{source}: cannot read: {err.strerror or err}", file=source) from None
    return text, source


def _expand(paths: Sequence[Path]) -> list[Path]:
    """Directories stand for their ``.yaml``/``.yml``/``.json`` files, sorted by name."""
    out: list[Path] = []
    for path in paths:
        if str(path) != "-" and path.is_dir():
            out.extend(
                sorted(p for p in path.iterdir() if p.suffix in _MANIFEST_SUFFIXES and p.is_file())
            )
        else:
            out.append(path)
    return out


def _file_objects(path: Path, stdin: TextIO | None) -> Iterator[tuple[_Where, Mapping[str, Any]]]:
    text, source = _read(path, stdin)
    for number, raw in _raw_documents(text, source, json_only=path.suffix == ".json"):
        yield from _objects_in(raw, _Where(source, number))


def _is_core(doc: Mapping[str, Any]) -> bool:
    """Whether the object belongs to the core API group (``v1``); a missing apiVersion counts."""
    return doc.get("apiVersion") in (None, "", "v1")


def iter_documents(text: str, source: str) -> Iterator[Mapping[str, Any]]:
    """Every object in a manifest: YAML streams, JSON, and the items of ``kind: *List``."""
    for number, raw in _raw_documents(text, source, json_only=False):
        for _, obj in _objects_in(raw, _Where(source, number)):
            yield obj


def load_objects(
    paths: Sequence[Path], *, derive_uids: bool = True, stdin: TextIO | None = None
) -> Objects:
    """Read Pods, Secrets and ServiceAccounts from manifest files, in order.

    ``-`` reads standard input (or ``stdin``); a directory reads its manifest files.  Other
    kinds are counted in :attr:`Objects.ignored`.  The same Pod, Secret or ServiceAccount
    defined twice is an error.  Pods without ``imagePullSecrets`` inherit those of their loaded
    ServiceAccount.
    """
    pods: list[Pod] = []
    secrets: dict[tuple[str, str], Secret] = {}
    accounts: dict[tuple[str, str], ServiceAccount] = {}
    first_seen: dict[tuple[str, str, str], _Where] = {}
    skipped: list[Skipped] = []

    def check_unique(kind: str, namespace: str, name: str, where: _Where) -> None:
        key = (kind, namespace, name)
        where = replace(where, label=f"{kind} {namespace}/{name}")
        if key in first_seen:
            other = first_seen[key]
            at = f"{other.file}: document {other.document}" if other.document else other.file
            raise where.error("", f"defined twice (first in {at})")
        first_seen[key] = where

    for path in _expand(paths):
        for where, doc in _file_objects(path, stdin):
            kind = str(doc["kind"])
            if kind == "Pod" and _is_core(doc):
                pod = _pod(doc, where, derive_uids)
                check_unique(kind, pod.namespace, pod.name, where)
                pods.append(pod)
            elif kind == "Secret" and _is_core(doc):
                secret = _secret(doc, where, derive_uids)
                check_unique(kind, secret.namespace, secret.name, where)
                secrets[secret.namespace, secret.name] = secret
            elif kind == "ServiceAccount" and _is_core(doc):
                account = _service_account(doc, where, derive_uids)
                check_unique(kind, account.namespace, account.name, where)
                accounts[account.namespace, account.name] = account
            else:
                skipped.append(_skipped(doc, kind, where))

    resolved: list[Pod] = []
    for pod in pods:
        owner = accounts.get((pod.namespace, pod.service_account_name))
        if not pod.image_pull_secrets and owner is not None and owner.image_pull_secrets:
            pod = replace(pod, image_pull_secrets=owner.image_pull_secrets)
        resolved.append(pod)
    return Objects(
        pods=resolved,
        secrets=secrets,
        service_accounts=accounts,
        skipped=tuple(skipped),
    )


def _skipped(doc: Mapping[str, Any], kind: str, where: _Where) -> Skipped:
    """What to say of an object of a kind the pull path does not use (best effort names)."""
    meta = doc.get("metadata")
    meta = meta if isinstance(meta, Mapping) else {}
    namespace = meta.get("namespace")
    name = meta.get("name")
    version = doc.get("apiVersion")
    return Skipped(
        kind=kind,
        api_version=version if isinstance(version, str) else "",
        namespace=namespace if isinstance(namespace, str) else "",
        name=name if isinstance(name, str) else "",
        file=where.file,
        document=where.document,
    )


def load_secrets(path: Path, *, derive_uids: bool = True) -> list[Secret]:
    """Every Secret in a manifest file, in order (other kinds are skipped unread).

    With ``derive_uids=False`` a Secret without ``metadata.uid`` keeps an empty UID, so callers
    that must match a real cluster's records can insist on the real one.
    """
    return [
        _secret(doc, where, derive_uids)
        for where, doc in _file_objects(path, None)
        if doc["kind"] == "Secret" and _is_core(doc)
    ]
