"""The kubelet's ``CredentialProviderConfig``: which exec credential plugins to run (spec §2.4b).

The file named by ``--image-credential-provider-config`` is a ``CredentialProviderConfig``
document (``kubelet.config.k8s.io/v1``, ``v1beta1`` or ``v1alpha1``), YAML or JSON.  The path may
also be a directory: every ``*.json``, ``*.yaml`` and ``*.yml`` file in it is read, in lexical
order of the names, and their providers are concatenated; a provider name used in two files is
an error.

Reading is strict, as the kubelet's decoder is: an unknown or repeated field is an error, field
names are case-sensitive, and ``tokenAttributes`` exists only in ``kubelet.config.k8s.io/v1``.
Then the kubelet's validation rules apply, each problem named by its field path with an index
(``providers[1].tokenAttributes.cacheType: Required value: …``; the kubelet prints the same
texts without the index):

* at least one provider; names unique, not ``.`` or ``..``, without ``/`` or spaces;
* ``apiVersion`` (of the plugin protocol) required and one of
  ``credentialprovider.kubelet.k8s.io/v1``, ``v1beta1``, ``v1alpha1``;
* ``matchImages`` required, each entry a location the keyring can parse (spec §2.3);
* ``defaultCacheDuration`` required (a Go duration such as ``12h``) and not negative;
* ``tokenAttributes`` (KEP-4412) only with the ``v1`` plugin protocol;
  ``serviceAccountTokenAudience``, ``requireServiceAccount`` and ``cacheType``
  (``ServiceAccount`` or ``Token``) required; annotation keys valid qualified names, without
  duplicates, never both required and optional; required keys only with
  ``requireServiceAccount: true``.

All problems of a file are reported at once in one :class:`~pullwarden.errors.ConfigError`
whose ``source`` is that file.  Messages never quote an ``env`` value.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from pullwarden._documents import read_document
from pullwarden._gofmt import go_duration, go_quote, parse_go_duration
from pullwarden._gojson import go_bytes
from pullwarden._values import frozen
from pullwarden.credentials._keyring import _parse_url, _URLError, url_matches
from pullwarden.errors import ConfigError
from pullwarden.objects import describe_value

__all__ = [
    "CACHE_TYPES",
    "CACHE_TYPE_SERVICE_ACCOUNT",
    "CACHE_TYPE_TOKEN",
    "CONFIG_API_VERSIONS",
    "CONFIG_KIND",
    "PLUGIN_API_V1",
    "PLUGIN_API_VERSIONS",
    "CredentialProvider",
    "CredentialProviderConfig",
    "TokenAttributes",
    "load_credential_provider_config",
]

CONFIG_KIND: Final = "CredentialProviderConfig"
_CONFIG_V1: Final = "kubelet.config.k8s.io/v1"
CONFIG_API_VERSIONS: Final = (
    _CONFIG_V1,
    "kubelet.config.k8s.io/v1alpha1",
    "kubelet.config.k8s.io/v1beta1",
)
"""The ``apiVersion`` values a configuration document may have (sorted, as messages list them)."""

PLUGIN_API_V1: Final = "credentialprovider.kubelet.k8s.io/v1"
PLUGIN_API_VERSIONS: Final = (
    PLUGIN_API_V1,
    "credentialprovider.kubelet.k8s.io/v1alpha1",
    "credentialprovider.kubelet.k8s.io/v1beta1",
)
"""The plugin protocol versions a provider's ``apiVersion`` may name (sorted)."""

CACHE_TYPE_SERVICE_ACCOUNT: Final = "ServiceAccount"
CACHE_TYPE_TOKEN: Final = "Token"
CACHE_TYPES: Final = (CACHE_TYPE_SERVICE_ACCOUNT, CACHE_TYPE_TOKEN)

_SUFFIXES: Final = (".json", ".yaml", ".yml")
_NS_PER_SECOND: Final = 1_000_000_000


# --------------------------------------------------------------------------------------------
# The configuration
# --------------------------------------------------------------------------------------------


