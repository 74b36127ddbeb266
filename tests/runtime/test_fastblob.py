"""The lean blob reader: the plain-200 case it reads itself, and every case it hands back."""

from __future__ import annotations

import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pullwarden.devregistry import DevRegistry
from pullwarden.runtime._fastblob import MAX_HEADER_BYTES, open_blob
from pullwarden.runtime.layout import build_image
from pullwarden.runtime.registry import RegistryClient
from pullwarden.runtime.store import LocalImageService


class CannedServer:
    """Answers every connection with the same bytes, then closes; records what it received."""

    def __init__(self, answer: bytes) -> None:
        self.answer = answer
        self.requests: list[bytes] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data)
                conn.sendall(self.answer)

    def url(self, path: str = "/v2/ns/x/blobs/sha256:abc") -> httpx.URL:
        return httpx.URL(f"http://127.0.0.1:{self.port}{path}")

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def serve() -> Iterator[list[CannedServer]]:
    servers: list[CannedServer] = []
    yield servers
    for s in servers:
        s.close()


def no_tls(url: httpx.URL) -> ssl.SSLContext:
    raise AssertionError("plain HTTP only")


def read_all(body: object) -> bytes:
    from pullwarden.runtime._fastblob import BlobBody

    assert isinstance(body, BlobBody)
    buf = memoryview(bytearray(7))  # small buffer: many reads
    out = b""
    with body:
        while len(out) < body.length:
            n = body.readinto(buf)
            out += bytes(buf[:n])
    return out


def test_plain_200_is_read_here(serve: list[CannedServer]) -> None:
    srv = CannedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world")
    serve.append(srv)
    body = open_blob(
        srv.url(),
        {"User-Agent": "t"},
        timeout=5,
        tls=no_tls,
        authorization="Bearer x",
        origin=("http", "127.0.0.1", srv.port),
    )
    assert read_all(body) == b"hello world"
    assert b"Authorization: Bearer x" in srv.requests[0]
    assert srv.requests[0].startswith(b"GET /v2/ns/x/blobs/sha256:abc HTTP/1.1\r\n")


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nno length",
        b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 10) + b"\r\n\r\n",
    ],
    ids=["401", "chunked", "no-length", "500", "huge-headers"],
)
def test_other_answers_go_back_to_httpx(serve: list[CannedServer], answer: bytes) -> None:
    srv = CannedServer(answer)
    serve.append(srv)
    assert open_blob(srv.url(), {}, timeout=5, tls=no_tls) is None


def test_early_close_is_a_protocol_error(serve: list[CannedServer]) -> None:
    srv = CannedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
    serve.append(srv)
    with pytest.raises(httpx.RemoteProtocolError, match="after 9 of 100 bytes"):
        read_all(open_blob(srv.url(), {}, timeout=5, tls=no_tls))


def test_garbage_status_line(serve: list[CannedServer]) -> None:
    srv = CannedServer(b"SPDY/9 what\r\n\r\n")
    serve.append(srv)
    with pytest.raises(httpx.RemoteProtocolError, match="malformed status line"):
        open_blob(srv.url(), {}, timeout=5, tls=no_tls)


def test_refused_connection_is_a_connect_error() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(httpx.ConnectError):
        open_blob(httpx.URL(f"http://127.0.0.1:{port}/x"), {}, timeout=5, tls=no_tls)


def test_redirect_elsewhere_drops_the_credentials(serve: list[CannedServer]) -> None:
    target = CannedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    serve.append(target)
    hop = CannedServer(
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: "
        + str(target.url("/data?sig=1")).encode()
        + b"\r\nContent-Length: 0\r\n\r\n"
    )
    serve.append(hop)
    body = open_blob(
        hop.url(),
        {},
        timeout=5,
        tls=no_tls,
        authorization="Basic c2VjcmV0",
        origin=("http", "127.0.0.1", hop.port),
    )
    assert read_all(body) == b"ok"
    assert b"Authorization" in hop.requests[0]
    assert b"Authorization" not in target.requests[0]
    assert target.requests[0].startswith(b"GET /data?sig=1 HTTP/1.1")


def test_a_real_pull_uses_the_lean_reader(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image = build_image(layout, "v1", files={"a": b"x" * 300_000, "b": b"y"})
    with DevRegistry() as reg, RegistryClient() as client:
        reg.add_image("ns/app", "v1", layout, "v1")
        with LocalImageService(tmp_path / "store", client=client) as store:
            assert store.pull_image(f"{reg.host}/ns/app:v1") == image.config_digest
        assert client.lean_blob_count == 1 + len(image.layer_digests)
