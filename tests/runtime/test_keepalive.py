"""Kept-alive connections of the client's HTTP/1.1 (runtime._http1), on real loopback sockets.

:class:`KeepAliveServer` is a small HTTP/1.1 server that keeps each connection open for as many
requests as the client sends, numbers the connections it accepts and notes which connection
carried which request; each test scripts its answers.  The client must reuse a connection only
when the previous answer was read to its end and the server did not ask to close, only for the
same origin, TLS context and credentials, and must close what it keeps when it is closed.
"""

from __future__ import annotations

import base64
import contextlib
import http.server
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from pullwarden._cancel import CancelToken
from pullwarden.errors import PullCancelledError, TooLargeError
from pullwarden.runtime import AuthConfig, HostOptions, RegistryClient, ResolvedImage, oci
from pullwarden.runtime._http1 import SIZED_BODY, IdleConnections, SizedBody, exchange
from pullwarden.runtime._messages import URL, Request, Response
from pullwarden.runtime._network import Connection
from tests.runtime.test_registry import serve_tls

BOUND = 1.0  # a cancel must end a read within this


def blob(n: int, size: int = 50_000) -> tuple[bytes, oci.Descriptor]:
    data = bytes([n % 251]) * size
    return data, oci.Descriptor(oci.OCI_LAYER_GZIP, oci.digest_of(data), len(data))


def ok(data: bytes, *extra: str, version: str = "HTTP/1.1") -> bytes:
    lines = [f"{version} 200 OK", f"Content-Length: {len(data)}", *extra]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + data


# What a script does with one request: the bytes to send, and whether to keep the connection
# open afterwards ("keep"), close it ("close"), or send them and then hold it ("stall").
Reply = tuple[bytes, str]
Script = Callable[[bytes, int], Reply]  # (request head, connection number) -> reply


class KeepAliveServer:
    def __init__(self, script: Script) -> None:
        self.script = script
        self.requests: list[tuple[int, bytes]] = []  # (connection number, request head)
        self.ended: set[int] = set()  # connections the client closed (or reset)
        self.done = threading.Event()
        self._lock = threading.Lock()
        self._conns: list[socket.socket] = []
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def accepted(self) -> int:
        with self._lock:
            return len(self._conns)

    def on(self, number: int) -> list[bytes]:
        """The requests that came on connection ``number``."""
        with self._lock:
            return [r for n, r in self.requests if n == number]

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            with self._lock:
                number = len(self._conns)
                self._conns.append(conn)
            threading.Thread(target=self._handle, args=(conn, number), daemon=True).start()

    def _handle(self, conn: socket.socket, number: int) -> None:
        data = b""
        try:
            while True:
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        with self._lock:
                            self.ended.add(number)
                        return
                    data += chunk
                request, _, data = data.partition(b"\r\n\r\n")
                with self._lock:
                    self.requests.append((number, request))
                answer, then = self.script(request, number)
                conn.sendall(answer)
                if then == "close":
                    conn.close()
                    return
                if then == "stall":
                    self.done.wait(30)
                    return
        except OSError:  # a reset: the client closed with our answer unread (or mid-send)
            with self._lock:
                self.ended.add(number)

    def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise AssertionError(f"never happened: {what}")
            time.sleep(0.01)

    def close(self) -> None:
        self.done.set()
        self._sock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def __enter__(self) -> KeepAliveServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def blob_server(blobs: dict[str, bytes], *extra: str, version: str = "HTTP/1.1") -> Script:
    """Answers ``GET …/blobs/<digest>`` with the blob, keeping the connection."""

    def script(request: bytes, number: int) -> Reply:
        digest = request.split(b" ")[1].partition(b"?")[0].rsplit(b"/", 1)[-1].decode()
        return ok(blobs[digest], *extra, version=version), "keep"

    return script


BLOBS = [blob(n) for n in range(12)]
BY_DIGEST = {desc.digest: data for data, desc in BLOBS}


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    with RegistryClient(retries=0, timeout=5.0, max_parallel_blobs=1) as c:
        yield c


def fetch(client: RegistryClient, host: str, n: int, tmp_path: Path, **kw: object) -> None:
    data, desc = BLOBS[n]
    dest = tmp_path / f"b{n}"
    client.fetch_blob(f"{host}/ns/x", desc, dest, **kw)  # type: ignore[arg-type]
    assert dest.read_bytes() == data


# --- through a client -----------------------------------------------------------------------------


