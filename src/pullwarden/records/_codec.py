"""The kubelet's on-disk JSON form of pull intents and pulled records (spec §4.4-§4.6).

Encoding reproduces, byte for byte, what a kubelet's strict JSON serializer writes for the
``kubelet.config.k8s.io`` scheme: one compact object, ``kind`` then ``apiVersion`` then the
fields in struct order, Go string escaping (:func:`pullwarden._gojson.quote`), map keys sorted by
their UTF-8 bytes, ``omitempty`` fields left out when empty, times as whole-second UTC RFC 3339
(the zero time as ``null``), and a single trailing newline.  The bytes are assembled by hand;
:mod:`json` never escapes anything on the write side.

Decoding is as strict as the kubelet's: the document must be a JSON object whose ``kind`` and
``apiVersion`` name one of the four registered types, field names match case-sensitively,
unknown and duplicate fields (at any depth) are rejected, and every JSON type is checked.  Every
failure is a :class:`~pullwarden.errors.RecordDecodeError`; messages name fields, never values.

Choices where Go's decoder is lenient, kept so that we read what a kubelet reads:

* A missing field and a JSON ``null`` both give the Go zero value: ``""`` for strings (so a
  record without ``imageRef`` decodes with ``image_ref == ""``), ``false`` for
  ``nodePodsAccessible``, empty for lists and maps, :data:`ZERO_TIME` for ``lastUpdatedTime``, an
  empty credentials/secret/service-account object for a ``null`` element.
* ``lastUpdatedTime`` is parsed the way Go's ``time.Parse(time.RFC3339, ...)`` parses: 4-digit
  year, 1- or 2-digit hour, ``.`` or ``,`` fractional seconds of any length (truncated to
  microseconds here), ``Z`` or a ``±hh:mm`` offset (hours up to 24, minutes up to 60).  Times
  Python cannot represent (year 0, or outside years 1-9999 once in UTC) are decode errors.
* Escaped lone UTF-16 surrogates (``"\\ud800"``) decode to U+FFFD as in Go.

Where we are stricter than a kubelet (each only makes a record count as unreadable, which fails
safe): bytes that are not valid UTF-8 anywhere in the file, YAML documents (the kubelet's
universal decoder would also accept a YAML file with the same content; no kubelet writes one),
and nesting deeper than :data:`pullwarden._nesting.MAX_DEPTH` (256) levels, which no valid
record comes near (it has five).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final, NamedTuple, TypeVar

from pullwarden._gojson import as_utc, format_rfc3339, go_bytes, quote
from pullwarden._nesting import check_json, reject_constant
from pullwarden.errors import RecordDecodeError
from pullwarden.records._model import (
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
    RecordObject,
)

__all__ = [
    "API_VERSIONS",
    "CURRENT_VERSION",
    "GROUP",
    "KIND_INTENT",
    "KIND_RECORD",
    "V1ALPHA1",
    "V1BETA1",
    "ZERO_TIME",
    "RecordKey",
    "RecordSummary",
    "decode",
    "decode_versioned",
    "encode",
    "exact_record_key",
    "exact_record_summary",
    "exact_record_time",
    "summarize",
]

GROUP: Final = "kubelet.config.k8s.io"
V1ALPHA1: Final = GROUP + "/v1alpha1"
V1BETA1: Final = GROUP + "/v1beta1"
CURRENT_VERSION: Final = V1BETA1
API_VERSIONS: Final = (V1ALPHA1, V1BETA1)
"""Every apiVersion this codec reads and writes, oldest first."""

KIND_INTENT: Final = "ImagePullIntent"
KIND_RECORD: Final = "ImagePulledRecord"

ZERO_TIME: Final = datetime(1, 1, 1, tzinfo=UTC)
"""Go's zero ``time.Time``: what ``lastUpdatedTime: null`` (or a missing one) decodes to."""


# --------------------------------------------------------------------------------------------
# Encoding
# --------------------------------------------------------------------------------------------

_INTENT_HEAD: Final = {
    v: b'{"kind":"ImagePullIntent","apiVersion":"' + v.encode() + b'","image":'
    for v in API_VERSIONS
}
_RECORD_HEAD: Final = {
    v: b'{"kind":"ImagePulledRecord","apiVersion":"' + v.encode() + b'","lastUpdatedTime":'
    for v in API_VERSIONS
}