@frozen
class TokenAttributes:
    """A provider's ``tokenAttributes``: the pod's service account token is passed to it."""

    service_account_token_audience: str
    cache_type: str  # "ServiceAccount" | "Token"
    require_service_account: bool
    required_annotation_keys: tuple[str, ...] = ()
    optional_annotation_keys: tuple[str, ...] = ()


@frozen
class CredentialProvider:
    """One exec plugin: ``<bin dir>/<name>``, consulted for images matching ``match_images``.

    ``default_cache_duration`` is in seconds; ``api_version`` is the plugin protocol version
    (``credentialprovider.kubelet.k8s.io/v1``); ``env`` holds (name, value) pairs added to the
    kubelet's own environment (the values are left out of the repr); ``source`` names the file
    the provider was read from.
    """

    name: str
    match_images: tuple[str, ...]
    default_cache_duration: float
    api_version: str
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    token_attributes: TokenAttributes | None = None
    source: str = ""

    def matches(self, repository: str) -> bool:
        """Whether one of ``matchImages`` applies to ``repository`` (the keyring's glob rules)."""
        return any(url_matches(pattern, repository) for pattern in self.match_images)

    def __repr__(self) -> str:
        env = tuple(name for name, _value in self.env)
        return (
            f"CredentialProvider(name={self.name!r}, match_images={self.match_images!r}, "
            f"default_cache_duration={self.default_cache_duration!r}, "
            f"api_version={self.api_version!r}, args={self.args!r}, env_names={env!r}, "
            f"token_attributes={self.token_attributes!r}, source={self.source!r})"
        )


@frozen
class CredentialProviderConfig:
    """The providers in configuration order (files of a directory in lexical order)."""

    providers: tuple[CredentialProvider, ...] = ()


# --------------------------------------------------------------------------------------------
# Strict decoding
# --------------------------------------------------------------------------------------------


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


_NO_HINTS: Final[Mapping[str, str]] = {}


