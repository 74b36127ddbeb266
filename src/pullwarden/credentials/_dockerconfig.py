"""Docker config documents and image pull secrets (spec §2.1, §2.2).

Two formats exist: ``config.json`` (``{"auths": {<location>: <entry>}, "HttpHeaders": {…}}``,
Secret type ``kubernetes.io/dockerconfigjson``) and the legacy ``.dockercfg`` (a bare
``{<location>: <entry>}`` map, Secret type ``kubernetes.io/dockercfg``).

Decoding follows Go's ``encoding/json`` as the kubelet uses it, because the decoded strings feed the
credential hash (spec §3) and must come out byte-for-byte the same:

* member names match struct fields case-insensitively (Go's folding, so ``USERNAME`` works),
  unknown members are ignored, a repeated member overwrites the earlier one, and JSON ``null``
  leaves a field as it was;
* a repeated ``auths`` object is merged into the earlier one, ``"auths": null`` clears it;
* invalid UTF-8 inside JSON strings becomes U+FFFD per byte, unpaired ``\\u`` surrogate escapes
  become U+FFFD;
* ``NaN``/``Infinity`` and other non-JSON are syntax errors; a value of the wrong JSON type is an
  error (even inside ``HttpHeaders``, which is otherwise ignored);
* nesting deeper than :data:`pullwarden._nesting.MAX_DEPTH` (256) levels, even in an ignored
  member, is an error (Go allows 10,000; Python's parser cannot recurse that far).

A non-empty ``auth`` member overrides ``username`` and ``password``.  It is decoded with Go's
base64 rules (padded standard alphabet if the trimmed value ends in ``=``, otherwise unpadded;
``\\r`` and ``\\n`` are skipped, anything else outside the alphabet is an error) and split at the
first ``:``.  The decoded bytes are kept exactly, as ``str`` via ``surrogateescape``.

Error messages never contain a password or ``auth`` value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from types import MappingProxyType
from typing import Final, TypeAlias

from pullwarden._gofmt import GO_SPACE
from pullwarden._gojson import go_bytes
from pullwarden._nesting import NestingError, loads_json, reject_constant
from pullwarden._values import frozen
from pullwarden.errors import DockerConfigError

__all__ = [
    "DOCKERCFG_KEY",
    "DOCKER_CONFIG_JSON_KEY",
    "SECRET_TYPE_DOCKERCFG",
    "SECRET_TYPE_DOCKER_CONFIG_JSON",
    "AuthEntry",
    "DockerConfig",
    "config_from_secret",
    "empty_config",
    "parse_config_json",
    "parse_dockercfg",
]

SECRET_TYPE_DOCKER_CONFIG_JSON: Final = "kubernetes.io/dockerconfigjson"
DOCKER_CONFIG_JSON_KEY: Final = ".dockerconfigjson"
SECRET_TYPE_DOCKERCFG: Final = "kubernetes.io/dockercfg"
DOCKERCFG_KEY: Final = ".dockercfg"

_AUTH_FORMAT_MESSAGE: Final = (
    "unable to parse auth field, must be formatted as base64(username:password)"
)


@frozen
class AuthEntry:
    """One decoded docker config entry: what the kubelet stores for a registry location."""

    username: str
    password: str
    email: str = ""

    def __repr__(self) -> str:
        password = "<redacted>" if self.password else "''"
        return f"AuthEntry(username={self.username!r}, password={password})"


DockerConfig: TypeAlias = Mapping[str, AuthEntry]
"""Registry location (as written in the document) → entry.  Parsers return read-only mappings."""


def empty_config() -> DockerConfig:
    """A read-only docker config without entries."""
    return MappingProxyType({})


# --------------------------------------------------------------------------------------------
# Go-flavoured JSON loading
# --------------------------------------------------------------------------------------------


class _Object:
    """A JSON object with its members in document order, duplicates kept."""

    __slots__ = ("members",)

    def __init__(self, members: list[tuple[str, object]]) -> None:
        self.members = members


class _Number:
    """Stands for any JSON number; the docker config never needs a number's value."""

    __slots__ = ()


_NUMBER: Final = _Number()
_SURROGATES = re.compile("[\ud800-\udfff]")


def _go_string(value: str) -> str:
    # Python keeps unpaired surrogate escapes; Go turns each into U+FFFD.
    return _SURROGATES.sub("\ufffd", value)


def _object_hook(pairs: list[tuple[str, object]]) -> _Object:
    return _Object([(_go_string(k), _go_string(v) if isinstance(v, str) else v) for k, v in pairs])