def test_blobs_one_after_another_share_one_connection(
    client: RegistryClient, tmp_path: Path
) -> None:
    with KeepAliveServer(blob_server(BY_DIGEST)) as server:
        for n in range(5):
            fetch(client, server.host, n, tmp_path)
        assert server.accepted == 1
        assert len(server.on(0)) == 5
        assert all(b"Connection: keep-alive" in r for r in server.on(0))
        assert client.direct_blob_count == 5


def test_parallel_downloads_open_no_more_connections_than_workers(tmp_path: Path) -> None:
    with (
        KeepAliveServer(blob_server(BY_DIGEST)) as server,
        RegistryClient(retries=0, timeout=5.0, max_parallel_blobs=3) as client,
    ):
        resolved = ResolvedImage(
            registry=server.host,
            repository="ns/x",
            name=f"{server.host}/ns/x",
            tag="v1",
            digest="",
            manifest_digest="",
            manifest=b"",
            manifest_media_type="",
            config=BLOBS[0][1],
            layers=(),
        )
        items = [(desc, tmp_path / f"b{n}", "layer") for n, (_, desc) in enumerate(BLOBS)]
        for _ in range(2):  # a second pull of the same image reuses them all
            client.fetch_blobs(resolved, items)
        assert len(server.requests) == 2 * len(BLOBS)
        assert server.accepted <= 3
    for n, (data, _) in enumerate(BLOBS):
        assert (tmp_path / f"b{n}").read_bytes() == data


def test_a_body_not_read_to_its_end_is_not_reused(client: RegistryClient, tmp_path: Path) -> None:
    _, desc = BLOBS[0]
    lying = oci.Descriptor(desc.media_type, desc.digest, desc.size - 10)  # the body is longer
    with KeepAliveServer(blob_server(BY_DIGEST)) as server:
        with pytest.raises(TooLargeError):
            client.fetch_blob(f"{server.host}/ns/x", lying, tmp_path / "x")
        fetch(client, server.host, 0, tmp_path)
        assert server.accepted == 2
        server.wait_for(lambda: 0 in server.ended, "the unread connection was closed")


@pytest.mark.parametrize(
    ("extra", "version"),
    [
        (("Connection: close",), "HTTP/1.1"),
        (("Connection: Keep-Alive, Close",), "HTTP/1.1"),
        ((), "HTTP/1.0"),
    ],
    ids=["close", "close-among-tokens", "http-1.0"],
)
def test_a_server_that_closes_gets_new_connections(
    client: RegistryClient, tmp_path: Path, extra: tuple[str, ...], version: str
) -> None:
    # the server keeps the socket open: only what the answer says makes the client let go
    with KeepAliveServer(blob_server(BY_DIGEST, *extra, version=version)) as server:
        for n in range(3):
            fetch(client, server.host, n, tmp_path)
        assert server.accepted == 3
        server.wait_for(lambda: server.ended == {0, 1, 2}, "every connection closed")


def test_a_connection_the_server_dropped_while_idle_is_replaced(tmp_path: Path) -> None:
    def script(request: bytes, number: int) -> Reply:
        answer, _ = blob_server(BY_DIGEST)(request, number)
        return answer, "close"  # closes without saying so

    with (
        KeepAliveServer(script) as server,
        RegistryClient(retries=0, timeout=5.0) as client,
    ):
        fetch(client, server.host, 0, tmp_path)
        server.wait_for(lambda: server.accepted == 1 and len(server.requests) == 1, "served")
        time.sleep(0.05)  # let the FIN arrive; the kept connection now reads end-of-file
        fetch(client, server.host, 1, tmp_path)  # no retries: the dead one is never used
        assert server.accepted == 2
        assert [len(server.on(0)), len(server.on(1))] == [1, 1]


def test_a_kept_connection_closed_instead_of_answered_is_sent_again(tmp_path: Path) -> None:
    def script(request: bytes, number: int) -> Reply:
        if number == 0 and len(server.on(0)) == 2:
            return b"", "close"  # the idle-close race: the request arrives, the server quits
        return blob_server(BY_DIGEST)(request, number)

    with (
        KeepAliveServer(script) as server,
        RegistryClient(retries=0, timeout=5.0) as client,
    ):
        fetch(client, server.host, 0, tmp_path)
        fetch(client, server.host, 1, tmp_path)  # retries=0: the resend is the reader's own
        assert server.accepted == 2
        assert [len(server.on(0)), len(server.on(1))] == [2, 1]