def _encode_time(t: datetime) -> bytes:
    """``metav1.Time`` on the wire: ``null`` for the zero time, else whole-second UTC."""
    t = as_utc(t)
    if t == ZERO_TIME:
        return b"null"
    return b'"' + format_rfc3339(t).encode() + b'"'


def _encode_credentials(creds: ImagePullCredentials, out: list[bytes]) -> None:
    out.append(b"{")
    sep = b""
    if creds.kubernetes_secrets:
        out.append(b'"kubernetesSecrets":[')
        first = True
        for s in creds.kubernetes_secrets:
            out.append(b'{"uid":' if first else b',{"uid":')
            first = False
            out.append(quote(s.uid))
            out.append(b',"namespace":')
            out.append(quote(s.namespace))
            out.append(b',"name":')
            out.append(quote(s.name))
            out.append(b',"credentialHash":')
            out.append(quote(s.credential_hash))
            out.append(b"}")
        out.append(b"]")
        sep = b","
    if creds.kubernetes_service_accounts:
        out.append(sep + b'"kubernetesServiceAccounts":[')
        first = True
        for a in creds.kubernetes_service_accounts:
            out.append(b'{"uid":' if first else b',{"uid":')
            first = False
            out.append(quote(a.uid))
            out.append(b',"namespace":')
            out.append(quote(a.namespace))
            out.append(b',"name":')
            out.append(quote(a.name))
            out.append(b"}")
        out.append(b"]")
        sep = b","
    if creds.node_pods_accessible:
        out.append(sep + b'"nodePodsAccessible":true')
    out.append(b"}")


