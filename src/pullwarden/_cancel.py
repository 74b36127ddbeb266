"""Cooperative cancellation: one token, checked at safe points, that can also wake blocked I/O.

A :class:`CancelToken` is handed down from whoever may want to stop work (the CLI's SIGINT and
SIGTERM handlers, :meth:`Node.close <pullwarden.node.Node.close>`, a pull's progress watchdog)
to the code doing it (pullers, the image store, the registry client).  Work checks the token at
points where stopping leaves nothing half done (:meth:`CancelToken.raise_if_cancelled`), and
code blocked in a socket read registers a callback (:meth:`CancelToken.on_cancel`) that unblocks
it, typically by shutting the socket down.

The first :meth:`~CancelToken.cancel` wins and fixes the error every later check raises: a
:class:`~pullwarden.errors.PullCancelledError` by default, or whatever the canceller passes (the
progress watchdog passes a :class:`~pullwarden.errors.RegistryUnavailableError`).  A
:meth:`~CancelToken.child` is cancelled, with the parent's error, whenever its parent is, and can
be cancelled on its own without touching the parent: one child per pull under one token per
node.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable, Iterator

from pullwarden.errors import PullCancelledError, PullwardenError

__all__ = ["CancelToken"]

log = logging.getLogger("pullwarden.cancel")

Callback = Callable[[], object]


class CancelToken:
    """A thread-safe, one-way "stop" flag with wake-up callbacks."""

    __slots__ = ("_callbacks", "_detach", "_error", "_event", "_lock", "_next_id")

    def __init__(self) -> None:
        self._event = threading.Event()
        self._lock = threading.Lock()
        self._error: PullwardenError | None = None
        self._callbacks: dict[int, Callback] = {}
        self._next_id = 0
        self._detach: Callable[[], None] | None = None

    def __repr__(self) -> str:
        state = f"cancelled: {self._error}" if self._error is not None else "active"
        return f"<CancelToken {state}>"

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    @property
    def error(self) -> PullwardenError | None:
        """What checks raise once cancelled; None while the token is active."""
        return self._error

    def cancel(self, error: PullwardenError | None = None) -> bool:
        """Cancel with ``error`` (default: "cancelled"); False when already cancelled.

        Callbacks run here, in the cancelling thread (which may be a signal handler), each once;
        one that raises is logged and the others still run.
        """
        with self._lock:
            if self._error is not None:
                return False
            self._error = error if error is not None else PullCancelledError("cancelled")
            callbacks = list(self._callbacks.values())
            self._callbacks.clear()
            self._event.set()
        for callback in callbacks:
            _run(callback)
        return True

    def raise_if_cancelled(self) -> None:
        error = self._error
        if error is not None:
            raise error

    def wait(self, timeout: float | None = None) -> bool:
        """Block until cancelled or ``timeout`` seconds passed; True when cancelled."""
        return self._event.wait(timeout)

    @contextlib.contextmanager
    def on_cancel(self, callback: Callback) -> Iterator[None]:
        """Run ``callback`` if the token is cancelled while the ``with`` block runs.

        Already cancelled: ``callback`` runs at once, before the block.
        """
        with self._lock:
            registered = self._error is None
            if registered:
                key = self._next_id
                self._next_id += 1
                self._callbacks[key] = callback
        if not registered:
            _run(callback)
        try:
            yield
        finally:
            if registered:
                with self._lock:
                    self._callbacks.pop(key, None)

    def child(self) -> CancelToken:
        """A token cancelled (with this token's error) whenever this one is.

        Call :meth:`release` on the child when the work it guards is over, so that a
        long-lived parent does not keep one link per child it ever had.
        """
        child = CancelToken()
        with self._lock:
            if self._error is None:
                key = self._next_id
                self._next_id += 1
                self._callbacks[key] = lambda: child.cancel(self._error)
                child._detach = lambda: self._forget(key)
                return child
        child.cancel(self._error)
        return child

    def release(self) -> None:
        """Detach from the parent, if any; the token itself stays as it is."""
        detach, self._detach = self._detach, None
        if detach is not None:
            detach()

    def _forget(self, key: int) -> None:
        with self._lock:
            self._callbacks.pop(key, None)


def _run(callback: Callback) -> None:
    try:
        callback()
    except Exception:
        log.exception("a cancellation callback failed")
