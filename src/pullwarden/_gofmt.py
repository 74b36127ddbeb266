"""Go's text renderings that kubelet messages carry: ``%q`` quoting and ``time.Duration``.

Kubelet events quote image names with ``%q`` and print pull times with ``%v`` of a
``time.Duration``; matching them byte for byte keeps our events greppable with the same patterns
as a real node's.

Strings are handled as Go strings: a lone surrogate in ``\\udc80``-``\\udcff`` stands for the
raw byte a ``surrogateescape`` decode could not read (see :mod:`pullwarden._gojson`) and is
shown as ``\\xNN``, as Go shows a byte that is not valid UTF-8.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "HOUR",
    "MICROSECOND",
    "MILLISECOND",
    "MINUTE",
    "NANOSECOND",
    "SECOND",
    "go_duration",
    "go_quote",
    "seconds_to_ns",
    "truncate",
]

NANOSECOND: Final = 1
MICROSECOND: Final = 1_000
MILLISECOND: Final = 1_000_000
SECOND: Final = 1_000_000_000
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE

# The escapes strconv.Quote writes with a letter rather than as a number.
_LETTER_ESCAPES: Final = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    '"': '\\"',
    "\\": "\\\\",
}


def _escape_nonprintable(ch: str) -> str:
    cp = ord(ch)
    if 0xDC80 <= cp <= 0xDCFF:  # a raw byte carried by surrogateescape
        return f"\\x{cp - 0xDC00:02x}"
    if 0xD800 <= cp <= 0xDFFF:  # any other lone surrogate: Go would hold its bytes, all invalid
        return "".join(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
    if cp < 0x20 or cp == 0x7F:
        return f"\\x{cp:02x}"
    if cp < 0x10000:
        return f"\\u{cp:04x}"
    return f"\\U{cp:08x}"


def go_quote(s: str) -> str:
    """``s`` as Go's ``%q`` (``strconv.Quote``) renders it.

    Double quotes around; ``"`` and ``\\`` escaped; ``\\a \\b \\f \\n \\r \\t \\v`` by letter; other
    control bytes and DEL as ``\\xNN``; non-printable runes (format characters, separators other
    than the ASCII space, unassigned code points) as ``\\uNNNN`` or ``\\UNNNNNNNN``; every other
    character, non-ASCII included, as itself.
    """
    out = ['"']
    for ch in s:
        escape = _LETTER_ESCAPES.get(ch)
        if escape is not None:
            out.append(escape)
        elif ch.isprintable():
            out.append(ch)
        else:
            out.append(_escape_nonprintable(ch))
    out.append('"')
    return "".join(out)


def seconds_to_ns(seconds: float) -> int:
    """A duration in (float) seconds as whole nanoseconds, rounded to the nearest."""
    return round(seconds * SECOND)


def truncate(ns: int, unit: int) -> int:
    """``time.Duration.Truncate``: ``ns`` rounded toward zero to a multiple of ``unit``."""
    if unit <= 0:
        return ns
    magnitude = abs(ns) - abs(ns) % unit
    return magnitude if ns >= 0 else -magnitude


def _fraction(value: int, digits: int) -> tuple[str, int]:
    """(``.ddd`` of the last ``digits`` digits without trailing zeros, the digits before them)."""
    scale = 10**digits
    frac = value % scale
    text = ""
    if frac:
        text = "." + f"{frac:0{digits}d}".rstrip("0")
    return text, value // scale


def go_duration(ns: int) -> str:
    """A duration of ``ns`` nanoseconds as ``time.Duration.String`` prints it.

    Under a second the largest fitting unit of ns, µs and ms is used (``150ms``, ``1.5µs``);
    from a second on it is hours, minutes and seconds with only the leading zero units left out
    (``1.234s``, ``2m3.5s``, ``1h0m0s``).  Zero is ``0s``.
    """
    if ns == 0:
        return "0s"
    sign = "-" if ns < 0 else ""
    u = abs(ns)
    if u < SECOND:
        if u < MICROSECOND:
            return f"{sign}{u}ns"
        if u < MILLISECOND:
            frac, whole = _fraction(u, 3)
            return f"{sign}{whole}{frac}µs"
        frac, whole = _fraction(u, 6)
        return f"{sign}{whole}{frac}ms"
    frac, whole_seconds = _fraction(u, 9)
    text = f"{whole_seconds % 60}{frac}s"
    minutes = whole_seconds // 60
    if minutes:
        text = f"{minutes % 60}m{text}"
        hours = minutes // 60
        if hours:
            text = f"{hours}h{text}"
    return sign + text
