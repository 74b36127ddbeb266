"""HTTP/1.1 of our own (runtime._http1): every framing of an answer, and what it refuses.

The module sits behind the client's transport (runtime._wire): these tests drive it directly
(``exchange``) against canned answers on real loopback sockets, and through a RegistryClient,
where the session's rules decide what is sent where and this module only speaks HTTP.
"""

from __future__ import annotations

import base64
import http.server
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

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
from pullwarden.runtime._http1 import MAX_HEADER_BYTES, SIZED_BODY, SizedBody, exchange
from pullwarden.runtime._messages import (
    URL,
    ConnectError,
    RemoteProtocolError,
    Request,
    Response,
    UnsupportedProtocol,
)
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

    def url(self, path: str = "/v2/ns/x/blobs/sha256:abc") -> URL:
        return URL(f"http://127.0.0.1:{self.port}{path}")

    def close(self) -> None:
        self._sock.close()


@pytest.fixture
def serve() -> Iterator[list[CannedServer]]:
    servers: list[CannedServer] = []
    yield servers
    for s in servers:
        s.close()


def get(url: URL, **headers: str) -> Request:
    timeout = {"connect": 5.0, "read": 5.0, "write": 5.0}
    return Request("GET", url, headers=headers, extensions={"timeout": timeout})


def read_all(response: Response) -> bytes:
    body = response.extensions[SIZED_BODY]
    assert isinstance(body, SizedBody)
    buf = memoryview(bytearray(7))  # small buffer: many reads
    out = b""
    with body:
        while len(out) < body.length:
            n = body.readinto(buf)
            out += bytes(buf[:n])
    return out