def encode(obj: ImagePullIntent | ImagePulledRecord, api_version: str = CURRENT_VERSION) -> bytes:
    """The exact bytes a kubelet writes for ``obj`` in ``api_version`` (default v1beta1).

    Raises :class:`ValueError` for an apiVersion other than v1alpha1/v1beta1,
    :class:`TypeError` for an object that is neither an intent nor a pulled record, and
    :class:`OverflowError` for a time that falls outside years 1-9999 once converted to UTC.
    """
    if isinstance(obj, ImagePullIntent):
        head = _INTENT_HEAD.get(api_version)
        if head is None:
            raise ValueError(f"unsupported apiVersion {api_version!r}")
        return head + quote(obj.image) + b"}\n"
    if not isinstance(obj, ImagePulledRecord):
        raise TypeError(f"cannot encode {type(obj).__name__}")
    head = _RECORD_HEAD.get(api_version)
    if head is None:
        raise ValueError(f"unsupported apiVersion {api_version!r}")
    out = [head, _encode_time(obj.last_updated_time), b',"imageRef":', quote(obj.image_ref)]
    mapping = obj.credential_mapping
    if mapping:
        out.append(b',"credentialMapping":{')
        if len(mapping) == 1:
            keys: list[str] = list(mapping)
        else:
            # Go sorts map keys by their bytes; code point order differs only for surrogates.
            keys = sorted(mapping, key=go_bytes)
        first = True
        for key in keys:
            if not first:
                out.append(b",")
            first = False
            out.append(quote(key))
            out.append(b":")
            _encode_credentials(mapping[key], out)
        out.append(b"}")
    out.append(b"}\n")
    return b"".join(out)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class _Invalid(Exception):
    """A field-level problem; ``path`` grows as the exception travels outwards."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(path, problem)
        self.path = path
        self.problem = problem


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    d = dict(pairs)
    if len(d) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)
    return d


# The C scanner is called directly: ``JSONDecoder.decode`` adds two regex passes.  Duplicate keys
# are caught by the hook (about 0.2 µs per object; counting ``":`` in the text was no faster).
_scan_once: Final[Callable[[str, int], tuple[Any, int]]] = json.JSONDecoder(  # type: ignore[attr-defined]
    object_pairs_hook=_object_pairs, parse_constant=reject_constant
).scan_once
_JSON_WS: Final = " \t\n\r"


def _parse_json(text: str) -> Any:
    n = len(text)
    start = n - len(text.lstrip(_JSON_WS)) if n and text[0] in _JSON_WS else 0
    try:
        doc, end = _scan_once(text, start)
    except StopIteration as e:
        raise ValueError(f"expecting a value at char {e.value}") from None
    if end != n and text[end:].strip(_JSON_WS):
        raise ValueError(f"extra data at char {end}")
    return doc


_INTENT_FIELDS: Final = frozenset({"kind", "apiVersion", "image"})
_RECORD_FIELDS: Final = frozenset(
    {"kind", "apiVersion", "lastUpdatedTime", "imageRef", "credentialMapping"}
)
_CREDENTIAL_FIELDS: Final = frozenset(
    {"kubernetesSecrets", "kubernetesServiceAccounts", "nodePodsAccessible"}
)
_SECRET_FIELDS: Final = frozenset({"uid", "namespace", "name", "credentialHash"})
_SERVICE_ACCOUNT_FIELDS: Final = frozenset({"uid", "namespace", "name"})

_EMPTY_CREDENTIALS: Final = ImagePullCredentials()


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if value is True or value is False:
        return "boolean"
    if isinstance(value, str):
        return "string"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(name: str) -> str:
    return repr(name if len(name) <= 64 else name[:61] + "...")


def _unknown(obj: dict[str, Any], known: frozenset[str]) -> _Invalid:
    extra = sorted(k for k in obj if k not in known)
    return _Invalid("", f"unknown field {_short(extra[0])}")


def _str(value: object, field: str) -> str:
    if type(value) is str:
        return value
    if value is None:
        return ""
    raise _Invalid("." + field, f"expected a string, got {_json_type(value)}")


_Coordinates = TypeVar("_Coordinates", ImagePullSecret, ImagePullServiceAccount)

# JSON field order of each list element; the constructor takes the fields in the same order.
_SECRET_ORDER: Final = ("uid", "namespace", "name", "credentialHash")
_SERVICE_ACCOUNT_ORDER: Final = ("uid", "namespace", "name")


def _coordinates(
    value: object, cls: type[_Coordinates], order: tuple[str, ...], fields: frozenset[str]
) -> tuple[_Coordinates, ...]:
    """A ``kubernetesSecrets`` or ``kubernetesServiceAccounts`` array (null elements → zero)."""
    if value is None:
        return ()
    if type(value) is not list:
        raise _Invalid("", f"expected an array, got {_json_type(value)}")
    out = []
    for i, item in enumerate(value):
        if item is None:
            out.append(cls(*("" for _ in order)))
            continue
        if type(item) is not dict:
            raise _Invalid(f"[{i}]", f"expected an object, got {_json_type(item)}")
        if not item.keys() <= fields:
            raise _Invalid(f"[{i}]", _unknown(item, fields).problem)
        get = item.get
        try:
            out.append(cls(*(_str(get(name), name) for name in order)))
        except _Invalid as e:
            raise _Invalid(f"[{i}]{e.path}", e.problem) from None
    return tuple(out)


def _credentials(value: object) -> ImagePullCredentials:
    if value is None:
        return _EMPTY_CREDENTIALS
    if type(value) is not dict:
        raise _Invalid("", f"expected an object, got {_json_type(value)}")
    if not value.keys() <= _CREDENTIAL_FIELDS:
        raise _unknown(value, _CREDENTIAL_FIELDS)
    get = value.get
    try:
        secrets = _coordinates(
            get("kubernetesSecrets"), ImagePullSecret, _SECRET_ORDER, _SECRET_FIELDS
        )
    except _Invalid as e:
        raise _Invalid(".kubernetesSecrets" + e.path, e.problem) from None
    try:
        accounts = _coordinates(
            get("kubernetesServiceAccounts"),
            ImagePullServiceAccount,
            _SERVICE_ACCOUNT_ORDER,
            _SERVICE_ACCOUNT_FIELDS,
        )
    except _Invalid as e:
        raise _Invalid(".kubernetesServiceAccounts" + e.path, e.problem) from None
    node = get("nodePodsAccessible")
    if node is not True and node is not False:
        if node is not None:
            raise _Invalid(".nodePodsAccessible", f"expected a boolean, got {_json_type(node)}")
        node = False
    return ImagePullCredentials(secrets, accounts, node)


def _mapping(value: object) -> dict[str, ImagePullCredentials]:
    if value is None:
        return {}
    if type(value) is not dict:
        raise _Invalid("", f"expected an object, got {_json_type(value)}")
    out = {}
    for key, creds in value.items():
        try:
            out[key] = _credentials(creds)
        except _Invalid as e:
            raise _Invalid(f"[{_short(key)}]{e.path}", e.problem) from None
    return out


# Go's time.Parse with the RFC 3339 layout (see the module docstring for the accepted forms).
_TIME_RE: Final = re.compile(
    r"(\d{4})-(\d\d)-(\d\d)T(\d\d?):(\d\d):(\d\d)(?:[.,](\d+))?(?:(Z)|([+-])(\d\d):(\d\d))",
    re.ASCII,
)
_match_time: Final = _TIME_RE.fullmatch
_time_cache: dict[str, datetime] = {}
_TIME_CACHE_SIZE: Final = 4096


def _parse_time(value: str) -> datetime:
    cached = _time_cache.get(value)
    if cached is not None:
        return cached
    m = _match_time(value)
    if m is None:
        raise _Invalid("", f"not an RFC 3339 time: {_short(value)}")
    year, month, day, hour, minute, second, frac, z, sign, oh, om = m.groups()
    micro = int(frac[:6].ljust(6, "0")) if frac else 0
    try:
        if int(hour) >= 24 or int(minute) >= 60 or int(second) >= 60:
            raise ValueError("time of day out of range")
        t = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second), micro, UTC
        )
        if z is None:
            offset_h, offset_m = int(oh), int(om)
            if offset_h > 24 or offset_m > 60:
                raise ValueError("time zone offset out of range")
            offset = timedelta(hours=offset_h, minutes=offset_m)
            t = t - offset if sign == "+" else t + offset
    except (ValueError, OverflowError) as e:
        raise _Invalid("", f"invalid time {_short(value)}: {e}") from None
    if len(_time_cache) >= _TIME_CACHE_SIZE:
        _time_cache.clear()
    _time_cache[value] = t
    return t


def _replace_surrogates(value: Any) -> Any:
    """Go decodes an escaped lone surrogate to U+FFFD; Python keeps the surrogate."""
    if type(value) is str:
        if any("\ud800" <= c <= "\udfff" for c in value):
            return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in value)
        return value
    if type(value) is dict:
        out = {_replace_surrogates(k): _replace_surrogates(v) for k, v in value.items()}
        if len(out) != len(value):  # two keys that differ only in lone surrogates
            raise _Duplicate("\ufffd")
        return out
    if type(value) is list:
        return [_replace_surrogates(v) for v in value]
    return value


def _load(text: str) -> dict[str, Any]:
    try:
        check_json(text)
        doc = _parse_json(text)
    except _Duplicate as e:
        raise RecordDecodeError(f"duplicate field {_short(e.key)}") from None
    except ValueError as e:  # NestingError included
        raise RecordDecodeError(f"invalid JSON: {e}") from None
    if type(doc) is not dict:
        raise RecordDecodeError(f"expected a JSON object, got {_json_type(doc)}")
    if "\\ud" in text or "\\uD" in text:
        try:
            doc = _replace_surrogates(doc)
        except _Duplicate as e:
            raise RecordDecodeError(f"duplicate field {_short(e.key)}") from None
    result: dict[str, Any] = doc
    return result


# --------------------------------------------------------------------------------------------
# The exact form: what a kubelet (or pullwarden) writes, read without a JSON parser
# --------------------------------------------------------------------------------------------
#
# A file that is, character for character, in the form the encoder above produces, and whose
# strings need no escape, is read with a few regular expressions: kind and apiVersion first,
# every field in struct order, no whitespace, each string a run of characters other than '"',
# '\' and control characters (so that its text is its value), a whole-second UTC time, one
# trailing newline at most.  Such a text has no unknown, duplicated or mistyped field by
# construction (a repeated credentialMapping key is counted), and the strict decoder would read
# it to the very same object.  Anything else -- other spacing or order, an escape, a null, an
# empty list, another time form, a time out of range -- goes to the strict decoder, which
# accepts or rejects it with its own message.

_STR: Final = r'[^"\\\x00-\x1f]*'
_VERSION: Final = r"kubelet\.config\.k8s\.io/(v1beta1|v1alpha1)"
_EXACT_INTENT: Final = re.compile(
    rf'\{{"kind":"ImagePullIntent","apiVersion":"{_VERSION}","image":"({_STR})"\}}\n?'
)
_EXACT_RECORD: Final = re.compile(
    rf'\{{"kind":"ImagePulledRecord","apiVersion":"{_VERSION}",'
    r'"lastUpdatedTime":"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)",'
    rf'"imageRef":"({_STR})"(?:,"credentialMapping":\{{(.+)\}})?\}}\n?'
)
_SECRET_TEXT: Final = (
    rf'\{{"uid":"({_STR})","namespace":"({_STR})","name":"({_STR})","credentialHash":"({_STR})"\}}'
)
_ACCOUNT_TEXT: Final = rf'\{{"uid":"({_STR})","namespace":"({_STR})","name":"({_STR})"\}}'
_SECRET_ITEM: Final = re.compile(_SECRET_TEXT)
_ACCOUNT_ITEM: Final = re.compile(_ACCOUNT_TEXT)


def _no_groups(pattern: str) -> str:
    """``pattern`` with its capturing groups made non-capturing (it escapes no parenthesis)."""
    return re.sub(r"\((?!\?)", "(?:", pattern)


# A part after the first needs a comma; the first comes straight after the opening brace.
_NEXT: Final = r"(?:(?<=\{)|(?<=\]),)"
_EXACT_ENTRY: Final = re.compile(
    rf'"({_STR})":(\{{'
    rf'(?:"kubernetesSecrets":\[({_no_groups(_SECRET_TEXT)}(?:,{_no_groups(_SECRET_TEXT)})*)\])?'
    rf"(?:{_NEXT}"
    rf'"kubernetesServiceAccounts":\[({_no_groups(_ACCOUNT_TEXT)}'
    rf"(?:,{_no_groups(_ACCOUNT_TEXT)})*)\])?"
    rf'(?:{_NEXT}"nodePodsAccessible":(true))?'
    r"\})"
)
# The whole record checked in one pass (entries without groups), for exact_record_key.
_ENTRY_CHECK: Final = _no_groups(_EXACT_ENTRY.pattern)
_CHECK_RECORD: Final = re.compile(
    rf'\{{"kind":"ImagePulledRecord","apiVersion":"{_VERSION}",'
    r'"lastUpdatedTime":"([0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z)",'
    rf'"imageRef":"({_STR})"'
    rf'(?:,"credentialMapping":\{{{_ENTRY_CHECK}((?:,{_ENTRY_CHECK})*)\}})?\}}\n?'
)
_check_record: Final = _CHECK_RECORD.fullmatch
_match_intent: Final = _EXACT_INTENT.fullmatch
_match_record: Final = _EXACT_RECORD.fullmatch
_match_entry: Final = _EXACT_ENTRY.match
_find_secrets: Final = _SECRET_ITEM.findall
_find_accounts: Final = _ACCOUNT_ITEM.findall
_from_iso: Final = datetime.fromisoformat
_VERSIONS_BY_SUFFIX: Final = {"v1beta1": V1BETA1, "v1alpha1": V1ALPHA1}

# Many records carry the same credentials (a team's pull Secret, node-wide access): their text
# maps to one shared, immutable object, which saves the building and the memory.
_credentials_memo: dict[str, ImagePullCredentials] = {}
_CREDENTIALS_MEMO_SIZE: Final = 8192


def _exact_credentials(m: re.Match[str]) -> ImagePullCredentials:
    text = m[2]
    creds = _credentials_memo.get(text)
    if creds is None:
        secrets, accounts, node = m.group(3, 4, 5)
        creds = ImagePullCredentials(
            tuple([ImagePullSecret(*t) for t in _find_secrets(secrets)]) if secrets else (),
            tuple([ImagePullServiceAccount(*t) for t in _find_accounts(accounts)])
            if accounts
            else (),
            node is not None,
        )
        if len(_credentials_memo) >= _CREDENTIALS_MEMO_SIZE:
            _credentials_memo.clear()
        _credentials_memo[text] = creds
    return creds


def _exact_entries(body: str) -> list[re.Match[str]] | None:
    """The entries of a ``credentialMapping`` body in the exact form (keys distinct), or None."""
    entries = []
    pos, end = 0, len(body)
    while True:
        e = _match_entry(body, pos)
        if e is None:
            return None
        entries.append(e)
        pos = e.end()
        if pos == end:
            break
        if body[pos] != ",":
            return None
        pos += 1
    if len(entries) > 1 and len({e[1] for e in entries}) != len(entries):
        return None  # a repeated key: the strict decoder names it
    return entries


def _decode_exact(text: str) -> tuple[RecordObject, str] | None:
    """The object and apiVersion of a file in the exact form; ``None`` for any other text."""
    m = _match_record(text)
    if m is None:
        m = _match_intent(text)
        if m is None:
            return None
        return ImagePullIntent(m[2]), _VERSIONS_BY_SUFFIX[m[1]]
    version, when, image_ref, body = m.groups()
    try:
        t = _from_iso(when)
    except ValueError:  # out of range: the strict decoder says which way
        return None
    mapping: dict[str, ImagePullCredentials] = {}
    if body is not None:
        entries = _exact_entries(body)
        if entries is None:
            return None
        for e in entries:
            mapping[e[1]] = _exact_credentials(e)
    return ImagePulledRecord(image_ref, t, mapping), _VERSIONS_BY_SUFFIX[version]


class RecordKey(NamedTuple):
    """What :func:`exact_record_key` reads of a record file."""

    api_version: str
    image_ref: str
    last_updated: datetime


def exact_record_key(data: bytes) -> RecordKey | None:
    """(apiVersion, imageRef, lastUpdatedTime) of a pulled record file in the exact form,
    without building the record.

    Not ``None`` exactly when :func:`decode_versioned` would read ``data`` by the exact path
    to an :class:`ImagePulledRecord`: the whole text is checked (by one regular expression
    for a record with one image name), only nothing is built.
    """
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    m = _check_record(text)
    if m is None:
        return None
    version, when, image_ref, more = m.groups()
    try:
        t = _from_iso(when)
    except ValueError:
        return None
    if more:  # two names or more: are they distinct?
        body = _match_record(text)[4]  # type: ignore[index]
        if _exact_entries(body) is None:
            return None
    return RecordKey(_VERSIONS_BY_SUFFIX[version], image_ref, t)


class RecordSummary(NamedTuple):
    """What a listing shows of one pulled record (``records ls``)."""

    image_ref: str
    names: tuple[str, ...]
    """The image names of its credential mapping, in the record's order."""
    secrets: int
    service_accounts: int
    node_wide: bool
    last_updated: str
    """``lastUpdatedTime`` as :func:`~pullwarden._gojson.format_rfc3339` writes it."""


