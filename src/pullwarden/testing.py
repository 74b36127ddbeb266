"""Test doubles for code built on pullwarden (and for pullwarden's own tests).

* :class:`FakeClock` — a :class:`~pullwarden._clock.Clock` that only moves when told to, so
  back-off, token expiry, record timestamps and image GC ages are instant and exact in tests::

      clock = FakeClock()
      node = Node(root, config, clock=clock)
      clock.advance(300)              # five minutes later, at once

No production code path imports this module.
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

__all__ = ["FakeClock"]


class FakeClock:
    """A clock that only moves when told to; thread-safe.

    ``now()`` starts at ``start`` (default 2025-01-02 03:04:05 UTC) and ``monotonic()`` at
    1000.0; :meth:`advance` moves both by the same number of seconds (negative moves back,
    which only ``now()`` should ever be asked to do).
    """

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
        self._mono = 1000.0
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            return self._now

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        with self._lock:
            self._now += timedelta(seconds=seconds)
            self._mono += seconds