def test_plain_200_is_read_into_the_callers_buffer(serve: list[CannedServer]) -> None:
    srv = CannedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world")
    serve.append(srv)
    response = exchange(get(srv.url(), Authorization="Bearer x", User_Agent="t"), NO_TLS)
    assert response.status_code == 200 and response.reason_phrase == "OK"
    assert response.headers["Content-Length"] == "11"
    assert read_all(response) == b"hello world"
    sent = srv.requests[0]
    assert sent.startswith(b"GET /v2/ns/x/blobs/sha256:abc HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{srv.port}\r\n".encode() in sent
    assert b"Authorization: Bearer x\r\n" in sent  # whatever the session put in the request
    assert b"Connection: close\r\n" in sent and b"keep-alive" not in sent
    assert b"Content-Length" not in sent  # a GET without a body says nothing of one


def test_the_body_also_iterates_as_bytes(serve: list[CannedServer]) -> None:
    srv = CannedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world")
    serve.append(srv)
    response = exchange(get(srv.url()), NO_TLS)
    try:
        assert response.read() == b"hello world"
    finally:
        response.close()


@pytest.mark.parametrize(
    ("answer", "status", "body"),
    [
        (b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope", 401, b"nope"),
        (b"HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", 500, b""),
        (b"HTTP/1.1 204 No Content\r\n\r\n", 204, b""),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n", 304, b""),
        (b"HTTP/1.1 200 OK\r\n\r\nuntil the end", 200, b"until the end"),
        (b"HTTP/1.0 200 OK\r\n\r\nold", 200, b"old"),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n1;ext=1\r\n \r\nA\r\n0123456789\r\n0\r\nTrailer: x\r\n\r\n",
            200,
            b"hello 0123456789",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nnot chunked",
            200,
            b"not chunked",
        ),
        (
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            200,
            b"ok",
        ),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok", 200, b"ok"),
        (
            b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere/b?sig=1\r\n"
            b"Content-Length: 5\r\n\r\nbody!",
            307,
            b"body!",
        ),
    ],
    ids=[
        "401",
        "500",
        "204",
        "304",
        "until-close",
        "http-1.0",
        "chunked",
        "other-coding",
        "interim-100",
        "repeated-length",
        "redirect",
    ],
)
def test_every_framing_of_an_answer(
    serve: list[CannedServer], answer: bytes, status: int, body: bytes
) -> None:
    srv = CannedServer(answer)
    serve.append(srv)
    response = exchange(get(srv.url()), NO_TLS)
    try:
        assert response.status_code == status
        assert response.read() == body
    finally:
        response.close()


def test_a_head_answer_has_no_body_whatever_its_length_says(serve: list[CannedServer]) -> None:
    srv = CannedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    serve.append(srv)
    response = exchange(Request("HEAD", srv.url("/v2/ns/x/manifests/v1")), NO_TLS)
    assert response.status_code == 200 and response.headers["Content-Length"] == "1234"
    assert response.read() == b""
    assert srv.requests[0].startswith(b"HEAD /v2/ns/x/manifests/v1 HTTP/1.1\r\n")


def test_a_post_sends_its_body_with_its_length(serve: list[CannedServer]) -> None:
    srv = CannedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    serve.append(srv)
    form = {"grant_type": "password", "service": "r"}
    response = exchange(Request("POST", srv.url("/token"), data=form), NO_TLS)
    assert response.read() == b"{}"
    sent = srv.requests[0]
    assert sent.startswith(b"POST /token HTTP/1.1\r\n")
    assert b"Content-Length: 29\r\n" in sent
    assert b"Content-Type: application/x-www-form-urlencoded\r\n" in sent
    assert sent.endswith(b"\r\n\r\ngrant_type=password&service=r")


def test_a_streamed_request_body_goes_out_whole_with_a_length(serve: list[CannedServer]) -> None:
    srv = CannedServer(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n")
    serve.append(srv)
    request = Request("PUT", srv.url("/up"), content=iter([b"ab", b"cd"]))
    assert exchange(request, NO_TLS).status_code == 201
    sent = srv.requests[0]
    assert b"Transfer-Encoding" not in sent and b"Content-Length: 4\r\n" in sent
    assert sent.endswith(b"\r\n\r\nabcd")


@pytest.mark.parametrize(
    ("answer", "match"),
    [
        (b"SPDY/9 what\r\n\r\n", "malformed status line"),
        (b"HTTP/1.1 200 OK\r\nX-Big: " + b"a" * (MAX_HEADER_BYTES + 10), "headers larger"),
        (b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n", "malformed header line"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: 1, 2\r\n\r\nx", "malformed Content-Length"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n", "malformed Content-Length"),
        (b"HTTP/1.1 101 Switching Protocols\r\n\r\n", "switched protocols"),
        (b"HTTP/1.1 200", "closed before the answer's headers"),
    ],
    ids=[
        "status",
        "huge-head",
        "no-colon",
        "space-in-name",
        "lengths",
        "negative",
        "101",
        "cut-head",
    ],
)
def test_malformed_answers_are_protocol_errors(
    serve: list[CannedServer], answer: bytes, match: str
) -> None:
    srv = CannedServer(answer)
    serve.append(srv)
    with pytest.raises(RemoteProtocolError, match=match):
        exchange(get(srv.url()), NO_TLS)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"zz\r\nhello\r\n0\r\n\r\n", "bad chunk size"),
        (b"5\r\nhelloXX0\r\n\r\n", "no CRLF after a chunk"),
        (b"5\r\nhel", "closed before the end"),
        (b"5\r\nhello\r\n", "closed before the end"),  # no last chunk
        (b"1" * (MAX_HEADER_BYTES + 10), "line too long"),
    ],
    ids=["size", "crlf", "cut-chunk", "no-last-chunk", "long-line"],
)
def test_malformed_chunked_bodies_are_protocol_errors(
    serve: list[CannedServer], body: bytes, match: str
) -> None:
    srv = CannedServer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + body)
    serve.append(srv)
    response = exchange(get(srv.url()), NO_TLS)
    with pytest.raises(RemoteProtocolError, match=match):
        response.read()
    response.close()


