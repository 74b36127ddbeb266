"""A lean reader for the common blob answer: ``200`` with a ``Content-Length``.

Blob GETs dominate a pull, and registries almost always answer them with a plain ``200`` and a
length.  httpx's response machinery then costs about half of a loopback pull's CPU (measured:
~400 MB/s through httpx, ~800 MB/s reading the socket with ``recv_into``).  :func:`exchange`
sends one GET and returns an ``httpx.Response`` only for two answers:

* a plain ``200`` with a length, whose body is a :class:`BlobBody` (also in the response's
  extensions under :data:`BLOB_BODY`, for readers that fill their own buffer with
  :meth:`BlobBody.chunks`);
* a redirect that is to be followed (:func:`._policy.redirect_location`), without its body.

For anything else — ``401``, an error status, chunked encoding, no length, huge headers — it
returns ``None`` before touching the body, and the caller sends the request again through
httpcore, which handles all of those.

**Keep-alive.** Given an :class:`IdleConnections` (the client transport's, one per client),
the GET goes out on an idle connection kept from an earlier answer when there is one, else on
a new one.  Idle connections are kept apart by :data:`PoolKey`: origin (scheme, host, port),
the TLS context, and a fingerprint of the ``Authorization`` the request carries — so a
connection never serves another origin (a redirect to storage uses the storage origin's
connections), another TLS configuration or other credentials.  A connection goes back only
when its answer was read to its last byte (a blob body read completely, or a redirect whose
whole body came with its head), the answer was HTTP/1.1 and did not say ``Connection: close``,
and nothing came after it.  Before reuse an idle connection must show nothing to read (a
server that closed it shows end-of-file) and be younger than :data:`IDLE_EXPIRY`; a reused
connection that the server closed before answering is dropped and the GET sent once more on
another, which is safe for a GET.  Closing the pool closes every idle connection, and one
returned later is closed instead of kept.

This reader sits behind the client's transport (:mod:`._wire`): it decides nothing about
credentials or redirects, which :class:`._transport.Session` decides for every request, and
gets its TLS context from the transport.  Only requests marked with the :data:`LEAN`
extension come here.

Socket failures are raised as the httpx exceptions the retry logic already understands.  The
sockets come from :func:`._network.connect`, and a reused one is handed to the guard of the
calling exchange too (its cancel token), so the guard can shut it down: a cancelled read ends
at once, and the caller sees the token is cancelled.  A connection going back to the pool is
no longer watched by that guard.  Nothing on the per-chunk path looks at the guard.
"""

from __future__ import annotations

import hashlib
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from types import TracebackType

import httpx

from pullwarden.runtime._network import Connection, Guard, connect, current_guard, idle_usable
from pullwarden.runtime._policy import origin_of, redirect_location

__all__ = [
    "BLOB_BODY",
    "IDLE_EXPIRY",
    "LEAN",
    "MAX_HEADER_BYTES",
    "MAX_IDLE_PER_KEY",
    "BlobBody",
    "IdleConnections",
    "PoolKey",
    "exchange",
]

LEAN = "pullwarden.lean"  # request extension: a GET that the lean reader may answer
BLOB_BODY = "pullwarden.blob_body"  # response extension: the BlobBody of a lean answer
MAX_HEADER_BYTES = 64 * 1024
MAX_IDLE_PER_KEY = 8  # idle connections kept per PoolKey (more are closed)
IDLE_EXPIRY = 5.0  # seconds an idle connection is kept (httpcore's pool keeps them as long)
_RECV = 256 * 1024
_ITER_CHUNK = 64 * 1024

# scheme, host, port, id of the TLS context, fingerprint of the Authorization value
PoolKey = tuple[str, str, int, int, bytes]
Head = tuple[bytes, int, bytes, list[tuple[bytes, bytes]], bytes]  # version, status, reason, …
Release = Callable[[Connection], None]