def summarize(record: ImagePulledRecord) -> RecordSummary:
    """The :class:`RecordSummary` of a record."""
    secrets = accounts = 0
    node_wide = False
    for c in record.credential_mapping.values():
        secrets += len(c.kubernetes_secrets)
        accounts += len(c.kubernetes_service_accounts)
        node_wide = node_wide or c.node_pods_accessible
    return RecordSummary(
        record.image_ref,
        tuple(record.credential_mapping),
        secrets,
        accounts,
        node_wide,
        format_rfc3339(record.last_updated_time),
    )


_SECRET_START: Final = '{"uid":'  # each item of a list in the exact form starts so, once


def exact_record_summary(data: bytes) -> RecordSummary | None:
    """``summarize(decode(data))`` for a record file in the exact form, without building the
    record; ``None`` for any other file (exactly when :func:`exact_record_key` is)."""
    try:
        text = data.decode()
    except UnicodeDecodeError:
        return None
    m = _match_record(text)
    if m is None:
        return None
    _, when, image_ref, body = m.groups()
    try:
        _from_iso(when)  # in range; as written, it is what format_rfc3339 writes
    except ValueError:
        return None
    if body is None:
        return RecordSummary(image_ref, (), 0, 0, False, when)
    entries = _exact_entries(body)
    if entries is None:
        return None
    secrets = accounts = 0
    node_wide = False
    for e in entries:
        listed, held, node = e.group(3, 4, 5)
        if listed:
            secrets += listed.count(_SECRET_START)
        if held:
            accounts += held.count(_SECRET_START)
        node_wide = node_wide or node is not None
    return RecordSummary(
        image_ref, tuple(e[1] for e in entries), secrets, accounts, node_wide, when
    )