class _Reader:
    """Typed, strict access to decoded values; every problem is collected with its path."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def _type_error(self, path: str, expected: str, value: Any) -> None:
        self.problems.append(f"{path}: expected {expected}, got {describe_value(value)}")

    def object(
        self, value: Any, path: str, known: Collection[str], hints: Mapping[str, str] = _NO_HINTS
    ) -> Mapping[str, Any] | None:
        """``value`` as a map with only ``known`` fields (None: null or the wrong type).

        ``hints`` adds an explanation to the problem of some unknown fields.
        """
        if value is None:
            return None
        if not isinstance(value, Mapping):
            self._type_error(path, "a map", value)
            return None
        for key in getattr(value, "duplicates", ()):
            self.problems.append(f"{_join(path, key)}: duplicate field")
        for key in value:
            if key not in known:
                self.problems.append(f"{_join(path, key)}: unknown field{hints.get(key, '')}")
        return value

    def string(self, obj: Mapping[str, Any], key: str, path: str) -> str:
        value = obj.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            self._type_error(_join(path, key), "a string", value)
            return ""
        return value

    def boolean(self, obj: Mapping[str, Any], key: str, path: str) -> bool | None:
        value = obj.get(key)
        if value is None or isinstance(value, bool):
            return value
        self._type_error(_join(path, key), "a boolean (true or false)", value)
        return None

    def items(self, obj: Mapping[str, Any], key: str, path: str) -> list[Any]:
        value = obj.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            self._type_error(_join(path, key), "a list", value)
            return []
        return value

    def strings(self, obj: Mapping[str, Any], key: str, path: str) -> list[str]:
        out: list[str] = []
        for i, item in enumerate(self.items(obj, key, path)):
            if isinstance(item, str):
                out.append(item)
            else:
                self._type_error(f"{_join(path, key)}[{i}]", "a string", item)
        return out

    def duration(self, obj: Mapping[str, Any], key: str, path: str) -> int | None:
        """Nanoseconds of a Go duration string; None when not set."""
        value = obj.get(key)
        if value is None:
            return None
        if not isinstance(value, str):
            self._type_error(_join(path, key), 'a duration string such as "12h" or "5m"', value)
            return None
        try:
            return parse_go_duration(value)
        except ValueError as err:
            self.problems.append(f"{_join(path, key)}: {err}")
            return None


_PROVIDER_FIELDS: Final = frozenset(
    {"name", "matchImages", "defaultCacheDuration", "apiVersion", "args", "env"}
)
_ENV_FIELDS: Final = frozenset({"name", "value"})
_TOKEN_FIELDS: Final = frozenset(
    {
        "serviceAccountTokenAudience",
        "cacheType",
        "requireServiceAccount",
        "requiredServiceAccountAnnotationKeys",
        "optionalServiceAccountAnnotationKeys",
    }
)
_TOKEN_HINT: Final[Mapping[str, str]] = {
    "tokenAttributes": f" (tokenAttributes needs apiVersion {_CONFIG_V1})"
}


@frozen
class _RawTokenAttributes:
    audience: str
    cache_type: str
    require_service_account: bool | None
    required: tuple[str, ...]
    optional: tuple[str, ...]


@frozen
class _RawProvider:
    """A provider as decoded, before validation (None: not set)."""

    name: str
    match_images: tuple[str, ...]
    default_cache_duration: int | None  # nanoseconds
    api_version: str
    args: tuple[str, ...]
    env: tuple[tuple[str, str], ...]
    token_attributes: _RawTokenAttributes | None


def _decode_token_attributes(r: _Reader, value: Any, path: str) -> _RawTokenAttributes | None:
    obj = r.object(value, path, _TOKEN_FIELDS)
    if obj is None:
        return None
    return _RawTokenAttributes(
        audience=r.string(obj, "serviceAccountTokenAudience", path),
        cache_type=r.string(obj, "cacheType", path),
        require_service_account=r.boolean(obj, "requireServiceAccount", path),
        required=tuple(r.strings(obj, "requiredServiceAccountAnnotationKeys", path)),
        optional=tuple(r.strings(obj, "optionalServiceAccountAnnotationKeys", path)),
    )


def _decode_env(r: _Reader, obj: Mapping[str, Any], path: str) -> tuple[tuple[str, str], ...]:
    out: list[tuple[str, str]] = []
    for i, item in enumerate(r.items(obj, "env", path)):
        item_path = f"{_join(path, 'env')}[{i}]"
        entry = r.object(item, item_path, _ENV_FIELDS)
        if entry is None:
            out.append(("", ""))
            continue
        out.append((r.string(entry, "name", item_path), r.string(entry, "value", item_path)))
    return tuple(out)


def _decode_provider(r: _Reader, value: Any, path: str, v1: bool) -> _RawProvider | None:
    known = _PROVIDER_FIELDS | {"tokenAttributes"} if v1 else _PROVIDER_FIELDS
    obj = r.object(value, path, known, {} if v1 else _TOKEN_HINT)
    if obj is None:
        if value is None:
            r.problems.append(f"{path}: expected a map, got null")
        return None
    return _RawProvider(
        name=r.string(obj, "name", path),
        match_images=tuple(r.strings(obj, "matchImages", path)),
        default_cache_duration=r.duration(obj, "defaultCacheDuration", path),
        api_version=r.string(obj, "apiVersion", path),
        args=tuple(r.strings(obj, "args", path)),
        env=_decode_env(r, obj, path),
        token_attributes=(
            _decode_token_attributes(r, obj.get("tokenAttributes"), _join(path, "tokenAttributes"))
            if v1
            else None
        ),
    )


def _quoted_list(values: Sequence[str]) -> str:
    return ", ".join(go_quote(v) for v in values)


def _check_header(doc: Any) -> tuple[list[str], bool]:
    """Problems with the document's kind and apiVersion, and whether it is ``…/v1``."""
    if not isinstance(doc, Mapping):
        return [f"expected a {CONFIG_KIND} object, got {describe_value(doc)}"], False
    problems: list[str] = []
    kind = doc.get("kind")
    if kind is None or kind == "":
        problems.append("kind: Required value")
    elif kind != CONFIG_KIND:
        shown = go_quote(kind) if isinstance(kind, str) else describe_value(kind)
        problems.append(
            f"kind: Unsupported value: {shown}: supported values: {go_quote(CONFIG_KIND)}"
        )
    api_version = doc.get("apiVersion")
    if api_version is None or api_version == "":
        problems.append("apiVersion: Required value")
    elif api_version not in CONFIG_API_VERSIONS:
        shown = (
            go_quote(api_version) if isinstance(api_version, str) else describe_value(api_version)
        )
        problems.append(
            f"apiVersion: Unsupported value: {shown}: "
            f"supported values: {_quoted_list(CONFIG_API_VERSIONS)}"
        )
    return problems, api_version == _CONFIG_V1


