"""The registry pull rate limit: a token bucket (``registryPullQPS``/``registryBurst``, spec §1.6).

The bucket starts full (``burst`` tokens) and refills at ``qps`` tokens a second up to
``burst``.  A pull that finds no whole token fails at once, it never waits.  With ``burst`` 0
no pull ever gets a token.
"""

from __future__ import annotations

import threading

from pullwarden._clock import Clock

__all__ = ["QPS_EXCEEDED", "TokenBucket"]

QPS_EXCEEDED = "pull QPS exceeded"
"""The error text of a pull refused by the rate limit."""


class TokenBucket:
    """``try_accept`` takes a token if one is there; timed by ``clock.monotonic()``; thread-safe."""

    def __init__(self, qps: float, burst: int, clock: Clock) -> None:
        if qps <= 0:
            raise ValueError(f"a token bucket needs a positive rate, not {qps}")
        self._rate = qps
        self._burst = max(burst, 0)
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens = float(self._burst)
        self._last = clock.monotonic()

    def try_accept(self) -> bool:
        with self._lock:
            now = self._clock.monotonic()
            elapsed = max(0.0, now - self._last)
            self._last = now
            self._tokens = min(float(self._burst), self._tokens + elapsed * self._rate)
            if self._tokens >= 1.0:
                self._tokens -= 1.0
                return True
            return False
