"""Per-key exponential back-off for failed pulls (spec §1.5; client-go's flowcontrol.Backoff).

Each key remembers its current period and when it was last updated.  :meth:`Backoff.next`
starts a key at the initial period, or doubles it up to the maximum; an entry not updated for
more than twice the maximum has expired and counts as absent.  No jitter: the kubelet's image
back-off is built without it.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from pullwarden._clock import Clock

__all__ = ["IMAGE_BACKOFF_INITIAL", "IMAGE_BACKOFF_MAX", "Backoff"]

IMAGE_BACKOFF_INITIAL = 10.0
"""Seconds of the first back-off after a failed pull (the kubelet's ``imageBackOffPeriod``)."""

IMAGE_BACKOFF_MAX = 300.0
"""Seconds the back-off never exceeds (the kubelet's ``MaxImageBackOff``)."""


@dataclass(slots=True)
class _Entry:
    period: float
    last_update: float


class Backoff:
    """Back-off periods per key, timed by ``clock.monotonic()``; thread-safe."""

    def __init__(
        self,
        clock: Clock,
        initial: float = IMAGE_BACKOFF_INITIAL,
        maximum: float = IMAGE_BACKOFF_MAX,
    ) -> None:
        self._clock = clock
        self._initial = initial
        self._max = maximum
        self._lock = threading.Lock()
        self._entries: dict[str, _Entry] = {}

    def _expired(self, entry: _Entry, now: float) -> bool:
        return now - entry.last_update > 2 * self._max

    def next(self, key: str) -> float:
        """Record a failure for ``key`` now; returns the new back-off period in seconds."""
        now = self._clock.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or self._expired(entry, now):
                entry = self._entries[key] = _Entry(self._initial, now)
            else:
                entry.period = min(entry.period * 2, self._max)
                entry.last_update = now
            return entry.period

    def in_backoff(self, key: str) -> bool:
        """True while less than the current period has passed since ``key`` last failed."""
        now = self._clock.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or self._expired(entry, now):
                return False
            return now - entry.last_update < entry.period

    def period(self, key: str) -> float | None:
        """The current period of ``key`` (None when it has no live entry)."""
        now = self._clock.monotonic()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or self._expired(entry, now):
                return None
            return entry.period

    def gc(self) -> None:
        """Drop the entries that have expired."""
        now = self._clock.monotonic()
        with self._lock:
            for key in [k for k, e in self._entries.items() if self._expired(e, now)]:
                del self._entries[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
