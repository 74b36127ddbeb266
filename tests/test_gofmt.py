"""Go's %q quoting and time.Duration text (the forms kubelet event messages use)."""

from __future__ import annotations

import pytest

from pullwarden._gofmt import (
    HOUR,
    MICROSECOND,
    MILLISECOND,
    MINUTE,
    SECOND,
    aggregate_text,
    go_duration,
    go_quote,
    seconds_to_ns,
    truncate,
)


@pytest.mark.parametrize(
    ("text", "quoted"),
    [
        ("", '""'),
        ("nginx:1.2", '"nginx:1.2"'),
        ('say "hi"', '"say \\"hi\\""'),
        ("back\\slash", '"back\\\\slash"'),
        ("tab\there", '"tab\\there"'),
        ("\a\b\f\n\r\v", '"\\a\\b\\f\\n\\r\\v"'),
        ("\x00\x1b\x7f", '"\\x00\\x1b\\x7f"'),
        ("café ünïcode 日本", '"café ünïcode 日本"'),
        ("emoji 🐳", '"emoji 🐳"'),
        ("nbsp\u00a0", '"nbsp\\u00a0"'),  # a space other than U+0020 is not printable
        ("\x85", '"\\u0085"'),  # C1 control
        ("zwsp\u200b bom\ufeff", '"zwsp\\u200b bom\\ufeff"'),  # format characters
        ("line\u2028sep", '"line\\u2028sep"'),
        ("\U000e0001", '"\\U000e0001"'),  # a tag character (format, beyond the BMP)
        ("\U0010ffff", '"\\U0010ffff"'),  # unassigned
        ("bad\udcff\udc80byte", '"bad\\xff\\x80byte"'),  # raw bytes via surrogateescape
        ("\ud800", '"\\xed\\xa0\\x80"'),  # any other lone surrogate: its bytes are invalid
    ],
)
def test_go_quote(text: str, quoted: str) -> None:
    assert go_quote(text) == quoted


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (999, "999ns"),
        (1 * MICROSECOND, "1µs"),
        (1_100, "1.1µs"),
        (2_200 * MICROSECOND, "2.2ms"),
        (150 * MILLISECOND, "150ms"),
        (999_999_999, "999.999999ms"),
        (SECOND, "1s"),
        (1_234 * MILLISECOND, "1.234s"),
        (3 * SECOND + 1, "3.000000001s"),
        (59 * SECOND, "59s"),
        (MINUTE, "1m0s"),
        (2 * MINUTE + 3_500 * MILLISECOND, "2m3.5s"),
        (HOUR, "1h0m0s"),
        (HOUR + 2 * MINUTE + 3_004 * MILLISECOND, "1h2m3.004s"),
        (100 * HOUR, "100h0m0s"),
        (-1_500 * MILLISECOND, "-1.5s"),
        (-5, "-5ns"),
    ],
)
def test_go_duration(ns: int, text: str) -> None:
    assert go_duration(ns) == text


def test_truncate_and_seconds() -> None:
    assert truncate(1_234_567_890, MILLISECOND) == 1_234 * MILLISECOND
    assert truncate(-1_234_567_890, MILLISECOND) == -1_234 * MILLISECOND
    assert truncate(17, 0) == 17
    assert seconds_to_ns(1.5) == 1_500_000_000
    assert go_duration(truncate(seconds_to_ns(8.6581234), MILLISECOND)) == "8.658s"


@pytest.mark.parametrize(
    ("texts", "joined"),
    [
        (["one"], "one"),
        (["one", "two"], "[one, two]"),
        (["a, b", "c"], "[a, b, c]"),
        ([], "[]"),
        (dict.fromkeys(["x", "x"]), "x"),
    ],
)
def test_aggregate_text(texts: list[str], joined: str) -> None:
    assert aggregate_text(texts) == joined