def _number(_text: str) -> _Number:
    return _NUMBER


def _load(data: bytes) -> object:
    # Go replaces each byte of invalid UTF-8 inside a string with U+FFFD (outside strings such a
    # byte is a syntax error either way).  ``surrogateescape`` yields one surrogate per bad byte.
    text = _SURROGATES.sub("\ufffd", bytes(data).decode("utf-8", "surrogateescape"))
    try:
        return loads_json(
            text,
            object_pairs_hook=_object_hook,
            parse_int=_number,
            parse_float=_number,
            parse_constant=reject_constant,
        )
    except json.JSONDecodeError as exc:
        # ``exc.msg`` is a fixed phrase; the document itself is never quoted.
        raise DockerConfigError(
            f"invalid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})"
        ) from None
    except NestingError as exc:
        raise DockerConfigError(
            f"invalid JSON: {exc} (line {exc.line}, column {exc.column})"
        ) from None
    except ValueError:
        raise DockerConfigError("invalid JSON") from None


def _kind(value: object) -> str:
    """The JSON type name Go uses in ``cannot unmarshal <kind> into …`` errors."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, str):
        return "string"
    if isinstance(value, _Object):
        return "object"
    if isinstance(value, list):
        return "array"
    return "number"


# Characters outside ASCII that Go's field-name folding (upper(lower(r))) maps onto ASCII letters.
_FOLD_TO_ASCII: Final = {"\u017f": "S", "\u212a": "K", "\u0130": "I", "\u0131": "I"}


def _fold(name: str) -> str:
    """Go's case-insensitive key for matching member names against struct fields."""
    if name.isascii():
        return name.upper()
    return "".join(_FOLD_TO_ASCII.get(c, c.upper() if c.isascii() else c) for c in name)


def _type_error(kind: str, target: str) -> DockerConfigError:
    return DockerConfigError(f"json: cannot unmarshal {kind} into {target}")


# --------------------------------------------------------------------------------------------
# Go-flavoured base64 for the ``auth`` member
# --------------------------------------------------------------------------------------------

_B64_ALPHABET: Final = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_B64_VALUES: Final = tuple(_B64_ALPHABET.find(bytes([b])) for b in range(256))
_PAD: Final = ord("=")
_CR: Final = ord("\r")
_LF: Final = ord("\n")


class _Base64Error(Exception):
    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


def _skip_newlines(src: bytes, pos: int) -> int:
    while pos < len(src) and src[pos] in (_CR, _LF):
        pos += 1
    return pos


def _b64decode(src: bytes, *, padded: bool) -> bytes:
    """Decode like Go's ``base64.StdEncoding`` (``padded``) or ``RawStdEncoding``.

    Works in groups of four symbols; CR and LF are skipped anywhere.  Raises
    :class:`_Base64Error` with the byte offset Go reports.
    """
    out = bytearray()
    end = len(src)
    pos = 0
    while pos < end:
        acc = 0
        count = 0  # alphabet symbols collected for this group
        saw_padding = False
        while count < 4:
            if pos == end:
                if count == 0:
                    return bytes(out)
                if count == 1 or padded:
                    raise _Base64Error(pos - count)
                break
            byte = src[pos]
            pos += 1
            value = _B64_VALUES[byte]
            if value >= 0:
                acc = (acc << 6) | value
                count += 1
                continue
            if byte in (_CR, _LF):
                continue
            if not padded or byte != _PAD or count < 2:
                raise _Base64Error(pos - 1)
            if count == 2:  # a second "=" must follow (newlines may sit in between)
                pos = _skip_newlines(src, pos)
                if pos == end:
                    raise _Base64Error(end)
                if src[pos] != _PAD:
                    raise _Base64Error(pos - 1)
                pos += 1
            pos = _skip_newlines(src, pos)
            if pos < end:
                raise _Base64Error(pos)  # data after the padding
            saw_padding = True
            break
        acc <<= 6 * (4 - count)
        out += acc.to_bytes(3, "big")[: count - 1]
        if saw_padding:
            break
    return bytes(out)


def _decode_auth(auth: str) -> tuple[str, str]:
    """Split a base64 ``username:password`` into its two halves (bytes kept exactly)."""
    padded = auth.rstrip(GO_SPACE).endswith("=")
    try:
        decoded = _b64decode(go_bytes(auth), padded=padded)
    except _Base64Error as exc:
        raise DockerConfigError(f"illegal base64 data at input byte {exc.offset}") from None
    username, colon, password = decoded.partition(b":")
    if not colon:
        raise DockerConfigError(_AUTH_FORMAT_MESSAGE)
    return (
        username.decode("utf-8", "surrogateescape"),
        password.decode("utf-8", "surrogateescape"),
    )


