"""The low-level helpers every crash-safe writer shares (pullwarden._files, pullwarden._gojson)."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pullwarden._files import remove_quietly, write_all, write_atomically
from pullwarden._gojson import as_utc, format_rfc3339


def test_write_all_keeps_writing_after_short_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write
    calls: list[int] = []

    def one_byte_at_a_time(fd: int, data: bytes | memoryview) -> int:
        calls.append(len(data))
        return real_write(fd, bytes(data[:1]))

    path = tmp_path / "f"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    monkeypatch.setattr(os, "write", one_byte_at_a_time)
    try:
        write_all(fd, b"abc")
    finally:
        monkeypatch.undo()
        os.close(fd)
    assert path.read_bytes() == b"abc"
    assert calls == [3, 2, 1]


def test_remove_quietly(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x")
    remove_quietly(path)
    assert not path.exists()
    remove_quietly(path)  # already gone
    remove_quietly(str(tmp_path))  # a directory: os.remove fails, quietly


def test_write_atomically_leaves_no_draft_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "state.json"
    target.write_bytes(b"old")

    def full_disk(fd: int, data: bytes | memoryview) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "write", full_disk)
    with pytest.raises(OSError, match="No space left"):
        write_atomically(target, b"new")
    monkeypatch.undo()
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]


@pytest.mark.parametrize(
    ("t", "text"),
    [
        (datetime(2025, 1, 2, 3, 4, 5, 999_999, tzinfo=UTC), "2025-01-02T03:04:05Z"),
        (datetime(2025, 1, 2, 3, 4, 5), "2025-01-02T03:04:05Z"),  # naive means UTC
        (
            datetime(2025, 1, 2, 4, 4, 5, tzinfo=timezone(timedelta(hours=1))),
            "2025-01-02T03:04:05Z",
        ),
        (datetime(999, 12, 31, 23, 59, 59, tzinfo=UTC), "0999-12-31T23:59:59Z"),
    ],
)
def test_format_rfc3339(t: datetime, text: str) -> None:
    assert format_rfc3339(t) == text
    assert as_utc(t).tzinfo is UTC
