"""Test doubles for code built on pullwarden (and for pullwarden's own tests).

* :class:`FakeClock` — a :class:`~pullwarden._clock.Clock` that only moves when told to, so
  back-off, token expiry, record timestamps and image GC ages are instant and exact in tests::

      clock = FakeClock()
      node = Node(root, config, clock=clock)
      clock.advance(300)              # five minutes later, at once

* :class:`MockTransport` — a registry client's network replaced by a function from request to
  answer, so client code runs against an in-memory registry::

      def handler(request: Request) -> Response:
          return Response(404, json={"errors": [{"code": "MANIFEST_UNKNOWN"}]})

      client = RegistryClient(transport=MockTransport(handler))

No production code path imports this module.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from pullwarden.runtime import Request, Response

__all__ = ["FakeClock", "MockTransport"]


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


class MockTransport:
    """A :class:`~pullwarden.runtime.Transport` whose answers come from ``handler``.

    ``handler`` gets each :class:`~pullwarden.runtime.Request` (body read, ``Host`` set) and
    returns the :class:`~pullwarden.runtime.Response`, or raises a
    :class:`~pullwarden.runtime.TransportError` to stand for a network failure.
    """

    def __init__(self, handler: Callable[[Request], Response]) -> None:
        self.handler = handler

    def handle_request(self, request: Request) -> Response:
        return self.handler(request)

    def close(self) -> None:
        pass
