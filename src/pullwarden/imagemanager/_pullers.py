"""Running pulls: each credential in turn, on one of two pullers (spec §1.6, §2.5).

:func:`pull_with_credentials` is one request as the kubelet's runtime manager does it: no
credentials means one anonymous pull; otherwise each credential is tried in order, the first
success wins, and when all fail their errors are aggregated (no anonymous fallback).

A puller runs such requests: :class:`SerialPuller` one at a time on a single worker thread
behind a queue of ten that blocks callers when full; :class:`ParallelPuller` on a thread per
request, at most ``max_parallel`` at once.  Either way the caller waits for its own result.

**Settling.** Each request comes with a ``settle`` callback that receives the final outcome in
whichever thread finishes the request -- after it ran, or when it was dropped without running.
The image manager records the pull there (a pulled record, or the end of the intent), so the
bookkeeping always matches what the runtime did, even when the caller stopped waiting.

**Cancellation.** With a :class:`~pullwarden._cancel.CancelToken`, a caller whose token is
cancelled waits at most ``stop_grace`` seconds more for its request to stop (pulls abort
within about a second), then returns a ``cancelled`` outcome whose ``committed`` is unknown;
the request still settles when it really ends.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import re
import threading
from collections.abc import Callable, Sequence
from typing import Final, Protocol

from pullwarden._cancel import CancelToken
from pullwarden._clock import Clock
from pullwarden._gofmt import seconds_to_ns
from pullwarden._values import frozen
from pullwarden.credentials import TrackedCredential
from pullwarden.errors import (
    ContainerRuntimeError,
    DeniedError,
    PullOutcomeUnknownError,
    RegistryUnavailableError,
    UnauthorizedError,
)
from pullwarden.imagemanager._errors import aggregate_error_text, log_unexpected
from pullwarden.imagemanager._throttle import QPS_EXCEEDED, TokenBucket
from pullwarden.runtime import AuthConfig, ImageService, PodSandbox, ProgressCallback

__all__ = [
    "MAX_IMAGE_PULL_REQUESTS",
    "ParallelPuller",
    "PullJob",
    "PullOutcome",
    "Puller",
    "SerialPuller",
    "Settle",
    "pull_with_credentials",
]

log = logging.getLogger("pullwarden.imagemanager")

MAX_IMAGE_PULL_REQUESTS: Final = 10
"""How many requests the serial puller queues before callers block (``maxImagePullRequests``)."""

CLOSED: Final = "image puller is closed"

_SLOT_POLL: Final = 0.2  # how often a request waiting for a parallel slot looks at its token

STOP_GRACE: Final = 1.0
"""Seconds a cancelled caller still waits for its pull to stop before giving up on it."""


@frozen
class PullOutcome:
    """What one pull request came to."""

    image_ref: str = ""
    size: int = 0  # bytes, 0 when unknown
    duration_ns: int = 0  # the pull and the size lookup, without waiting for a turn
    credential: TrackedCredential | None = None  # the one that succeeded; None: anonymous
    error: str | None = None  # the runtime's error text; None on success
    registry_unavailable: bool = False  # every attempt found the registry unreachable
    attempted: bool = False  # the image service was asked to pull (a registry round-trip)
    # True: the image is in the runtime; False: the runtime holds nothing of this pull (an
    # ImageService that raises committed nothing); None: unknown (the request is still running,
    # failed in an unexpected way, or the runtime never answered: PullOutcomeUnknownError).
    committed: bool | None = False
    cancelled: bool = False  # stopped by a cancel token before it could finish
    # Every attempt was refused by the registry for its credentials: "401" (unauthorised),
    # "403" (denied) or "401/403"; "" when some attempt failed otherwise.
    refused: str = ""


PullJob = Callable[[], PullOutcome]
Settle = Callable[[PullOutcome], None]


def pull_with_credentials(
    service: ImageService,
    image: str,
    credentials: Sequence[TrackedCredential],
    *,
    clock: Clock,
    throttle: TokenBucket | None = None,
    cancel: CancelToken | None = None,
    sandbox: PodSandbox | None = None,
    on_progress: ProgressCallback | None = None,
) -> PullOutcome:
    """Pull ``image`` with the first of ``credentials`` that works; never raises.

    ``on_progress`` is handed to the image service (the embedded store reports blob bytes; a
    CRI runtime reports nothing).

    A rate-limited request that finds no token fails with ``pull QPS exceeded`` without
    contacting anyone.  On success the image's size is looked up (best effort).  Once
    ``cancel`` is cancelled no further credential is tried and the outcome is ``cancelled``.
    An attempt the runtime never answered (:class:`~pullwarden.errors.PullOutcomeUnknownError`)
    makes a failed outcome's ``committed`` unknown.
    """
    start = clock.monotonic()
    if cancel is not None and cancel.cancelled:
        return _cancelled(cancel, attempted=False)
    if throttle is not None and not throttle.try_accept():
        return PullOutcome(error=QPS_EXCEEDED)
    attempts: list[TrackedCredential | None] = list(credentials) or [None]
    failures: list[BaseException] = []
    for cred in attempts:
        auth = None if cred is None else AuthConfig(cred.username, cred.password)
        try:
            image_ref = service.pull_image(image, auth, on_progress, cancel=cancel, sandbox=sandbox)
        except Exception as err:
            failures.append(err)
            if cancel is not None and cancel.cancelled:
                return _cancelled(cancel, attempted=True, committed=_committed(failures))
            log_unexpected(err)
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
            committed=True,
        )
    return PullOutcome(
        error=aggregate_error_text(str(err) or type(err).__name__ for err in failures),
        registry_unavailable=all(isinstance(err, RegistryUnavailableError) for err in failures),
        refused=_refusal(failures),
        duration_ns=seconds_to_ns(clock.monotonic() - start),
        attempted=True,
        committed=_committed(failures),
    )


_CRI_REFUSAL: Final = re.compile(r"\b(401 Unauthorized|403 Forbidden)\b")


def _refusal(failures: Sequence[BaseException]) -> str:
    """The status codes with which the registry refused the credentials of every attempt.

    pullwarden's registry client says so by type; a container runtime only in its error text
    (containerd: ``...: 401 Unauthorized``).  "" when any attempt failed for another reason.
    """
    codes: set[str] = set()
    for err in failures:
        if isinstance(err, UnauthorizedError):
            codes.add("401")
        elif isinstance(err, DeniedError):
            codes.add("403")
        elif isinstance(err, ContainerRuntimeError) and (m := _CRI_REFUSAL.search(str(err))):
            codes.add(m.group(1)[:3])
        else:
            return ""
    return "/".join(sorted(codes))


def _committed(failures: Sequence[BaseException]) -> bool | None:
    """False when every failed attempt is known to have committed nothing, else None."""
    return None if any(isinstance(e, PullOutcomeUnknownError) for e in failures) else False


def _cancelled(
    cancel: CancelToken, *, attempted: bool, committed: bool | None = False
) -> PullOutcome:
    return PullOutcome(
        error=str(cancel.error), attempted=attempted, committed=committed, cancelled=True
    )


class _Ticket:
    """One request: run (or dropped) once, settled once, waited for by its caller."""

    __slots__ = ("_finished", "_wake", "job", "outcome", "settle")

    def __init__(self, job: PullJob, settle: Settle | None) -> None:
        self.job = job
        self.settle = settle
        self.outcome = PullOutcome(error=CLOSED)
        self._finished = threading.Event()
        self._wake = threading.Event()  # finished, or the caller's token was cancelled

    def run(self) -> None:
        try:
            self.outcome = self.job()
        except Exception as err:  # a job is not supposed to raise; never leave a caller hanging
            log.exception("image pull job failed")
            self.outcome = PullOutcome(error=str(err) or type(err).__name__, committed=None)
        finally:
            self._finish()

    def drop(self, outcome: PullOutcome) -> None:
        """End the request without running it."""
        self.outcome = outcome
        self._finish()

    def _finish(self) -> None:
        try:
            if self.settle is not None:
                self.settle(self.outcome)
        except Exception:
            log.exception("recording the end of an image pull failed")
        finally:
            self._finished.set()
            self._wake.set()

    def wait(self, cancel: CancelToken | None, grace: float) -> PullOutcome:
        if cancel is None:
            self._finished.wait()
            return self.outcome
        with cancel.on_cancel(self._wake.set):
            self._wake.wait()
        if self._finished.wait(grace):
            return self.outcome
        return PullOutcome(
            error=f"{cancel.error} (the pull is still stopping)", committed=None, cancelled=True
        )


class Puller(Protocol):
    def pull(
        self, job: PullJob, settle: Settle | None = None, cancel: CancelToken | None = None
    ) -> PullOutcome:
        """Run ``job`` when the puller's rules allow it, settle it, and return its outcome."""
        ...

    def close(self, timeout: float | None = None) -> None:
        """Stop taking requests; requests already accepted still run."""
        ...


