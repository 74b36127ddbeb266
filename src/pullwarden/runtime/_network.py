"""Registry sockets that a cancel token can interrupt and a deadline can bound.

Every exchange with a registry runs inside :func:`guarded`, which installs a :class:`Guard` (a
:class:`~pullwarden._cancel.CancelToken` and an optional deadline) in a context variable.  The
code that actually blocks — the HTTP/1.1 of :mod:`._http1`, which carries all of the client's
traffic — finds the guard there, so neither the token nor the deadline has to be threaded
through the transport.

* **Cancellation.** Every socket used under a guard is registered with the guard's token for as
  long as the guard lasts.  Cancelling the token shuts the socket down (``SHUT_RDWR``), which
  wakes a thread blocked in ``connect``, ``send`` or ``recv`` on it at once, whichever thread
  (or signal handler) cancels.  The woken operation raises the token's error (:func:`fail`).
* **Deadline.** The timeout of every socket operation is clipped to what is left of the guard's
  deadline, so a server that drips its answer one byte at a time cannot hold the exchange past
  it.  Past the deadline an operation raises :class:`DeadlineExceeded` (an
  :class:`~._messages.TimeoutException`, so the retry logic treats it like any timeout).

Outside any guard the sockets behave like plain ones (per-operation timeouts only).
"""

from __future__ import annotations

import contextlib
import contextvars
import select
import socket
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, NoReturn

from pullwarden._cancel import CancelToken
from pullwarden._gofmt import go_duration, seconds_to_ns
from pullwarden.runtime._messages import TimeoutException

if TYPE_CHECKING:
    import ssl  # a plain-HTTP pull never loads it

__all__ = [
    "Connection",
    "DeadlineExceeded",
    "Guard",
    "connect",
    "current_guard",
    "fail",
    "guarded",
    "idle_usable",
]


class DeadlineExceeded(TimeoutException):
    """An exchange did not complete within its overall deadline."""


class Guard:
    """A cancel token and a deadline for one exchange, and the sockets it has touched."""

    __slots__ = ("_budget", "_watched", "deadline", "token")

    def __init__(
        self, token: CancelToken | None, deadline: float | None, budget: float | None
    ) -> None:
        self.token = token
        self.deadline = deadline  # time.monotonic() value, or None
        self._budget = budget  # the seconds the deadline stands for, for messages
        # each watched connection and its registration with the token (exited to end it)
        self._watched: dict[Connection, contextlib.AbstractContextManager[None]] = {}

    def watch(self, connection: Connection) -> None:
        """Shut ``connection`` down if the token is cancelled while this guard lasts.

        A guard belongs to the thread (context) that entered it, so no lock is needed here;
        the token runs the callback in whichever thread cancels.
        """
        if self.token is None or connection in self._watched:
            return
        registration = self.token.on_cancel(connection.abort)
        registration.__enter__()
        self._watched[connection] = registration

    def unwatch(self, connection: Connection) -> None:
        """Stop watching ``connection`` (it goes back to a pool, to serve other exchanges)."""
        registration = self._watched.pop(connection, None)
        if registration is not None:
            registration.__exit__(None, None, None)

    def check(self) -> None:
        """Raise the token's error when cancelled, DeadlineExceeded when past the deadline."""
        if self.token is not None:
            self.token.raise_if_cancelled()
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise self.expired()

    def clip(self, timeout: float | None) -> float | None:
        """``timeout`` shortened to what is left before the deadline (after :meth:`check`)."""
        self.check()
        if self.deadline is None:
            return timeout
        left = max(self.deadline - time.monotonic(), 0.001)
        return left if timeout is None else min(timeout, left)

    def failed(self, error: BaseException) -> BaseException:
        """What to raise instead of ``error`` from a socket operation, if anything else.

        The token's error once cancelled (the failure was most likely the shutdown that
        cancelling causes); DeadlineExceeded when the deadline has passed.
        """
        if self.token is not None and self.token.error is not None:
            return self.token.error
        if self.deadline is not None and time.monotonic() >= self.deadline:
            return self.expired()
        return error

    def expired(self) -> DeadlineExceeded:
        budget = self._budget if self._budget is not None else 0.0
        return DeadlineExceeded(f"no complete answer within {go_duration(seconds_to_ns(budget))}")

    def close(self) -> None:
        while self._watched:
            self.unwatch(next(iter(self._watched)))


_GUARD: contextvars.ContextVar[Guard | None] = contextvars.ContextVar(
    "pullwarden_guard", default=None
)


