"""A lean reader for the common blob answer: ``200`` with a ``Content-Length``.

Blob GETs dominate a pull, and registries almost always answer them with a plain ``200`` and a
length.  httpx's response machinery then costs about half of a loopback pull's CPU (measured:
~400 MB/s through httpx, ~800 MB/s reading the socket with ``recv_into``).  :func:`exchange`
sends one GET on a fresh connection and returns an ``httpx.Response`` only for two answers:

* a plain ``200`` with a length, whose body is a :class:`BlobBody` (also in the response's
  extensions under :data:`BLOB_BODY`, for readers that fill their own buffer with
  :meth:`BlobBody.chunks`);
* a redirect that is to be followed (:func:`._policy.redirect_location`), without its body.

For anything else — ``401``, an error status, chunked encoding, no length, huge headers — it
returns ``None`` before touching the body, and the caller sends the request again through
httpcore, which handles all of those.

This reader sits behind the client's transport (:mod:`._wire`): it decides nothing about
credentials or redirects, which :class:`._transport.Session` decides for every request, and
gets its TLS context from the transport.  Only requests marked with the :data:`LEAN`
extension come here.

Socket failures are raised as the httpx exceptions the retry logic already understands.  The
sockets come from :func:`._network.connect`, so the guard of the calling exchange (its cancel
token) can shut them down: a cancelled read ends at once, and the caller sees the token is
cancelled.  Nothing on the per-chunk path looks at the guard.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterator
from types import TracebackType

import httpx

from pullwarden.runtime._network import connect
from pullwarden.runtime._policy import redirect_location

__all__ = ["BLOB_BODY", "LEAN", "MAX_HEADER_BYTES", "BlobBody", "exchange"]

LEAN = "pullwarden.lean"  # request extension: a GET that the lean reader may answer
BLOB_BODY = "pullwarden.blob_body"  # response extension: the BlobBody of a lean answer
MAX_HEADER_BYTES = 64 * 1024
_RECV = 256 * 1024
_ITER_CHUNK = 64 * 1024

Head = tuple[int, bytes, list[tuple[bytes, bytes]], bytes]  # status, reason, headers, rest


class BlobBody(httpx.SyncByteStream):
    """The body of a ``200`` answer on its own connection; ``readinto`` until ``length``."""

    def __init__(self, sock: socket.socket, initial: bytes, length: int) -> None:
        self._sock = sock
        self._pending = initial[:length]
        self.length = length
        self._received = 0

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
        self._sock.close()

    def __enter__(self) -> BlobBody:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def exchange(request: httpx.Request, context: ssl.SSLContext) -> httpx.Response | None:
    """Send the GET ``request`` on a fresh connection (TLS with ``context`` for https).

    The answer when it is a plain ``200`` with a length or a redirect to follow, else None
    (nothing of the body read; the connection is closed).
    """
    url = request.url
    if request.method != "GET" or url.scheme not in ("http", "https"):
        return None
    timeouts = request.extensions.get("timeout", {})
    sock = _connect(url, timeouts.get("connect"), context)
    try:
        try:
            sock.settimeout(timeouts.get("read"))
            sock.sendall(_request_bytes(request))
        except OSError as err:
            raise httpx.WriteError(f"connection failed while sending: {err}") from err
        head = _read_head(sock)
        answer = None if head is None else _answer(sock, head)
    except BaseException:
        sock.close()
        raise
    if answer is None or BLOB_BODY not in answer.extensions:
        sock.close()  # nothing more is read from this connection
    return answer


def _connect(url: httpx.URL, timeout: float | None, context: ssl.SSLContext) -> socket.socket:
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        connection = connect(url.host, port, timeout)
    except TimeoutError as err:
        raise httpx.ConnectTimeout(f"timed out connecting to {url.host}:{port}") from err
    except OSError as err:
        raise httpx.ConnectError(f"{err.strerror or err}") from err
    if url.scheme != "https":
        return connection.sock
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
    return connection.sock


def _request_bytes(request: httpx.Request) -> bytes:
    """The request head as httpx would send it, but asking the server to close afterwards."""
    lines = [b"GET " + request.url.raw_path + b" HTTP/1.1"]
    lines += [
        name + b": " + value for name, value in request.headers.raw if not _is_connection(name)
    ]
    lines.append(b"Connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _is_connection(name: bytes) -> bool:
    return name.lower() == b"connection"


def _read_head(sock: socket.socket) -> Head | None:
    """Status, reason, headers and the body bytes that came with them; None when too large."""
    data = b""
    while b"\r\n\r\n" not in data:
        if len(data) > MAX_HEADER_BYTES:
            return None
        try:
            chunk = sock.recv(_RECV)
        except TimeoutError as err:
            raise httpx.ReadTimeout(f"timed out waiting for the answer: {err}") from err
        except OSError as err:
            raise httpx.ReadError(f"connection failed: {err}") from err
        if not chunk:
            raise httpx.RemoteProtocolError("connection closed before the answer's headers")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.split(b"\r\n")
    status, reason = _status(status_line)
    return status, reason, [_header(line) for line in header_lines], rest


def _status(line: bytes) -> tuple[int, bytes]:
    parts = line.split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1.") or not parts[1].isdigit():
        text = line.decode("latin-1")
        raise httpx.RemoteProtocolError(f"malformed status line {text[:80]!r}")
    return int(parts[1]), parts[2] if len(parts) > 2 else b""


def _header(line: bytes) -> tuple[bytes, bytes]:
    name, sep, value = line.partition(b":")
    if not sep:
        raise httpx.RemoteProtocolError("malformed header line")
    return name.strip(), value.strip()


def _answer(sock: socket.socket, head: Head) -> httpx.Response | None:
    """The response for a head this reader handles (see the module notes), else None."""
    status, reason, headers, rest = head
    extensions: dict[str, object] = {"http_version": b"HTTP/1.1", "reason_phrase": reason}
    response = httpx.Response(status, headers=headers, extensions=extensions)
    if status != 200:
        return response if redirect_location("GET", response) is not None else None
    length = response.headers.get("Content-Length", "")
    if "Transfer-Encoding" in response.headers or not length.isdigit():
        return None
    body = BlobBody(sock, rest, int(length))
    extensions[BLOB_BODY] = body
    return httpx.Response(status, headers=headers, stream=body, extensions=extensions)
