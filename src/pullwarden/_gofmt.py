"""Go's text renderings that kubelet messages carry (``%q`` quoting, ``time.Duration``, the
text of Kubernetes' aggregate error), ``time.ParseDuration`` for the kubelet configuration's
duration fields, and the white space Go's ``strings.TrimSpace`` removes.

Kubelet events quote image names with ``%q`` and print pull times with ``%v`` of a
``time.Duration``; matching them byte for byte keeps our events greppable with the same patterns
as a real node's.

Strings are handled as Go strings: a lone surrogate in ``\\udc80``-``\\udcff`` stands for the
raw byte a ``surrogateescape`` decode could not read (see :mod:`pullwarden._gojson`) and is
shown as ``\\xNN``, as Go shows a byte that is not valid UTF-8.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

__all__ = [
    "GO_SPACE",
    "HOUR",
    "MICROSECOND",
    "MILLISECOND",
    "MINUTE",
    "NANOSECOND",
    "SECOND",
    "aggregate_text",
    "go_duration",
    "go_quote",
    "parse_go_duration",
    "seconds_to_ns",
    "truncate",
]

NANOSECOND: Final = 1
MICROSECOND: Final = 1_000
MILLISECOND: Final = 1_000_000
SECOND: Final = 1_000_000_000
MINUTE: Final = 60 * SECOND
HOUR: Final = 60 * MINUTE

GO_SPACE: Final = (
    "\t\n\v\f\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009"
    "\u200a\u2028\u2029\u202f\u205f\u3000"
)
"""What Go's ``strings.TrimSpace`` removes (``unicode.IsSpace``).  Python's ``str.strip()``
removes more (``\x1c``-``\x1f`` among others), so ``text.strip(GO_SPACE)`` is the Go one."""

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


def aggregate_text(texts: Iterable[str]) -> str:
    """Several error texts as one, the way Kubernetes' aggregate error prints them.

    One text is shown as it is; several are joined by ``, `` inside square brackets.  The
    aggregate also shows a repeated text only once: a caller whose texts can repeat passes
    ``dict.fromkeys(texts)``.  Every joined kubelet message in pullwarden is made here.
    """
    items = list(texts)
    if len(items) == 1:
        return items[0]
    return "[" + ", ".join(items) + "]"


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


# --- parsing durations (time.ParseDuration) ---------------------------------------------------

_UNIT_NS: Final[Mapping[str, int]] = {
    "ns": 1,
    "us": 1_000,
    "µs": 1_000,  # U+00B5 MICRO SIGN
    "μs": 1_000,  # U+03BC GREEK SMALL LETTER MU
    "ms": 1_000_000,
    "s": 1_000_000_000,
    "m": 60 * 1_000_000_000,
    "h": 3600 * 1_000_000_000,
}
_LIMIT: Final = 1 << 63  # the magnitude of the most negative int64


def _time_quote(text: str) -> str:
    """Quote ``text`` as Go's time package does in its parse errors."""
    out = ['"']
    for ch in text:
        if " " <= ch < "\x80":
            if ch in '"\\':
                out.append("\\")
            out.append(ch)
        else:
            out.extend(f"\\x{b:02x}" for b in ch.encode("utf-8", "surrogatepass"))
    out.append('"')
    return "".join(out)


def _is_digit(ch: str) -> bool:
    return "0" <= ch <= "9"


def parse_go_duration(text: str) -> int:
    """Parse a Go duration string (``time.ParseDuration``) into integer nanoseconds.

    Accepts an optional sign, then one or more ``<number><unit>`` pairs where the number may
    have a fraction and the unit is one of ns, us, µs, ms, s, m, h; ``"0"`` alone needs no unit.
    Anything else, and values beyond the int64 range, raise :class:`ValueError` with Go's
    message (``time: invalid duration "abc"``).
    """
    invalid = ValueError(f"time: invalid duration {_time_quote(text)}")
    rest = text
    negative = False
    if rest[:1] in ("-", "+"):
        negative = rest[0] == "-"
        rest = rest[1:]
    if rest == "0":
        return 0
    if not rest:
        raise invalid
    total = 0
    while rest:
        if not (rest[0] == "." or _is_digit(rest[0])):
            raise invalid
        # Whole part.
        i = 0
        whole = 0
        while i < len(rest) and _is_digit(rest[i]):
            if whole > _LIMIT // 10:
                raise invalid
            whole = whole * 10 + (ord(rest[i]) - 48)
            if whole > _LIMIT:
                raise invalid
            i += 1
        has_whole = i > 0
        rest = rest[i:]
        # Fraction: digits beyond what fits are read but ignored, as Go does.
        fraction = 0
        scale = 1.0
        has_fraction = False
        if rest[:1] == ".":
            rest = rest[1:]
            i = 0
            saturated = False
            while i < len(rest) and _is_digit(rest[i]):
                if not saturated:
                    if fraction > (_LIMIT - 1) // 10:
                        saturated = True
                    else:
                        candidate = fraction * 10 + (ord(rest[i]) - 48)
                        if candidate > _LIMIT:
                            saturated = True
                        else:
                            fraction = candidate
                            scale *= 10
                i += 1
            has_fraction = i > 0
            rest = rest[i:]
        if not has_whole and not has_fraction:
            raise invalid
        # Unit: everything up to the next digit or dot.
        i = 0
        while i < len(rest) and not (rest[i] == "." or _is_digit(rest[i])):
            i += 1
        if i == 0:
            raise ValueError(f"time: missing unit in duration {_time_quote(text)}")
        unit_text, rest = rest[:i], rest[i:]
        unit = _UNIT_NS.get(unit_text)
        if unit is None:
            raise ValueError(
                f"time: unknown unit {_time_quote(unit_text)} in duration {_time_quote(text)}"
            )
        if whole > _LIMIT // unit:
            raise invalid
        value = whole * unit
        if fraction > 0:
            # Go adds the fraction in float64 arithmetic; Python floats are the same doubles.
            value += int(float(fraction) * (float(unit) / scale))
            if value > _LIMIT:
                raise invalid
        total += value
        if total > _LIMIT:
            raise invalid
    if negative:
        return -total
    if total > _LIMIT - 1:
        raise invalid
    return total
