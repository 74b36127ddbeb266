"""STAND-IN for faults a real registry does not produce: a loopback server that misbehaves.

:class:`Loopback` accepts connections on 127.0.0.1 and hands each to ``behave(conn, request)``
in a thread of its own, after reading the request head.  The helpers below are the behaviours
the cancellation and deadline tests need: never answer, answer and then stall mid-body, drip an
answer one byte at a time.  Every connection is shut down when the server closes, so a test
never leaves a thread blocked behind it.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable

Behaviour = Callable[[socket.socket, bytes], None]


class Loopback:
    def __init__(self, behave: Behaviour) -> None:
        self.behave = behave
        self.requests: list[bytes] = []
        self.closed = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        try:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            with self._lock:
                self.requests.append(data)
            self.behave(conn, data)
        except OSError:
            pass

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.requests) < n:
            if time.monotonic() > deadline:
                raise AssertionError(f"only {len(self.requests)} of {n} requests arrived")
            time.sleep(0.01)

    def close(self) -> None:
        self.closed.set()
        self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def __enter__(self) -> Loopback:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def head(status: str = "200 OK", **headers: str) -> bytes:
    lines = [f"HTTP/1.1 {status}"] + [f"{k.replace('_', '-')}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def never_answer(server: Loopback) -> Behaviour:
    """Read the request, then hold the connection open without a byte of answer."""

    def behave(conn: socket.socket, request: bytes) -> None:
        server.closed.wait(30)

    return behave


def stall_after(server: Loopback, answer: bytes) -> Behaviour:
    """Send ``answer`` (say headers and half a body), then hold the connection open."""

    def behave(conn: socket.socket, request: bytes) -> None:
        conn.sendall(answer)
        server.closed.wait(30)

    return behave


def drip(server: Loopback, answer: bytes, every: float = 0.05) -> Behaviour:
    """Send ``answer`` one byte at a time, ``every`` seconds apart."""

    def behave(conn: socket.socket, request: bytes) -> None:
        for i in range(len(answer)):
            if server.closed.wait(every):
                return
            conn.sendall(answer[i : i + 1])

    return behave