def test_connections_are_kept_per_origin(client: RegistryClient, tmp_path: Path) -> None:
    with (
        KeepAliveServer(blob_server(BY_DIGEST)) as a,
        KeepAliveServer(blob_server(BY_DIGEST)) as b,
    ):
        for n, server in enumerate([a, b, a, b, a]):
            fetch(client, server.host, n, tmp_path)
        assert (a.accepted, b.accepted) == (1, 1)
        assert (len(a.requests), len(b.requests)) == (3, 2)


def test_a_redirect_uses_the_target_origins_connections_and_no_credential_crosses(
    tmp_path: Path,
) -> None:
    secret = "alice-pw-S3cret"
    auth = AuthConfig("alice", secret)
    basic = "Basic " + base64.b64encode(f"alice:{secret}".encode()).decode()
    storage = KeepAliveServer(blob_server(BY_DIGEST))

    def registry_script(request: bytes, number: int) -> Reply:
        if basic.encode() not in request:
            challenge = 'WWW-Authenticate: Basic realm="r"'
            return (
                f"HTTP/1.1 401 Unauthorized\r\n{challenge}\r\nContent-Length: 0\r\n\r\n".encode(),
                "keep",
            )
        digest = request.split(b" ")[1].rsplit(b"/", 1)[-1].decode()
        location = f"http://{storage.host}/data/{digest}?sig=1"
        answer = f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {location}\r\nContent-Length: 0"
        return (answer + "\r\n\r\n").encode(), "keep"

    with (
        storage,
        KeepAliveServer(registry_script) as registry,
        RegistryClient(retries=0, timeout=5.0) as client,
    ):
        for n in range(4):
            data, desc = BLOBS[n]
            client.fetch_blob(f"{registry.host}/ns/x", desc, tmp_path / f"b{n}", auth)
            assert (tmp_path / f"b{n}").read_bytes() == data
        assert storage.accepted == 1 and len(storage.requests) == 4
        assert not any(b"authorization" in r.lower() for _, r in storage.requests)
        assert not any(secret.encode() in r for _, r in storage.requests)
        # the registry: a bare GET (401), then one kept-alive connection carries every GET
        # with the credentials
        with_credentials = [(n, r) for n, r in registry.requests if basic.encode() in r]
        assert len(with_credentials) == 4
        assert len({n for n, _ in with_credentials}) == 1


