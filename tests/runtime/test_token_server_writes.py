"""The test token server answers in one write, on sockets without Nagle's algorithm.

An answer written as headers and then body in two small writes waits, on a kept-alive
connection, for the client's delayed ACK before the body leaves (about 40 ms per token request),
which made token-auth latency figures meaningless.  Nothing here measures time: the handler's
writes and the accepted socket's options are looked at directly.
"""

from __future__ import annotations

import base64
import http.client
import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.infra import ALICE, TokenServer, make_pki


class _CountingWriter:
    """Stands in for a handler's ``wfile``: notes each write, passes it on."""

    def __init__(self, inner: Any, writes: list[bytes]) -> None:
        self._inner = inner
        self._writes = writes

    def write(self, data: bytes) -> int:
        self._writes.append(bytes(data))
        return int(self._inner.write(data))

    def flush(self) -> None:
        self._inner.flush()

    @property
    def closed(self) -> bool:
        return bool(self._inner.closed)

    def close(self) -> None:
        self._inner.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    token_server = TokenServer(make_pki(tmp_path_factory.mktemp("pki")))
    token_server.start()
    try:
        yield token_server
    finally:
        token_server.stop()


def _watch(server: TokenServer) -> tuple[list[bytes], list[int]]:
    """Record every write the server's handlers make and each accepted socket's TCP_NODELAY."""
    writes: list[bytes] = []
    nodelay: list[int] = []
    httpd = server._httpd
    assert httpd is not None
    base = httpd.RequestHandlerClass

    class Watched(base):  # type: ignore[valid-type,misc]
        def setup(self) -> None:
            super().setup()
            nodelay.append(self.connection.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            self.wfile = _CountingWriter(self.wfile, writes)  # type: ignore[has-type]

    httpd.RequestHandlerClass = Watched
    return writes, nodelay


def test_each_answer_is_one_write_on_a_nodelay_socket(server: TokenServer, tmp_path: Path) -> None:
    writes, nodelay = _watch(server)
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
    try:
        paths = [
            "/token?service=test-registry&scope=repository:ns/x:pull",  # anonymous
            "/token?service=other",  # refused: 400
            "/nowhere",  # 404
        ]
        for path in paths:  # one kept-alive connection, as a client's pool uses it
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            assert response.getheader("Content-Length") == str(len(body))
            json.loads(body)
        basic = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        try:
            value = base64.b64encode(f"{ALICE[0]}:wrong".encode()).decode()
            headers = {"Authorization": f"Basic {value}"}
            basic.request("GET", "/token?service=test-registry", headers=headers)
            refused = basic.getresponse()
            refused.read()
            assert refused.status == 401
            assert refused.getheader("WWW-Authenticate")
        finally:
            basic.close()
    finally:
        connection.close()
    assert len(nodelay) == 2 and all(nodelay), "TCP_NODELAY must be set on accepted sockets"
    assert len(writes) == 4, "each answer must leave in exactly one write"
    for write in writes:
        head, _, body = write.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 ")
        fields = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:])
        length = int(fields[b"Content-Length"])
        assert len(body) == length  # the whole body came in the same write