def _decode_document(doc: Any) -> tuple[list[_RawProvider], list[str]]:
    problems, v1 = _check_header(doc)
    if problems:
        return [], problems
    r = _Reader()
    top = r.object(doc, "", {"kind", "apiVersion", "providers"})
    providers: list[_RawProvider] = []
    if top is not None:
        for i, item in enumerate(r.items(top, "providers", "")):
            decoded = _decode_provider(r, item, f"providers[{i}]", v1)
            if decoded is not None:
                providers.append(decoded)
    return providers, r.problems


# --------------------------------------------------------------------------------------------
# Validation (the kubelet's rules and texts)
# --------------------------------------------------------------------------------------------

_LABEL_KEY_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_LABEL_KEY_RE: Final = re.compile(f"^{_LABEL_KEY_FMT}$")
_LABEL_KEY_MSG: Final = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an "
    "alphanumeric character"
)
_DNS_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS_SUBDOMAIN_FMT: Final = _DNS_LABEL_FMT + "(\\." + _DNS_LABEL_FMT + ")*"
_DNS_SUBDOMAIN_RE: Final = re.compile(f"^{_DNS_SUBDOMAIN_FMT}$")
_DNS_SUBDOMAIN_MSG: Final = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character"
)


def _regex_error(message: str, fmt: str, *examples: str) -> str:
    """apimachinery's text for a value that does not match a pattern."""
    if not examples:
        return f"{message} (regex used for validation is '{fmt}')"
    shown = " or ".join(f"'{example}', " for example in examples)
    return f"{message} (e.g. {shown}regex used for validation is '{fmt}')"


