"""A throttled loopback link: a TCP proxy on 127.0.0.1 in front of a real server.

Answers (upstream → client) are forwarded at ``rate`` bytes per second per connection (None:
as fast as they come), and the link can be stalled: no more answer bytes until ``resume()``,
or automatically once ``stall_after`` answer bytes have passed.  That is a slow or stalled
network, which the real docker-registry behind it cannot be made to produce by itself.
Requests (client → upstream) pass at full speed; their request lines are recorded, so a test
can wait for "the manifest request has gone out" before it acts.
"""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time

_REQUEST_LINE = re.compile(rb"(GET|HEAD|POST|PUT|PATCH|DELETE) (\S+) HTTP/1\.[01]\r\n")
_TICK = 0.02  # seconds of traffic forwarded per step at the configured rate


class ThrottledLink:
    """Forwards 127.0.0.1:<port> to ``upstream`` (host, port)."""

    def __init__(self, upstream: tuple[str, int], rate: float | None = None) -> None:
        self.upstream = upstream
        self.rate = rate
        self.stall_after: int | None = None
        self.forwarded = 0  # answer bytes sent to clients, all connections
        self._requests: list[tuple[str, str]] = []
        self._cond = threading.Condition()
        self._stalled = False
        self._closed = False
        self._sockets: set[socket.socket] = set()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[tuple[str, str]]:
        with self._cond:
            return list(self._requests)

    def wait_for_request(self, fragment: str, timeout: float = 10.0) -> bool:
        """Wait until a request whose path contains ``fragment`` has gone upstream."""
        with self._cond:
            return self._cond.wait_for(
                lambda: any(fragment in path for _, path in self._requests), timeout
            )

    def stall(self) -> None:
        with self._cond:
            self._stalled = True

    def resume(self) -> None:
        with self._cond:
            self._stalled = False
            self.stall_after = None
            self._cond.notify_all()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
            sockets = list(self._sockets)
        self._server.close()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def __enter__(self) -> ThrottledLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- internals -----------------------------------------------------------------------------

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._cond:
                if self._closed:
                    client.close()
                    upstream.close()
                    return
                self._sockets.update((client, upstream))
            threading.Thread(
                target=self._requests_pump, args=(client, upstream), daemon=True
            ).start()
            threading.Thread(
                target=self._answers_pump, args=(upstream, client), daemon=True
            ).start()

    def _requests_pump(self, client: socket.socket, upstream: socket.socket) -> None:
        pending = b""
        try:
            while data := client.recv(65536):
                pending = (pending + data)[-8192:]
                found = list(_REQUEST_LINE.finditer(pending))
                if found:
                    with self._cond:
                        self._requests.extend((m[1].decode(), m[2].decode()) for m in found)
                        self._cond.notify_all()
                    pending = pending[found[-1].end() :]
                upstream.sendall(data)
        except OSError:
            pass
        finally:
            self._hang_up(client, upstream)

    def _answers_pump(self, upstream: socket.socket, client: socket.socket) -> None:
        try:
            while True:
                rate = self.rate
                step = 65536 if rate is None else max(1, int(rate * _TICK))
                started = time.monotonic()
                data = upstream.recv(step)
                if not data:
                    return
                for piece in self._pieces(data):
                    if not self._wait_while_stalled():
                        return
                    client.sendall(piece)
                    with self._cond:
                        self.forwarded += len(piece)
                        if self.stall_after is not None and self.forwarded >= self.stall_after:
                            self._stalled = True
                if rate is not None:
                    pause = len(data) / rate - (time.monotonic() - started)
                    if pause > 0:
                        time.sleep(pause)
        except OSError:
            pass
        finally:
            self._hang_up(upstream, client)

    def _pieces(self, data: bytes) -> list[bytes]:
        """Split at the stall point so that exactly ``stall_after`` bytes get through."""
        with self._cond:
            limit = self.stall_after
            if limit is None or self.forwarded + len(data) <= limit:
                return [data]
            cut = max(0, limit - self.forwarded)
        return [piece for piece in (data[:cut], data[cut:]) if piece]

    def _wait_while_stalled(self) -> bool:
        with self._cond:
            self._cond.wait_for(lambda: not self._stalled or self._closed)
            return not self._closed

    def _hang_up(self, *sockets: socket.socket) -> None:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
