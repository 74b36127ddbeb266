"""The lean blob reader: the plain-200 case it reads itself, and every case it hands back.

The reader sits behind the client's transport (runtime._wire): these tests drive it directly
(``exchange``) and through a RegistryClient on real loopback sockets, where the session's rules
decide what is sent where and the reader only reads.
"""

from __future__ import annotations

import base64
import http.server
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pullwarden.devregistry import DevRegistry
from pullwarden.runtime import (
    AuthConfig,
    HostOptions,
    LocalImageService,
    RegistryClient,
    build_image,
    oci,
)
from pullwarden.runtime._fastblob import BLOB_BODY, LEAN, MAX_HEADER_BYTES, BlobBody, exchange
from tests.runtime.loopback import Loopback, head
from tests.runtime.test_registry import serve_tls

NO_TLS = ssl.create_default_context()  # never used: these servers speak plain HTTP


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


def get(url: httpx.URL, **headers: str) -> httpx.Request:
    timeout = httpx.Timeout(5.0).as_dict()
    return httpx.Request("GET", url, headers=headers, extensions={LEAN: True, "timeout": timeout})


def read_all(response: httpx.Response | None) -> bytes:
    assert response is not None
    body = response.extensions[BLOB_BODY]
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
    response = exchange(get(srv.url(), Authorization="Bearer x", User_Agent="t"), NO_TLS)
    assert response is not None and response.status_code == 200
    assert response.headers["Content-Length"] == "11"
    assert read_all(response) == b"hello world"
    sent = srv.requests[0]
    assert sent.startswith(b"GET /v2/ns/x/blobs/sha256:abc HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{srv.port}\r\n".encode() in sent
    assert b"Authorization: Bearer x\r\n" in sent  # whatever the session put in the request
    assert b"Connection: close\r\n" in sent and b"keep-alive" not in sent


def test_the_body_also_iterates_as_bytes(serve: list[CannedServer]) -> None:
    srv = CannedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world")
    serve.append(srv)
    response = exchange(get(srv.url()), NO_TLS)
    assert response is not None
    try:
        assert response.read() == b"hello world"
    finally:
        response.close()


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\n\r\nno length",
        b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n",
        b"HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n",  # a redirect to nowhere
        b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 10) + b"\r\n\r\n",
    ],
    ids=["401", "chunked", "no-length", "500", "no-location", "huge-headers"],
)
def test_other_answers_go_back_to_the_pool(serve: list[CannedServer], answer: bytes) -> None:
    srv = CannedServer(answer)
    serve.append(srv)
    assert exchange(get(srv.url()), NO_TLS) is None


def test_only_marked_gets_are_for_the_lean_reader() -> None:
    head_request = httpx.Request("HEAD", "http://127.0.0.1:1/x")
    assert exchange(head_request, NO_TLS) is None  # nothing sent: port 1 is never tried


def test_a_redirect_comes_back_without_its_body(serve: list[CannedServer]) -> None:
    srv = CannedServer(
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere/b?sig=1\r\n"
        b"Content-Length: 5\r\n\r\nbody!"
    )
    serve.append(srv)
    response = exchange(get(srv.url()), NO_TLS)
    assert response is not None and response.status_code == 307
    assert response.headers["Location"] == "http://elsewhere/b?sig=1"
    assert BLOB_BODY not in response.extensions
    assert response.read() == b""


def test_early_close_is_a_protocol_error(serve: list[CannedServer]) -> None:
    srv = CannedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
    serve.append(srv)
    with pytest.raises(httpx.RemoteProtocolError, match="after 9 of 100 bytes"):
        read_all(exchange(get(srv.url()), NO_TLS))


def test_garbage_status_line(serve: list[CannedServer]) -> None:
    srv = CannedServer(b"SPDY/9 what\r\n\r\n")
    serve.append(srv)
    with pytest.raises(httpx.RemoteProtocolError, match="malformed status line"):
        exchange(get(srv.url()), NO_TLS)


def test_refused_connection_is_a_connect_error() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(httpx.ConnectError):
        exchange(get(httpx.URL(f"http://127.0.0.1:{port}/x")), NO_TLS)


# --- through a client: the session's rules, the lean reader's reading -------------------------

BLOB = b"lean blob " * 10_000
BLOB_DESC = oci.Descriptor(oci.OCI_LAYER_GZIP, oci.digest_of(BLOB), len(BLOB))
ALICE = AuthConfig("alice", "alice-pw-S3cret")
BASIC = "Basic " + base64.b64encode(b"alice:alice-pw-S3cret").decode()


def test_redirect_elsewhere_drops_the_credentials(tmp_path: Path) -> None:
    storage = CannedServer(
        f"HTTP/1.1 200 OK\r\nContent-Length: {len(BLOB)}\r\n\r\n".encode() + BLOB
    )

    def registry_behaviour(conn: socket.socket, request: bytes) -> None:
        if BASIC.encode() not in request:
            conn.sendall(
                head("401 Unauthorized", WWW_Authenticate='Basic realm="r"', Content_Length="0")
            )
            return
        location = str(storage.url("/data?sig=1"))
        conn.sendall(head("307 Temporary Redirect", Location=location, Content_Length="0"))

    registry = Loopback(registry_behaviour)
    with registry, RegistryClient(retries=0) as client:
        try:
            client.fetch_blob(f"{registry.host}/ns/x", BLOB_DESC, tmp_path / "b", ALICE)
        finally:
            storage.close()
        # bare (lean), bare again (the pool: the lean reader hands a 401 back), with Basic
        assert [BASIC.encode() in r for r in registry.requests] == [False, False, True]
        assert client.lean_blob_count == 1
    assert (tmp_path / "b").read_bytes() == BLOB
    (at_storage,) = storage.requests
    assert b"Authorization" not in at_storage
    assert at_storage.startswith(b"GET /data?sig=1 HTTP/1.1")


class _TLSBlobHandler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(len(BLOB)))
        self.end_headers()
        self.wfile.write(BLOB)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_the_lean_reader_uses_the_hosts_ca(tmp_path: Path) -> None:
    with serve_tls(tmp_path, _TLSBlobHandler) as (host, ca):
        client = RegistryClient(hosts={host: HostOptions(ca_file=ca)}, retries=0)
        with client:
            client.fetch_blob(f"{host}/ns/x", BLOB_DESC, tmp_path / "b")
            assert client.lean_blob_count == 1
    assert (tmp_path / "b").read_bytes() == BLOB


def test_a_real_pull_uses_the_lean_reader(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image = build_image(layout, "v1", files={"a": b"x" * 300_000, "b": b"y"})
    with DevRegistry() as reg, RegistryClient() as client:
        reg.add_image("ns/app", "v1", layout, "v1")
        with LocalImageService(tmp_path / "store", client=client) as store:
            assert store.pull_image(f"{reg.host}/ns/app:v1") == image.config_digest
        assert client.lean_blob_count == 1 + len(image.layer_digests)


def test_without_lean_blobs_the_pool_reads_them(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image = build_image(layout, "v1", files={"a": b"x" * 300_000})
    with DevRegistry() as reg, RegistryClient(lean_blobs=False) as client:
        reg.add_image("ns/app", "v1", layout, "v1")
        with LocalImageService(tmp_path / "store", client=client) as store:
            assert store.pull_image(f"{reg.host}/ns/app:v1") == image.config_digest
        assert client.lean_blob_count == 0