def test_cancel_stops_a_read_on_a_kept_connection(tmp_path: Path) -> None:
    first, _ = BLOBS[0]
    stalled, stalled_desc = BLOBS[1]

    def script(request: bytes, number: int) -> Reply:
        if len(server.requests) == 1:
            return ok(first), "keep"
        half = ok(stalled)[: -len(stalled) // 2]
        return half, "stall"

    token = CancelToken()
    with (
        KeepAliveServer(script) as server,
        RegistryClient(retries=0, timeout=4.0, request_timeout=None) as client,
    ):
        fetch(client, server.host, 0, tmp_path)
        at: list[float] = []

        def cancel() -> None:
            server.wait_for(lambda: len(server.requests) == 2, "the second request")
            time.sleep(0.2)
            at.append(time.monotonic())
            token.cancel()

        threading.Thread(target=cancel, daemon=True).start()
        with pytest.raises(PullCancelledError) as info:
            client.fetch_blob(f"{server.host}/ns/x", stalled_desc, tmp_path / "s", cancel=token)
        ended = time.monotonic()
        assert info.value is token.error
        assert at and ended - at[0] < BOUND, "the cancel did not end the read in time"
        assert server.accepted == 1  # it was the kept connection that was read
        assert not (tmp_path / "s").exists()


def test_a_finished_pulls_cancel_does_not_touch_the_kept_connection(
    client: RegistryClient, tmp_path: Path
) -> None:
    with KeepAliveServer(blob_server(BY_DIGEST)) as server:
        done = CancelToken()
        fetch(client, server.host, 0, tmp_path, cancel=done)
        done.cancel()  # that pull is over; its connection went back to the pool
        fetch(client, server.host, 1, tmp_path, cancel=CancelToken())
        assert server.accepted == 1


def test_closing_the_client_closes_the_kept_connections(tmp_path: Path) -> None:
    with (
        KeepAliveServer(blob_server(BY_DIGEST)) as a,
        KeepAliveServer(blob_server(BY_DIGEST)) as b,
    ):
        client = RegistryClient(retries=0, timeout=5.0, max_parallel_blobs=2)
        fetch(client, a.host, 0, tmp_path)
        fetch(client, b.host, 1, tmp_path)
        assert not a.ended and not b.ended  # kept open while the client lives
        client.close()
        a.wait_for(lambda: a.ended == {0}, "a's connection closed")
        b.wait_for(lambda: b.ended == {0}, "b's connection closed")


# --- TLS ------------------------------------------------------------------------------------------


class _KeepAliveTLSHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    connections: ClassVar[list[object]] = []

    def setup(self) -> None:
        super().setup()
        type(self).connections.append(self.client_address)

    def do_GET(self) -> None:
        data = BY_DIGEST[self.path.rsplit("/", 1)[-1]]
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_tls_connections_are_kept_too(tmp_path: Path) -> None:
    _KeepAliveTLSHandler.connections = []
    with serve_tls(tmp_path, _KeepAliveTLSHandler) as (host, ca):
        with RegistryClient(hosts={host: HostOptions(ca_file=ca)}, retries=0) as client:
            for n in range(4):
                fetch(client, host, n, tmp_path)
            assert client.direct_blob_count == 4
        assert len(_KeepAliveTLSHandler.connections) == 1


def test_another_tls_context_gets_another_connection(tmp_path: Path) -> None:
    _KeepAliveTLSHandler.connections = []
    data, desc = BLOBS[0]
    with serve_tls(tmp_path, _KeepAliveTLSHandler) as (host, ca):
        one = ssl.create_default_context(cafile=str(ca))
        other = ssl.create_default_context(cafile=str(ca))
        idle = IdleConnections()
        url = URL(f"https://{host}/v2/ns/x/blobs/{desc.digest}")
        for context in (one, other, one, other):
            assert read_all(exchange(get(url), context, idle)) == data
        idle.close()
        assert len(_KeepAliveTLSHandler.connections) == 2


# --- the reader and its pool, directly ------------------------------------------------------------


def get(url: URL, **headers: str) -> Request:
    timeout = {"connect": 5.0, "read": 5.0, "write": 5.0}
    return Request("GET", url, headers=headers, extensions={"timeout": timeout})


def read_all(response: Response | None, upto: int | None = None) -> bytes:
    assert response is not None
    body = response.extensions[SIZED_BODY]
    assert isinstance(body, SizedBody)
    buffer = memoryview(bytearray(4096))
    out = b""
    with body:
        while len(out) < (body.length if upto is None else upto):
            n = body.readinto(buffer)
            out += bytes(buffer[:n])
    return out


def test_each_credential_has_connections_of_its_own() -> None:
    data, desc = BLOBS[0]
    with KeepAliveServer(blob_server(BY_DIGEST)) as server:
        url = URL(f"http://{server.host}/v2/ns/x/blobs/{desc.digest}")
        idle = IdleConnections()
        for headers in ({"Authorization": "Bearer a"}, {"Authorization": "Bearer b"}, {}):
            assert read_all(exchange(get(url, **headers), None, idle)) == data
        assert read_all(exchange(get(url, Authorization="Bearer a"), None, idle)) == data
        assert read_all(exchange(get(url), None, idle)) == data
        idle.close()
        assert server.accepted == 3
        assert [r.count(b"Bearer") for r in server.on(0)] == [1, 1]
        assert [b"Bearer b" in r for r in server.on(1)] == [True]
        assert [b"Bearer" in r for r in server.on(2)] == [False, False]


def test_only_a_body_read_to_its_end_goes_back() -> None:
    data, desc = BLOBS[0]
    with KeepAliveServer(blob_server(BY_DIGEST)) as server:
        url = URL(f"http://{server.host}/v2/ns/x/blobs/{desc.digest}")
        idle = IdleConnections()
        assert read_all(exchange(get(url), None, idle), upto=len(data) // 2)
        assert idle.idle() == 0
        assert read_all(exchange(get(url), None, idle)) == data
        assert idle.idle() == 1
        idle.close()
        assert idle.idle() == 0
        server.wait_for(lambda: server.ended == {0, 1}, "both connections closed")


def test_bytes_after_the_body_make_the_connection_unusable() -> None:
    data, desc = BLOBS[0]

    def script(request: bytes, number: int) -> Reply:
        return ok(data) + b"HTTP/1.1 200 OK\r\n", "keep"  # more than was asked for

    with KeepAliveServer(script) as server:
        url = URL(f"http://{server.host}/v2/ns/x/blobs/{desc.digest}")
        idle = IdleConnections()
        assert read_all(exchange(get(url), None, idle)) == data
        time.sleep(0.05)
        assert read_all(exchange(get(url), None, idle)) == data
        idle.close()
        assert server.accepted == 2


def test_every_framing_read_to_its_end_leaves_the_connection_kept() -> None:
    """Manifest, token and blob answers alike: one connection serves a whole pull."""
    data, desc = BLOBS[0]
    answers = [
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n{}\n\r\n0\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n",  # the answer to a HEAD
        ok(data),
        b"HTTP/1.1 204 No Content\r\n\r\n",
        b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}",
    ]

    def script(request: bytes, number: int) -> Reply:
        return answers[len(server.requests) - 1], "keep"

    with KeepAliveServer(script) as server:
        base = f"http://{server.host}/v2/ns/x"
        idle = IdleConnections()
        for method, path in [
            ("GET", "/manifests/v1"),
            ("HEAD", "/manifests/v1"),
            ("GET", f"/blobs/{desc.digest}"),
            ("GET", "/tags/list"),
            ("GET", "/manifests/gone"),
        ]:
            response = exchange(Request(method, base + path), None, idle)
            response.read()
            response.close()
            assert idle.idle() == 1, path
        idle.close()
        assert server.accepted == 1 and len(server.requests) == 5


def test_a_request_with_a_body_never_goes_on_a_kept_connection() -> None:
    def script(request: bytes, number: int) -> Reply:
        return b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}", "keep"

    with KeepAliveServer(script) as server:
        url = f"http://{server.host}/token"
        idle = IdleConnections()
        for request in [
            Request("GET", url),
            Request("POST", url, data={"grant_type": "password"}),
            Request("POST", url, data={"grant_type": "password"}),
            Request("GET", url),
        ]:
            response = exchange(request, None, idle)
            assert response.read() == b"{}"
            response.close()
        idle.close()
        # the first POST did not take the GET's connection, nor the second the first's; the
        # last GET takes the connection the last POST left
        assert [n for n, _ in server.requests] == [0, 1, 2, 2]


