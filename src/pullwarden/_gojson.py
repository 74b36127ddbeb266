"""Byte-exact reproductions of Go's ``encoding/json`` output where the kubelet's bytes matter.

Go escapes strings differently from Python's :mod:`json`: ``<``, ``>`` and ``&`` become
``\\u003c``/``\\u003e``/``\\u0026``, U+2028/U+2029 are escaped, non-ASCII stays raw UTF-8, and
each byte of invalid UTF-8 is replaced by the escape text ``\\ufffd``.  Strings that came from
base64-decoded docker config entries may hold arbitrary bytes, so the encoder accepts ``bytes``
as well as ``str`` (a ``str`` holding lone surrogates is treated as invalid UTF-8 too).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime

__all__ = ["as_utc", "format_rfc3339", "go_bytes", "go_str", "quote", "quote_bytes"]

_SHORT = {
    0x22: b'\\"',
    0x5C: b"\\\\",
    0x0A: b"\\n",
    0x0D: b"\\r",
    0x09: b"\\t",
    0x08: b"\\b",
    0x0C: b"\\f",
}

# Bytes that always need an escape (ASCII only); everything else is handled per UTF-8 sequence.
_NEEDS_ESCAPE = re.compile(rb'[\x00-\x1f"\\<>&]|\xe2\x80[\xa8\xa9]|[\x80-\xff]')
_PLAIN = re.compile(r'[^\x00-\x1f"\\<>&\u2028\u2029\ud800-\udfff]*')


def _escape_ascii(b: int) -> bytes:
    short = _SHORT.get(b)
    if short is not None:
        return short
    return b"\\u%04x" % b


def _utf8_len(data: bytes, i: int) -> int:
    """Length of the valid UTF-8 sequence starting at ``data[i]`` (a byte >= 0x80), or 0."""
    b0 = data[i]
    n = len(data)
    if 0xC2 <= b0 <= 0xDF:
        need, lo, hi = 1, 0x80, 0xBF
    elif b0 == 0xE0:
        need, lo, hi = 2, 0xA0, 0xBF
    elif 0xE1 <= b0 <= 0xEC or 0xEE <= b0 <= 0xEF:
        need, lo, hi = 2, 0x80, 0xBF
    elif b0 == 0xED:
        need, lo, hi = 2, 0x80, 0x9F  # no surrogates
    elif b0 == 0xF0:
        need, lo, hi = 3, 0x90, 0xBF
    elif 0xF1 <= b0 <= 0xF3:
        need, lo, hi = 3, 0x80, 0xBF
    elif b0 == 0xF4:
        need, lo, hi = 3, 0x80, 0x8F
    else:
        return 0
    if i + need >= n:
        return 0
    if not lo <= data[i + 1] <= hi:
        return 0
    for k in range(2, need + 1):
        if not 0x80 <= data[i + k] <= 0xBF:
            return 0
    return need + 1


def quote_bytes(data: bytes) -> bytes:
    """Encode ``data`` (a Go string: any bytes) as a JSON string literal exactly as Go does."""
    if _NEEDS_ESCAPE.search(data) is None:
        return b'"' + data + b'"'
    out = bytearray(b'"')
    i = 0
    n = len(data)
    while i < n:
        b = data[i]
        if b < 0x80:
            if b < 0x20 or b in (0x22, 0x5C, 0x3C, 0x3E, 0x26):
                out += _escape_ascii(b)
            else:
                out.append(b)
            i += 1
            continue
        size = _utf8_len(data, i)
        if size == 0:
            out += b"\\ufffd"
            i += 1
            continue
        seq = data[i : i + size]
        if seq == b"\xe2\x80\xa8":
            out += b"\\u2028"
        elif seq == b"\xe2\x80\xa9":
            out += b"\\u2029"
        else:
            out += seq
        i += size
    out += b'"'
    return bytes(out)


def go_bytes(value: str) -> bytes:
    """The bytes of the Go string a ``str`` stands for.

    Raw bytes smuggled in through ``surrogateescape`` become those bytes again; any other lone
    surrogate keeps its (invalid) UTF-8 form, which Go also treats as invalid.
    """
    try:
        return value.encode()
    except UnicodeEncodeError:
        try:
            return value.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            return value.encode("utf-8", "surrogatepass")


def go_str(data: bytes) -> str:
    """A ``str`` standing for arbitrary Go string bytes (invalid UTF-8 kept as surrogates)."""
    return data.decode("utf-8", "surrogateescape")


def quote(value: str | bytes) -> bytes:
    """Encode a string as Go's ``encoding/json`` would; lone surrogates count as invalid UTF-8."""
    if isinstance(value, bytes):
        return quote_bytes(value)
    if _PLAIN.fullmatch(value) is not None:
        return b'"' + value.encode() + b'"'
    return quote_bytes(go_bytes(value))


def as_utc(t: datetime) -> datetime:
    """``t`` in UTC; a naive datetime is taken to be UTC already."""
    tz = t.tzinfo
    if tz is None:
        return t.replace(tzinfo=UTC)
    if tz is UTC:
        return t
    return t.astimezone(UTC)


def format_rfc3339(t: datetime) -> str:
    """RFC 3339 in UTC with whole seconds, the way ``metav1.Time`` is written (``...Z``).

    A naive ``t`` is taken to be UTC; fractions of a second are dropped, not rounded.
    """
    u = as_utc(t)
    # strftime("%Y") drops leading zeros before year 1000 on glibc; format the fields ourselves.
    return f"{u.year:04d}-{u.month:02d}-{u.day:02d}T{u.hour:02d}:{u.minute:02d}:{u.second:02d}Z"