def _qualified_name_problems(value: str) -> list[str]:
    """Why ``value`` is not a qualified name (a label key); empty when it is one."""
    parts = value.split("/")
    problems: list[str] = []
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            problems.append("prefix part must be non-empty")
        else:
            if len(prefix) > 253:
                problems.append("prefix part must be no more than 253 characters")
            if not _DNS_SUBDOMAIN_RE.match(prefix):
                problems.append(
                    "prefix part "
                    + _regex_error(_DNS_SUBDOMAIN_MSG, _DNS_SUBDOMAIN_FMT, "example.com")
                )
    else:
        return [
            "a valid label key "
            + _regex_error(_LABEL_KEY_MSG, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        problems.append("name part must be non-empty")
    elif len(name) > 63:
        problems.append("name part must be no more than 63 characters")
    if not _LABEL_KEY_RE.match(name):
        problems.append(
            "name part "
            + _regex_error(_LABEL_KEY_MSG, _LABEL_KEY_FMT, "MyName", "my.name", "123-abc")
        )
    return problems


def _annotation_key_problems(path: str, keys: Sequence[str]) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for i, key in enumerate(keys):
        # As for object annotations: a qualified name, whatever the case of its letters.
        for message in _qualified_name_problems(key.lower()):
            problems.append(f"{path}[{i}]: Invalid value: {go_quote(key)}: {message}")
        if key in seen:
            problems.append(f"{path}[{i}]: Duplicate value: {go_quote(key)}")
        seen.add(key)
    return problems


def _match_image_problem(pattern: str) -> str | None:
    """Why the keyring could not use ``pattern`` as a location; None when it can."""
    url = "https://" + pattern
    try:
        _parse_url(go_bytes(url))
    except _URLError as err:
        return f"match image is invalid: parse {go_quote(url)}: {err}"
    return None


def _token_problems(path: str, api_version: str, attrs: _RawTokenAttributes) -> list[str]:
    problems: list[str] = []
    if not attrs.audience:
        problems.append(f"{path}.serviceAccountTokenAudience: Required value")
    if attrs.require_service_account is None:
        problems.append(f"{path}.requireServiceAccount: Required value")
    if api_version != PLUGIN_API_V1:
        problems.append(
            f"{path}: Forbidden: tokenAttributes is only supported for {PLUGIN_API_V1} API version"
        )
    if attrs.require_service_account is False and attrs.required:
        problems.append(
            f"{path}.requiredServiceAccountAnnotationKeys: Forbidden: requireServiceAccount "
            "cannot be false when requiredServiceAccountAnnotationKeys is set"
        )
    problems += _annotation_key_problems(
        f"{path}.requiredServiceAccountAnnotationKeys", attrs.required
    )
    problems += _annotation_key_problems(
        f"{path}.optionalServiceAccountAnnotationKeys", attrs.optional
    )
    both = sorted(set(attrs.required) & set(attrs.optional))
    if both:
        problems.append(
            f"{path}: Invalid value: [{','.join(json.dumps(k) for k in both)}]: "
            "annotation keys cannot be both required and optional"
        )
    if not attrs.cache_type:
        problems.append(
            f"{path}.cacheType: Required value: cacheType is required to be set when "
            f"tokenAttributes is specified. Supported values are: {', '.join(CACHE_TYPES)}"
        )
    elif attrs.cache_type not in CACHE_TYPES:
        problems.append(
            f"{path}.cacheType: Unsupported value: {go_quote(attrs.cache_type)}: "
            f"supported values: {_quoted_list(CACHE_TYPES)}"
        )
    return problems


def _provider_problems(path: str, p: _RawProvider, seen: set[str]) -> list[str]:
    problems: list[str] = []
    name = f"{path}.name"
    if not p.name:
        problems.append(f"{name}: Required value")  # the kubelet only finds out at exec time
    if "/" in p.name:
        problems.append(
            f"{name}: Invalid value: {go_quote(p.name)}: provider name cannot contain '/'"
        )
    if " " in p.name:
        problems.append(
            f"{name}: Invalid value: {go_quote(p.name)}: provider name cannot contain spaces"
        )
    if p.name in (".", ".."):
        problems.append(
            f"{name}: Invalid value: {go_quote(p.name)}: provider name cannot be '{p.name}'"
        )
    if p.name in seen:
        problems.append(f"{name}: Duplicate value: {go_quote(p.name)}")
    seen.add(p.name)

    if not p.api_version:
        problems.append(f"{path}.apiVersion: Required value")
    elif p.api_version not in PLUGIN_API_VERSIONS:
        problems.append(
            f"{path}.apiVersion: Unsupported value: {go_quote(p.api_version)}: "
            f"supported values: {_quoted_list(PLUGIN_API_VERSIONS)}"
        )

    if not p.match_images:
        problems.append(
            f"{path}.matchImages: Required value: at least 1 item in matchImages is required"
        )
    for i, pattern in enumerate(p.match_images):
        reason = _match_image_problem(pattern)
        if reason is not None:
            problems.append(
                f"{path}.matchImages[{i}]: Invalid value: {go_quote(pattern)}: {reason}"
            )

    if p.default_cache_duration is None:
        problems.append(f"{path}.defaultCacheDuration: Required value")
    elif p.default_cache_duration < 0:
        problems.append(
            f"{path}.defaultCacheDuration: Invalid value: "
            f"{go_quote(go_duration(p.default_cache_duration))}: must be greater than or equal to 0"
        )

    if p.token_attributes is not None:
        problems += _token_problems(f"{path}.tokenAttributes", p.api_version, p.token_attributes)
    return problems


def _validate(providers: Sequence[_RawProvider]) -> list[str]:
    problems: list[str] = []
    seen: set[str] = set()
    for i, provider in enumerate(providers):
        problems += _provider_problems(f"providers[{i}]", provider, seen)
    # Kubernetes' aggregate shows a repeated text once.
    return list(dict.fromkeys(problems))


def _finish(raw: _RawProvider, source: str) -> CredentialProvider:
    attrs = raw.token_attributes
    return CredentialProvider(
        name=raw.name,
        match_images=raw.match_images,
        default_cache_duration=(raw.default_cache_duration or 0) / _NS_PER_SECOND,
        api_version=raw.api_version,
        args=raw.args,
        env=raw.env,
        token_attributes=(
            TokenAttributes(
                service_account_token_audience=attrs.audience,
                cache_type=attrs.cache_type,
                require_service_account=bool(attrs.require_service_account),
                required_annotation_keys=attrs.required,
                optional_annotation_keys=attrs.optional,
            )
            if attrs is not None
            else None
        ),
        source=source,
    )


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


def _error(source: str, problems: Sequence[str]) -> ConfigError:
    return ConfigError(source=source, problems=problems)


def _load_file(path: Path) -> list[CredentialProvider]:
    """The validated providers of one file; raises :class:`ConfigError` naming the file."""
    source = str(path)
    doc = read_document(path, CONFIG_KIND)
    raw, problems = _decode_document(doc)
    if problems:
        raise _error(source, problems)
    problems = _validate(raw)
    if problems:
        raise _error(source, problems)
    return [_finish(p, source) for p in raw]


def _extension(name: str) -> str:
    """Go's ``filepath.Ext``: from the last dot of the name (``.yaml`` for ``.yaml``)."""
    dot = name.rfind(".")
    return name[dot:] if dot >= 0 else ""


def _config_files(directory: Path) -> Iterator[Path]:
    source = str(directory)
    try:
        with os.scandir(directory) as entries:
            names = sorted(
                entry.name
                for entry in entries
                if not entry.is_dir(follow_symlinks=False) and _extension(entry.name) in _SUFFIXES
            )
    except OSError as err:
        raise _error(source, [f"cannot read: {err.strerror or type(err).__name__}"]) from None
    if not names:
        raise _error(
            source, ["no configuration files (*.json, *.yaml, *.yml) found in the directory"]
        )
    return (directory / name for name in names)


def load_credential_provider_config(path: Path) -> CredentialProviderConfig:
    """Read and validate a ``CredentialProviderConfig`` file, or a directory of them.

    A directory contributes its ``*.json``, ``*.yaml`` and ``*.yml`` files (not
    subdirectories) in lexical order of their names; each file is checked on its own (field
    paths count providers within that file), then a name already used by an earlier file is an
    error of the later file.  Every problem raises :class:`~pullwarden.errors.ConfigError` with
    ``source`` set to the file (or the directory, when it holds no configuration file).
    """
    source = str(path)
    try:
        is_dir = path.is_dir()
        exists = is_dir or path.exists()
    except OSError as err:
        raise _error(source, [f"cannot read: {err.strerror or type(err).__name__}"]) from None
    if not exists:
        raise _error(source, ["cannot read: No such file or directory"])
    files = list(_config_files(path)) if is_dir else [path]
    providers: list[CredentialProvider] = []
    defined_in: dict[str, str] = {}
    for file in files:
        found = _load_file(file)
        duplicates = [
            f"providers[{i}].name: Duplicate value: {go_quote(p.name)}: already defined in "
            f"{defined_in[p.name]} (provider names must be unique across the configuration files)"
            for i, p in enumerate(found)
            if p.name in defined_in
        ]
        if duplicates:
            raise _error(str(file), duplicates)
        for p in found:
            defined_in[p.name] = p.source
        providers += found
    if not providers:
        raise _error(source, ["providers: Required value: at least 1 item in plugins is required"])
    return CredentialProviderConfig(tuple(providers))