def test_other_schemes_are_refused() -> None:
    with pytest.raises(UnsupportedProtocol):
        exchange(Request("GET", "ftp://127.0.0.1:1/x"), NO_TLS)


def test_a_redirect_comes_back_with_its_body_for_the_session(serve: list[CannedServer]) -> None:
    srv = CannedServer(
        b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://elsewhere/b?sig=1\r\n"
        b"Content-Length: 5\r\n\r\nbody!"
    )
    serve.append(srv)
    response = exchange(get(srv.url()), NO_TLS)
    assert response.status_code == 307  # followed (or not) by the session, never here
    assert response.headers["Location"] == "http://elsewhere/b?sig=1"
    assert response.read() == b"body!"


def test_early_close_is_a_protocol_error(serve: list[CannedServer]) -> None:
    srv = CannedServer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly this")
    serve.append(srv)
    with pytest.raises(RemoteProtocolError, match="after 9 of 100 bytes"):
        read_all(exchange(get(srv.url()), NO_TLS))


def test_refused_connection_is_a_connect_error() -> None:
    sock = socket.create_server(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    with pytest.raises(ConnectError):
        exchange(get(URL(f"http://127.0.0.1:{port}/x")), NO_TLS)


# --- through a client: the session's rules, this module's reading -----------------------------

BLOB = b"some blob " * 10_000
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
        # bare (answered 401), then with Basic
        assert [BASIC.encode() in r for r in registry.requests] == [False, True]
        assert client.direct_blob_count == 1
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


def test_tls_uses_the_hosts_ca(tmp_path: Path) -> None:
    with serve_tls(tmp_path, _TLSBlobHandler) as (host, ca):
        client = RegistryClient(hosts={host: HostOptions(ca_file=ca)}, retries=0)
        with client:
            client.fetch_blob(f"{host}/ns/x", BLOB_DESC, tmp_path / "b")
            assert client.direct_blob_count == 1
    assert (tmp_path / "b").read_bytes() == BLOB


def test_a_real_pull_reads_every_blob_into_its_buffer(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image = build_image(layout, "v1", files={"a": b"x" * 300_000, "b": b"y"})
    with DevRegistry() as reg, RegistryClient() as client:
        reg.add_image("ns/app", "v1", layout, "v1")
        with LocalImageService(tmp_path / "store", client=client) as store:
            assert store.pull_image(f"{reg.host}/ns/app:v1") == image.config_digest
        assert client.direct_blob_count == 1 + len(image.layer_digests)


def test_a_pull_loads_no_http_library(tmp_path: Path) -> None:
    """This module is the client's only HTTP: a ``pullwarden pull`` process loads no HTTP
    library, nor the standard library's HTTP client, nor ssl for a plain-HTTP registry, nor the
    IDNA codec for an ASCII host (nor the records package, which a pull does not write)."""
    layout = tmp_path / "layout"
    build_image(layout, "v1", files={"a": b"x" * 300_000})
    probe = """
import sys
from pullwarden.cli import main
try:
    main(["pull", "--store", sys.argv[1], sys.argv[2]], prog_name="pullwarden")
except SystemExit as stop:
    assert not stop.code, stop.code
unwanted = ("httpx", "httpcore", "h11", "anyio", "ssl", "http.client", "urllib.request")
unwanted += ("pullwarden.records",)  # nor the record types (the keyring makes them for pods)
unwanted += ("encodings.idna",)  # nor the IDNA codec, for a host in ASCII
print("loaded:", *sorted(m for m in sys.modules if m.startswith(unwanted)))
"""
    with DevRegistry() as reg:
        reg.add_image("ns/app", "v1", layout, "v1")
        done = subprocess.run(
            [sys.executable, "-c", probe, str(tmp_path / "store"), f"{reg.host}/ns/app:v1"],
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "loaded:"
    assert done.stdout.startswith("sha256:")  # the pulled image's id