class SerialPuller:
    """One worker thread; up to ``capacity`` requests wait in line, further callers block."""

    def __init__(
        self, capacity: int = MAX_IMAGE_PULL_REQUESTS, *, stop_grace: float = STOP_GRACE
    ) -> None:
        self._capacity = max(capacity, 1)
        self._grace = stop_grace
        self._cond = threading.Condition()
        self._pending: collections.deque[_Ticket] = collections.deque()
        self._closed = False
        self._worker = threading.Thread(
            target=self._loop, name="pullwarden-serial-puller", daemon=True
        )
        self._worker.start()

    def pull(
        self, job: PullJob, settle: Settle | None = None, cancel: CancelToken | None = None
    ) -> PullOutcome:
        ticket = _Ticket(job, settle)
        with contextlib.ExitStack() as stack:
            if cancel is not None:
                stack.enter_context(cancel.on_cancel(self._wake_all))
            with self._cond:
                while (
                    len(self._pending) >= self._capacity
                    and not self._closed
                    and not (cancel is not None and cancel.cancelled)
                ):
                    self._cond.wait()
                if cancel is not None and cancel.cancelled:
                    ticket.drop(_cancelled(cancel, attempted=False))
                    return ticket.outcome
                if self._closed:
                    ticket.drop(PullOutcome(error=CLOSED))
                    return ticket.outcome
                self._pending.append(ticket)
                self._cond.notify_all()
        return ticket.wait(cancel, self._grace)

    def _wake_all(self) -> None:
        with self._cond:
            self._cond.notify_all()

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

    def __init__(self, max_parallel: int | None = None, *, stop_grace: float = STOP_GRACE) -> None:
        self._slots = (
            threading.BoundedSemaphore(max_parallel)
            if max_parallel is not None and max_parallel >= 1
            else None
        )
        self._grace = stop_grace
        self._lock = threading.Lock()
        self._closed = False
        self._threads: set[threading.Thread] = set()

    def pull(
        self, job: PullJob, settle: Settle | None = None, cancel: CancelToken | None = None
    ) -> PullOutcome:
        ticket = _Ticket(job, settle)
        with self._lock:
            if self._closed:
                ticket.drop(PullOutcome(error=CLOSED))
                return ticket.outcome
            thread = threading.Thread(
                target=self._run, args=(ticket, cancel), name="pullwarden-puller", daemon=True
            )
            self._threads.add(thread)
            thread.start()
        return ticket.wait(cancel, self._grace)

    def _run(self, ticket: _Ticket, cancel: CancelToken | None) -> None:
        try:
            if self._slots is None:
                ticket.run()
                return
            while not self._slots.acquire(timeout=_SLOT_POLL):
                if cancel is not None and cancel.cancelled:
                    ticket.drop(_cancelled(cancel, attempted=False))
                    return
            try:
                ticket.run()
            finally:
                self._slots.release()
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def close(self, timeout: float | None = None) -> None:
        with self._lock:
            self._closed = True
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)