def current_guard() -> Guard | None:
    return _GUARD.get()


@contextlib.contextmanager
def guarded(token: CancelToken | None, seconds: float | None = None) -> Iterator[Guard]:
    """Run the block under ``token`` and a deadline ``seconds`` from now (None: no deadline).

    Inside another guard, the tighter deadline applies and ``token`` defaults to the outer one.
    """
    outer = _GUARD.get()
    deadline = None if seconds is None else time.monotonic() + seconds
    budget = seconds
    if outer is not None:
        token = token if token is not None else outer.token
        if outer.deadline is not None and (deadline is None or outer.deadline < deadline):
            deadline, budget = outer.deadline, outer._budget
    guard = Guard(token, deadline, budget)
    reset = _GUARD.set(guard)
    try:
        guard.check()
        yield guard
    finally:
        _GUARD.reset(reset)
        guard.close()


# --- sockets ---------------------------------------------------------------------------------


class Connection:
    """One TCP (or TLS) socket that the current guard can shut down."""

    __slots__ = ("sock", "tls")

    def __init__(self, sock: socket.socket) -> None:
        self.sock: socket.socket = sock
        self.tls: ssl.SSLSocket | None = None  # the socket again, once TLS is set up

    def abort(self) -> None:
        """Wake every thread blocked on this socket (called by a cancelling thread)."""
        with contextlib.suppress(OSError):
            # socket.socket's own shutdown: SSLSocket.shutdown would also drop its TLS state
            # under the feet of a thread reading it.
            socket.socket.shutdown(self.sock, socket.SHUT_RDWR)

    def start_tls(
        self, context: ssl.SSLContext, server_hostname: str | None, timeout: float | None
    ) -> None:
        """Replace the socket by a TLS one (handshake done); errors are ssl/OS errors."""
        guard = _GUARD.get()
        if guard is not None:
            guard.watch(self)
            timeout = guard.clip(timeout)
        self.sock.settimeout(timeout)
        try:
            self.sock = self.tls = context.wrap_socket(self.sock, server_hostname=server_hostname)
        except OSError as err:
            fail(guard, err, err)

    def close(self) -> None:
        self.sock.close()


def fail(guard: Guard | None, error: BaseException, cause: BaseException) -> NoReturn:
    """Raise ``error`` (caused by ``cause``), or what the guard says to raise instead.

    Instead: the token's error once cancelled, DeadlineExceeded past the deadline.
    """
    replaced = error if guard is None else guard.failed(error)
    if replaced is not error:
        raise replaced from None  # the token's error is shared: keep its chain clean
    if error is cause:
        raise error
    raise error from cause


def connect(host: str, port: int, timeout: float | None) -> Connection:
    """Connect to ``host:port`` (each address in turn), watched by the current guard.

    Raises OSError (TimeoutError on timeout), the guard's token error once cancelled, or
    DeadlineExceeded.
    """
    guard = _GUARD.get()
    if guard is not None:
        timeout = guard.clip(timeout)
    # ASCII (a URL's host is): as bytes, getaddrinfo need not load the IDNA codec
    addresses = socket.getaddrinfo(host.encode("ascii"), port, type=socket.SOCK_STREAM)
    last: OSError = OSError(f"no address found for {host}")
    for family, kind, proto, _, address in addresses:
        connection = Connection(socket.socket(family, kind, proto))
        try:
            if guard is not None:
                guard.watch(connection)
                timeout = guard.clip(timeout)
            connection.sock.settimeout(timeout)
            connection.sock.connect(address)
        except OSError as err:
            connection.close()
            if guard is not None and guard.failed(err) is not err:
                fail(guard, err, err)
            last = err
            continue
        except BaseException:
            connection.close()
            raise
        connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection
    raise last


def idle_usable(connection: Connection) -> bool:
    """True when an idle connection may carry another request.

    It must still be open with nothing to read: an idle connection that is readable was closed
    by the peer (or shut down by a cancel) or holds bytes nobody asked for; a TLS one must
    hold no decrypted bytes either.
    """
    sock = connection.sock
    if sock.fileno() < 0:
        return False
    if connection.tls is not None and connection.tls.pending():
        return False
    return not _readable(sock)


def _readable(sock: socket.socket) -> bool:
    """True when an idle connection has something to read: the peer closed it, typically."""
    if sock.fileno() < 0:
        return True
    poller = select.poll()
    poller.register(sock, select.POLLIN)
    return bool(poller.poll(0))
