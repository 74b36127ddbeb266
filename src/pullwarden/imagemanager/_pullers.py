"""Running pulls: each credential in turn, on one of two pullers (spec §1.6, §2.5).

:func:`pull_with_credentials` is one request as the kubelet's runtime manager does it: no
credentials means one anonymous pull; otherwise each credential is tried in order, the first
success wins, and when all fail their errors are aggregated (no anonymous fallback).

A puller runs such requests: :class:`SerialPuller` one at a time on a single worker thread
behind a queue of ten that blocks callers when full; :class:`ParallelPuller` on a thread per
request, at most ``max_parallel`` at once.  Either way the caller waits for its own result.
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final, Protocol

from pullwarden._clock import Clock
from pullwarden._gofmt import seconds_to_ns
from pullwarden.credentials import TrackedCredential
from pullwarden.errors import RegistryUnavailableError
from pullwarden.imagemanager._errors import aggregate_error_text
from pullwarden.imagemanager._throttle import QPS_EXCEEDED, TokenBucket
from pullwarden.runtime import AuthConfig, ImageService

__all__ = [
    "MAX_IMAGE_PULL_REQUESTS",
    "ParallelPuller",
    "PullJob",
    "PullOutcome",
    "Puller",
    "SerialPuller",
    "pull_with_credentials",
]

log = logging.getLogger("pullwarden.imagemanager")

MAX_IMAGE_PULL_REQUESTS: Final = 10
"""How many requests the serial puller queues before callers block (``maxImagePullRequests``)."""

CLOSED: Final = "image puller is closed"


@dataclass(frozen=True, slots=True)
class PullOutcome:
    """What one pull request came to."""

    image_ref: str = ""
    size: int = 0  # bytes, 0 when unknown
    duration_ns: int = 0  # the pull and the size lookup, without waiting for a turn
    credential: TrackedCredential | None = None  # the one that succeeded; None: anonymous
    error: str | None = None  # the runtime's error text; None on success
    registry_unavailable: bool = False  # every attempt found the registry unreachable
    attempted: bool = False  # the image service was asked to pull (a registry round-trip)


PullJob = Callable[[], PullOutcome]


def pull_with_credentials(
    service: ImageService,
    image: str,
    credentials: Sequence[TrackedCredential],
    *,
    clock: Clock,
    throttle: TokenBucket | None = None,
) -> PullOutcome:
    """Pull ``image`` with the first of ``credentials`` that works; never raises.

    A rate-limited request that finds no token fails with ``pull QPS exceeded`` without
    contacting anyone.  On success the image's size is looked up (best effort).
    """
    if throttle is not None and not throttle.try_accept():
        return PullOutcome(error=QPS_EXCEEDED)
    start = clock.monotonic()
    attempts: list[TrackedCredential | None] = list(credentials) or [None]
    failures: list[BaseException] = []
    for cred in attempts:
        auth = None if cred is None else AuthConfig(cred.username, cred.password)
        try:
            image_ref = service.pull_image(image, auth)
        except Exception as err:
            failures.append(err)
            continue
        size = 0
        if image_ref:
            try:
                status = service.image_status(image)
            except Exception as err:
                log.debug("cannot read the size of %s: %s", image, err)
            else:
                size = status.size if status is not None else 0
        return PullOutcome(
            image_ref=image_ref,
            size=size,
            duration_ns=seconds_to_ns(clock.monotonic() - start),
            credential=cred,
            attempted=True,
        )
    return PullOutcome(
        error=aggregate_error_text(str(err) or type(err).__name__ for err in failures),
        registry_unavailable=all(isinstance(err, RegistryUnavailableError) for err in failures),
        duration_ns=seconds_to_ns(clock.monotonic() - start),
        attempted=True,
    )


class _Ticket:
    """One request waiting for its outcome."""

    __slots__ = ("done", "job", "outcome")

    def __init__(self, job: PullJob) -> None:
        self.job = job
        self.done = threading.Event()
        self.outcome = PullOutcome(error=CLOSED)

    def run(self) -> None:
        try:
            self.outcome = self.job()
        except Exception as err:  # a job is not supposed to raise; never leave a caller hanging
            log.exception("image pull job failed")
            self.outcome = PullOutcome(error=str(err) or type(err).__name__)
        finally:
            self.done.set()

    def wait(self) -> PullOutcome:
        self.done.wait()
        return self.outcome


class Puller(Protocol):
    def pull(self, job: PullJob) -> PullOutcome:
        """Run ``job`` when the puller's rules allow it and return its outcome."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests; requests already accepted still run."""
        ...


class SerialPuller:
    """One worker thread; up to ``capacity`` requests wait in line, further callers block."""

    def __init__(self, capacity: int = MAX_IMAGE_PULL_REQUESTS) -> None:
        self._capacity = max(capacity, 1)
        self._cond = threading.Condition()
        self._pending: collections.deque[_Ticket] = collections.deque()
        self._closed = False
        self._worker = threading.Thread(
            target=self._loop, name="pullwarden-serial-puller", daemon=True
        )
        self._worker.start()

    def pull(self, job: PullJob) -> PullOutcome:
        ticket = _Ticket(job)
        with self._cond:
            while len(self._pending) >= self._capacity and not self._closed:
                self._cond.wait()
            if self._closed:
                return PullOutcome(error=CLOSED)
            self._pending.append(ticket)
            self._cond.notify_all()
        return ticket.wait()

    def queued(self) -> int:
        """How many requests wait for the worker (not counting the one it runs)."""
        with self._cond:
            return len(self._pending)

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                ticket = self._pending.popleft()
                self._cond.notify_all()
            ticket.run()

    def close(self, timeout: float | None = None) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._worker.join(timeout)


class ParallelPuller:
    """A thread per request; with ``max_parallel`` ≥ 1 at most that many pull at once."""

    def __init__(self, max_parallel: int | None = None) -> None:
        self._slots = (
            threading.BoundedSemaphore(max_parallel)
            if max_parallel is not None and max_parallel >= 1
            else None
        )
        self._lock = threading.Lock()
        self._closed = False
        self._threads: set[threading.Thread] = set()

    def pull(self, job: PullJob) -> PullOutcome:
        ticket = _Ticket(job)
        with self._lock:
            if self._closed:
                return PullOutcome(error=CLOSED)
            thread = threading.Thread(
                target=self._run, args=(ticket,), name="pullwarden-puller", daemon=True
            )
            self._threads.add(thread)
            thread.start()
        return ticket.wait()

    def _run(self, ticket: _Ticket) -> None:
        try:
            if self._slots is None:
                ticket.run()
            else:
                with self._slots:
                    ticket.run()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
