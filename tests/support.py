"""Test doubles and constants shared by the test modules."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class FakeImage:
    id: str
    repo_tags: Sequence[str] = ()
    repo_digests: Sequence[str] = ()


@dataclass
class FakeImageLister:
    """Stands in for a runtime's image list (only start-up housekeeping reads it)."""

    images: list[FakeImage] = field(default_factory=list)
    fail: bool = False
    calls: int = 0

    def list_images(self) -> list[FakeImage]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("runtime is down")
        return list(self.images)


T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def unshared(s: str) -> str:
    """An equal string that is another object (CPython shares "" and one-character strings)."""
    if len(s) < 2:
        return s
    copy = "".join(list(s))
    assert copy == s and copy is not s
    return copy