class IdleConnections:
    """Idle keep-alive connections of the lean reader, at most ``per_key`` for each key."""

    def __init__(
        self,
        *,
        per_key: int = MAX_IDLE_PER_KEY,
        expiry: float = IDLE_EXPIRY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._per_key = max(0, per_key)
        self._expiry = expiry
        self._clock = clock
        self._lock = threading.Lock()
        self._idle: dict[PoolKey, list[tuple[Connection, float]]] = {}
        self._closed = False

    def take(self, key: PoolKey) -> Connection | None:
        """The most recently kept usable connection for ``key`` (the others stay), or None."""
        while True:
            with self._lock:
                entries = self._idle.get(key)
                if not entries:
                    return None
                connection, since = entries.pop()
                if not entries:
                    del self._idle[key]
            if self._clock() - since <= self._expiry and idle_usable(connection):
                return connection
            connection.close()

    def put(self, key: PoolKey, connection: Connection) -> None:
        """Keep ``connection`` for ``key``; closed instead when full, expired or closed."""
        now = self._clock()
        expired: list[Connection] = []
        with self._lock:
            for other, entries in list(self._idle.items()):
                fresh = [e for e in entries if now - e[1] <= self._expiry]
                expired.extend(c for c, since in entries if now - since > self._expiry)
                if fresh:
                    self._idle[other] = fresh
                else:
                    del self._idle[other]
            entries = self._idle.setdefault(key, [])
            kept = not self._closed and len(entries) < self._per_key
            if kept:
                entries.append((connection, now))
            elif not entries:
                del self._idle[key]
        for stale in expired:
            stale.close()
        if not kept:
            connection.close()

    def idle(self, key: PoolKey | None = None) -> int:
        """How many connections are kept (for ``key``, or in all)."""
        with self._lock:
            if key is not None:
                return len(self._idle.get(key, ()))
            return sum(len(entries) for entries in self._idle.values())

    def close(self) -> None:
        """Close every idle connection; from now on returned ones are closed, not kept."""
        with self._lock:
            self._closed = True
            entries = [c for kept in self._idle.values() for c, _ in kept]
            self._idle.clear()
        for connection in entries:
            connection.close()


def pool_key(request: httpx.Request, context: ssl.SSLContext | None) -> PoolKey:
    """Where a connection for ``request`` may come from (see the module notes)."""
    scheme, host, port = origin_of(request.url)
    authorization = request.headers.get("Authorization")
    fingerprint = (
        b"" if authorization is None else hashlib.sha256(authorization.encode()).digest()[:16]
    )
    return scheme, host, port, id(context) if scheme == "https" else 0, fingerprint


class BlobBody(httpx.SyncByteStream):
    """The body of a ``200`` answer; ``readinto`` until ``length``.

    Closing it closes the connection, or hands it to ``release`` (to be kept for another
    request) when the body was read completely and ``release`` is given.
    """

    def __init__(
        self, connection: Connection, initial: bytes, length: int, release: Release | None = None
    ) -> None:
        self._connection: Connection | None = connection
        self._sock = connection.sock
        self._pending = initial[:length]
        self._release = release if len(initial) <= length else None  # bytes beyond the body
        self.length = length
        self._received = 0

    @property
    def complete(self) -> bool:
        return self._received == self.length

    def readinto(self, buffer: memoryview) -> int:
        """Fill the start of ``buffer``; raises if the peer closes before ``length`` bytes."""
        if self._pending:
            n = min(len(self._pending), len(buffer))
            buffer[:n] = self._pending[:n]
            self._pending = self._pending[n:]
            self._received += n
            return n
        want = min(len(buffer), self.length - self._received)
        if want <= 0:
            return 0
        try:
            n = self._sock.recv_into(buffer, want)
        except TimeoutError as err:
            raise httpx.ReadTimeout(f"timed out reading the blob: {err}") from err
        except OSError as err:
            raise httpx.ReadError(f"connection failed while reading the blob: {err}") from err
        if n == 0:
            raise httpx.RemoteProtocolError(
                f"connection closed after {self._received} of {self.length} bytes"
            )
        self._received += n
        return n

    def chunks(self, buffer: memoryview) -> Iterator[memoryview]:
        """The whole body, one filled slice of ``buffer`` at a time (valid until the next)."""
        while (n := self.readinto(buffer)) > 0:
            yield buffer[:n]

    def __iter__(self) -> Iterator[bytes]:
        """The body as ``bytes`` (for httpx's ``iter_bytes``; the blob writer uses chunks)."""
        buffer = memoryview(bytearray(_ITER_CHUNK))
        for chunk in self.chunks(buffer):
            yield bytes(chunk)

    def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        if self._release is not None and self.complete:
            self._release(connection)
        else:
            connection.close()

    def __enter__(self) -> BlobBody:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


class _Stale(Exception):
    """A kept connection turned out closed before it answered (send the GET on another)."""


def exchange(
    request: httpx.Request, context: ssl.SSLContext | None, idle: IdleConnections | None = None
) -> httpx.Response | None:
    """Send the GET ``request`` (TLS with ``context`` for https); see the module notes.

    On a connection from ``idle`` when it has one for the request, else on a new one (kept
    there afterwards when it may be); without ``idle``, on a new one that is closed afterwards.
    The answer when it is a plain ``200`` with a length or a redirect to follow, else None
    (nothing of the body read; the connection is closed).
    """
    url = request.url
    if request.method != "GET" or url.scheme not in ("http", "https"):
        return None
    if url.scheme == "https" and context is None:
        return None  # the transport always has one for https; without it, no TLS here
    timeouts = request.extensions.get("timeout", {})
    guard = current_guard()
    key = pool_key(request, context) if idle is not None else None
    payload = _request_bytes(request, keep_alive=idle is not None)
    while True:
        if guard is not None:
            guard.check()  # cancelled: leave the kept connections alone
        connection = idle.take(key) if idle is not None and key is not None else None
        reused = connection is not None
        if connection is None:
            connection = _connect(url, timeouts.get("connect"), context)
        elif guard is not None:
            guard.watch(connection)
        try:
            head = _send(connection.sock, payload, timeouts.get("read"), reused)
            if head is None:
                connection.close()
                return None
            release = None if idle is None or key is None else _releaser(idle, key, guard)
            answer = _answer(connection, head, release)
        except _Stale:
            connection.close()
            continue
        except BaseException:
            connection.close()
            raise
        if answer is None:
            connection.close()  # nothing more is read from this connection
        return answer


def _releaser(idle: IdleConnections, key: PoolKey, guard: Guard | None) -> Release:
    def release(connection: Connection) -> None:
        if guard is not None:
            guard.unwatch(connection)
        idle.put(key, connection)

    return release


def _send(sock: socket.socket, payload: bytes, timeout: float | None, reused: bool) -> Head | None:
    """Send the request and read the answer's head (None: too large to be ours)."""
    try:
        sock.settimeout(timeout)
        sock.sendall(payload)
    except TimeoutError as err:
        raise httpx.WriteTimeout(f"timed out sending: {err}") from err
    except OSError as err:
        if reused:
            raise _Stale from err
        raise httpx.WriteError(f"connection failed while sending: {err}") from err
    return _read_head(sock, reused)


def _connect(url: httpx.URL, timeout: float | None, context: ssl.SSLContext | None) -> Connection:
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        connection = connect(url.host, port, timeout)
    except TimeoutError as err:
        raise httpx.ConnectTimeout(f"timed out connecting to {url.host}:{port}") from err
    except OSError as err:
        raise httpx.ConnectError(f"{err.strerror or err}") from err
    if url.scheme != "https" or context is None:
        return connection
    try:
        connection.start_tls(context, url.host, timeout)
    except ssl.SSLCertVerificationError as err:
        connection.close()
        raise httpx.ConnectError(f"certificate verify failed: {err.verify_message}") from err
    except OSError as err:
        connection.close()
        raise httpx.ConnectError(f"TLS handshake failed: {err}") from err
    except BaseException:
        connection.close()
        raise
    return connection


def _request_bytes(request: httpx.Request, *, keep_alive: bool) -> bytes:
    """The request head as httpx would send it, asking to keep the connection or to close it."""
    lines = [b"GET " + request.url.raw_path + b" HTTP/1.1"]
    lines += [
        name + b": " + value for name, value in request.headers.raw if not _is_connection(name)
    ]
    lines.append(b"Connection: keep-alive" if keep_alive else b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _is_connection(name: bytes) -> bool:
    return name.lower() == b"connection"


def _read_head(sock: socket.socket, reused: bool = False) -> Head | None:
    """Version, status, reason, headers and the body bytes that came with them.

    None when the head is too large.  On a ``reused`` connection, an end-of-file or a reset
    before the first byte raises _Stale: the server closed the idle connection.
    """
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEADER_BYTES:
            return None
        try:
            chunk = sock.recv(_RECV)
        except TimeoutError as err:
            raise httpx.ReadTimeout(f"timed out waiting for the answer: {err}") from err
        except OSError as err:
            if reused and not data:
                raise _Stale from err
            raise httpx.ReadError(f"connection failed: {err}") from err
        if not chunk:
            if reused and not data:
                raise _Stale
            raise httpx.RemoteProtocolError("connection closed before the answer's headers")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    version, status, reason = _status(status_line)
    return version, status, reason, [_header(line) for line in header_lines], rest


def _status(line: bytes) -> tuple[bytes, int, bytes]:
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        text = line.decode("latin-1")
        raise httpx.RemoteProtocolError(f"malformed status line {text[:80]!r}")
    return parts[0], int(parts[1]), parts[2] if len(parts) > 2 else b""


def _header(line: bytes) -> tuple[bytes, bytes]:
    name, sep, value = line.partition(b":")
    if not sep:
        raise httpx.RemoteProtocolError("malformed header line")
    return name.strip(), value.strip()


def _answer(connection: Connection, head: Head, release: Release | None) -> httpx.Response | None:
    """The response for a head this reader handles (see the module notes), else None.

    The connection is the caller's to close when None comes back; otherwise it belongs to the
    answer: a blob body closes it or hands it to ``release``, a redirect's is released or
    closed here.
    """
    version, status, reason, headers, rest = head
    extensions: dict[str, object] = {"http_version": b"HTTP/1.1", "reason_phrase": reason}
    response = httpx.Response(status, headers=headers, extensions=extensions)
    length = response.headers.get("Content-Length", "")
    sized = "Transfer-Encoding" not in response.headers and length.isdigit()
    keeps = release is not None and _keeps_alive(version, response)
    if status != 200:
        if redirect_location("GET", response) is None:
            return None
        if keeps and sized and int(length) == len(rest):  # its whole body came with the head
            assert release is not None
            release(connection)
        else:
            connection.close()
        return response
    if not sized:
        return None
    body = BlobBody(connection, rest, int(length), release if keeps else None)
    extensions[BLOB_BODY] = body
    return httpx.Response(status, headers=headers, stream=body, extensions=extensions)


def _keeps_alive(version: bytes, response: httpx.Response) -> bool:
    """True when an HTTP/1.1 answer leaves the connection open (no ``Connection: close``)."""
    if version != b"HTTP/1.1":
        return False
    tokens = ",".join(response.headers.get_list("Connection")).lower().split(",")
    return "close" not in (token.strip() for token in tokens)