def test_a_body_without_length_or_chunks_is_never_kept() -> None:
    def script(request: bytes, number: int) -> Reply:
        return b"HTTP/1.1 200 OK\r\n\r\nto the end", "close"

    with KeepAliveServer(script) as server:
        idle = IdleConnections()
        for _ in range(2):
            answer = exchange(Request("GET", f"http://{server.host}/x"), None, idle)
            assert answer.read() == b"to the end"
            answer.close()
            assert idle.idle() == 0
        assert server.accepted == 2


def test_without_a_pool_each_get_has_its_own_connection() -> None:
    data, desc = BLOBS[0]
    with KeepAliveServer(blob_server(BY_DIGEST)) as server:
        url = URL(f"http://{server.host}/v2/ns/x/blobs/{desc.digest}")
        for _ in range(2):
            assert read_all(exchange(get(url), None)) == data
        assert server.accepted == 2
        assert all(b"Connection: close" in r for _, r in server.requests)


def _pair() -> tuple[Connection, socket.socket]:
    ours, theirs = socket.socketpair()
    return Connection(ours), theirs


def test_the_pool_keeps_a_few_per_key_and_hands_back_the_latest() -> None:
    idle = IdleConnections(per_key=2)
    key = ("http", "127.0.0.1", 1, 0, b"")
    other = ("http", "127.0.0.1", 2, 0, b"")
    pairs = [_pair() for _ in range(3)]
    for connection, _ in pairs:
        idle.put(key, connection)
    assert idle.idle(key) == 2
    assert pairs[2][0].sock.fileno() < 0  # the third was closed, not kept
    assert idle.take(other) is None
    assert idle.take(key) is pairs[1][0]
    assert idle.take(key) is pairs[0][0]
    assert idle.take(key) is None
    for connection, theirs in pairs:
        connection.close()
        theirs.close()


def test_the_pool_drops_expired_and_closed_connections() -> None:
    now = [0.0]
    idle = IdleConnections(expiry=5.0, clock=lambda: now[0])
    key = ("http", "127.0.0.1", 1, 0, b"")
    old, old_peer = _pair()
    idle.put(key, old)
    now[0] = 6.0
    assert idle.take(key) is None  # too old
    assert old.sock.fileno() < 0
    hung_up, hung_up_peer = _pair()
    idle.put(key, hung_up)
    hung_up_peer.close()  # the server closed it while it was idle
    assert idle.take(key) is None
    assert hung_up.sock.fileno() < 0
    idle.close()
    late, late_peer = _pair()
    idle.put(key, late)  # after close: closed, not kept
    assert late.sock.fileno() < 0 and idle.idle() == 0
    old_peer.close()
    late_peer.close()