# --------------------------------------------------------------------------------------------
# Documents
# --------------------------------------------------------------------------------------------

_ENTRY_FIELDS: Final = {"USERNAME": "username", "PASSWORD": "password", "EMAIL": "email"}
_ENTRY_TYPE: Final = "Go value of type credentialprovider.dockerConfigEntryWithAuth"
_AUTHS_TYPE: Final = (
    "Go struct field DockerConfigJSON.auths of type credentialprovider.DockerConfig"
)


def _entry(value: object) -> AuthEntry:
    if value is None:
        # Go hands ``null`` to the entry's decoder, which yields an entry with empty fields.
        return AuthEntry("", "")
    if not isinstance(value, _Object):
        raise _type_error(_kind(value), _ENTRY_TYPE)
    fields = {"username": "", "password": "", "email": ""}
    auth = ""
    for name, member in value.members:
        folded = _fold(name)
        if folded == "AUTH":
            field = "auth"
        else:
            found = _ENTRY_FIELDS.get(folded)
            if found is None:
                continue  # unknown members are ignored, whatever their type
            field = found
        if member is None:
            continue  # null leaves a Go string field untouched
        if not isinstance(member, str):
            raise _type_error(
                _kind(member),
                f"Go struct field dockerConfigEntryWithAuth.{field} of type string",
            )
        if field == "auth":
            auth = member
        else:
            fields[field] = member
    username, password = fields["username"], fields["password"]
    if auth:
        username, password = _decode_auth(auth)
    return AuthEntry(username, password, fields["email"])


def _add_entries(target: dict[str, AuthEntry], document: _Object) -> None:
    for location, value in document.members:
        entry = _entry(value)
        target.pop(location, None)  # the last occurrence wins (and takes the later position)
        target[location] = entry


def _check_http_headers(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, _Object):
        raise _type_error(
            _kind(value), "Go struct field DockerConfigJSON.HttpHeaders of type map[string]string"
        )
    for _name, header in value.members:
        if header is not None and not isinstance(header, str):
            raise _type_error(
                _kind(header), "Go struct field DockerConfigJSON.HttpHeaders of type string"
            )


def parse_config_json(data: bytes) -> DockerConfig:
    """Decode a ``config.json`` / ``.dockerconfigjson`` document; only ``auths`` is returned."""
    document = _load(data)
    if document is None:
        return empty_config()
    if not isinstance(document, _Object):
        raise _type_error(_kind(document), "Go value of type credentialprovider.DockerConfigJSON")
    auths: dict[str, AuthEntry] | None = None
    for name, value in document.members:
        folded = _fold(name)
        if folded == "AUTHS":
            if value is None:
                auths = None
                continue
            if not isinstance(value, _Object):
                raise _type_error(_kind(value), _AUTHS_TYPE)
            if auths is None:
                auths = {}
            _add_entries(auths, value)
        elif folded == "HTTPHEADERS":
            _check_http_headers(value)
    return MappingProxyType(auths if auths is not None else {})


def parse_dockercfg(data: bytes) -> DockerConfig:
    """Decode a legacy ``.dockercfg`` document (a bare location → entry map)."""
    document = _load(data)
    if document is None:
        return empty_config()
    if not isinstance(document, _Object):
        raise _type_error(_kind(document), "Go value of type credentialprovider.DockerConfig")
    entries: dict[str, AuthEntry] = {}
    _add_entries(entries, document)
    return MappingProxyType(entries)


def config_from_secret(secret_type: str, data: Mapping[str, bytes]) -> DockerConfig | None:
    """The docker config an image pull Secret supplies, or ``None`` if the kubelet ignores it.

    A ``kubernetes.io/dockerconfigjson`` Secret needs a non-empty ``.dockerconfigjson`` key, a
    ``kubernetes.io/dockercfg`` Secret a non-empty ``.dockercfg`` key; any other type, the other
    format's key, or empty data means the Secret is skipped (spec §2.1).  A document that cannot
    be decoded raises :class:`~pullwarden.errors.DockerConfigError`.
    """
    if secret_type == SECRET_TYPE_DOCKER_CONFIG_JSON:
        raw = data.get(DOCKER_CONFIG_JSON_KEY)
        return parse_config_json(raw) if raw else None
    if secret_type == SECRET_TYPE_DOCKERCFG:
        raw = data.get(DOCKERCFG_KEY)
        return parse_dockercfg(raw) if raw else None
    return None