_CURRENT_HEAD: Final = _RECORD_HEAD[CURRENT_VERSION] + b'"'
_TIME_AT: Final = slice(len(_CURRENT_HEAD), len(_CURRENT_HEAD) + len("2006-01-02T15:04:05Z"))


def exact_record_time(data: bytes) -> datetime:
    """The ``lastUpdatedTime`` of a file :func:`exact_record_key` accepted (read where the
    exact v1beta1 form puts it; any other accepted file is checked again)."""
    if data.startswith(_CURRENT_HEAD):
        return _from_iso(data[_TIME_AT].decode())
    key = exact_record_key(data)
    if key is None:
        raise ValueError("not a record in the exact form")
    return key[2]


def decode_versioned(data: bytes) -> tuple[RecordObject, str]:
    """Decode a record file strictly; return the object and the apiVersion it was stored in."""
    try:
        text = data.decode()
    except UnicodeDecodeError as e:
        raise RecordDecodeError(f"not valid UTF-8 ({e.reason} at byte {e.start})") from None
    except AttributeError:
        raise RecordDecodeError(f"expected bytes, got {type(data).__name__}") from None
    fast = _decode_exact(text)
    if fast is not None:
        return fast
    return _decode_strict(text)


def _decode_strict(text: str) -> tuple[RecordObject, str]:
    """The general decoder: any JSON a kubelet's strict decoder accepts, with its errors."""
    doc = _load(text)
    kind = doc.get("kind")
    api_version = doc.get("apiVersion")
    if type(kind) is not str or not kind:
        raise RecordDecodeError("object 'kind' is missing or not a string")
    if type(api_version) is not str or not api_version:
        raise RecordDecodeError("object 'apiVersion' is missing or not a string")
    if api_version not in API_VERSIONS or (kind != KIND_RECORD and kind != KIND_INTENT):
        raise RecordDecodeError(
            f"no kind {_short(kind)} is registered for version {_short(api_version)}"
        )
    get = doc.get
    obj: RecordObject
    try:
        if kind == KIND_RECORD:
            if not doc.keys() <= _RECORD_FIELDS:
                raise _unknown(doc, _RECORD_FIELDS)
            raw_time = get("lastUpdatedTime")
            if type(raw_time) is str:
                try:
                    when = _parse_time(raw_time)
                except _Invalid as e:
                    raise _Invalid(".lastUpdatedTime", e.problem) from None
            elif raw_time is None:
                when = ZERO_TIME
            else:
                raise _Invalid(".lastUpdatedTime", f"expected a string, got {_json_type(raw_time)}")
            image_ref = _str(get("imageRef"), "imageRef")
            try:
                mapping = _mapping(get("credentialMapping"))
            except _Invalid as e:
                raise _Invalid(".credentialMapping" + e.path, e.problem) from None
            obj = ImagePulledRecord(image_ref, when, mapping)
        else:
            if not doc.keys() <= _INTENT_FIELDS:
                raise _unknown(doc, _INTENT_FIELDS)
            obj = ImagePullIntent(_str(get("image"), "image"))
    except _Invalid as e:
        where = f"field {e.path[1:]!s}: " if e.path else ""
        raise RecordDecodeError(f"{kind} {api_version}: {where}{e.problem}") from None
    return obj, api_version


def decode(data: bytes) -> RecordObject:
    """Decode a record file strictly (see the module docstring); any failure raises
    :class:`~pullwarden.errors.RecordDecodeError`."""
    return decode_versioned(data)[0]
