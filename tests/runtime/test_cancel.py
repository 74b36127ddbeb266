"""Cancelling registry requests that are blocked on the network (loopback fakes, real sockets).

A real registry answers promptly, so these faults — a server that never answers, a blob that
stops half-way, a silent token server, a listen queue that never accepts — come from
tests/runtime/loopback.py.  Each time the token is cancelled from another thread while the
client is blocked, and the client must raise the token's error within a second.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pullwarden._cancel import CancelToken
from pullwarden.errors import (
    NotFoundError,
    PullCancelledError,
    RegistryUnavailableError,
)
from pullwarden.runtime import RegistryClient, ResolvedImage, oci
from pullwarden.runtime._messages import Request, Response
from pullwarden.testing import MockTransport
from tests.runtime.loopback import Loopback, head, never_answer, stall_after

BOUND = 1.0
BLOB = b"x" * 1_000_000
BLOB_DESC = oci.Descriptor(oci.OCI_LAYER_GZIP, oci.digest_of(BLOB), len(BLOB))


def cancel_later(token: CancelToken, when: Callable[[], object], delay: float = 0.2) -> list[float]:
    """Cancel ``token`` ``delay`` seconds after ``when()`` returns; the time of it goes in [0]."""
    at: list[float] = []

    def run() -> None:
        when()
        time.sleep(delay)
        at.append(time.monotonic())
        token.cancel()

    threading.Thread(target=run, daemon=True).start()
    return at


def assert_cancelled_in_time(
    action: Callable[[], object], token: CancelToken, at: list[float]
) -> None:
    with pytest.raises(PullCancelledError) as info:
        action()
    ended = time.monotonic()
    assert info.value is token.error
    assert at, "the action ended before the cancel"
    assert ended - at[0] < BOUND, f"took {ended - at[0]:.2f}s after the cancel"


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    # per-read timeout and deadline far beyond the bound: only the cancel can end things early
    with RegistryClient(timeout=4.0, request_timeout=None, retries=0) as c:
        yield c


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_cancel_while_waiting_for_the_manifest_answer(client: RegistryClient, method: str) -> None:
    server = Loopback(lambda conn, req: None)
    server.behave = never_answer(server)
    token = CancelToken()
    with server:
        at = cancel_later(token, lambda: server.wait_for_requests(1))
        ref = f"{server.host}/ns/x:v1"
        if method == "GET":
            assert_cancelled_in_time(lambda: client.get_manifest(ref, cancel=token), token, at)
        else:
            assert_cancelled_in_time(lambda: client.head_manifest(ref, cancel=token), token, at)


def test_cancel_while_the_manifest_body_stalls(client: RegistryClient) -> None:
    server = Loopback(lambda conn, req: None)
    answer = head(Content_Type=oci.OCI_MANIFEST, Content_Length="500") + b'{"schemaVersion":'
    server.behave = stall_after(server, answer)
    token = CancelToken()
    with server:
        at = cancel_later(token, lambda: server.wait_for_requests(1))
        get = lambda: client.get_manifest(f"{server.host}/ns/x:v1", cancel=token)  # noqa: E731
        assert_cancelled_in_time(get, token, at)


def test_cancel_while_the_token_server_is_silent(client: RegistryClient) -> None:
    token_server = Loopback(lambda conn, req: None)
    token_server.behave = never_answer(token_server)
    challenge = f'Bearer realm="http://{token_server.host}/token",service="s"'
    registry = Loopback(
        lambda conn, req: conn.sendall(
            head("401 Unauthorized", WWW_Authenticate=challenge, Content_Length="0")
        )
    )
    token = CancelToken()
    with token_server, registry:
        at = cancel_later(token, lambda: token_server.wait_for_requests(1))
        head_ = lambda: client.head_manifest(f"{registry.host}/ns/x:v1", cancel=token)  # noqa: E731
        assert_cancelled_in_time(head_, token, at)


def test_cancel_while_connecting() -> None:
    """A listen queue that is full: the kernel drops the SYN and connect() just waits."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    filler = socket.create_connection(("127.0.0.1", port))
    token = CancelToken()
    started = threading.Event()
    with listener, filler, RegistryClient(timeout=4.0, retries=0) as client:
        at = cancel_later(token, lambda: started.wait(5), delay=0.3)
        started.set()
        head_ = lambda: client.head_manifest(f"127.0.0.1:{port}/ns/x:v1", cancel=token)  # noqa: E731
        assert_cancelled_in_time(head_, token, at)


def test_cancel_cuts_the_retry_back_off_short() -> None:
    calls: list[float] = []

    def handler(request: Request) -> Response:
        calls.append(time.monotonic())
        return Response(503)

    token = CancelToken()
    client = RegistryClient(transport=MockTransport(handler), retries=5, retry_backoff=10.0)
    with client:
        at = cancel_later(token, lambda: None, delay=0.3)
        head_ = lambda: client.head_manifest("127.0.0.1:5000/ns/x:v1", cancel=token)  # noqa: E731
        assert_cancelled_in_time(head_, token, at)
    assert len(calls) == 1  # no attempt after the cancel


def test_an_already_cancelled_token_sends_nothing() -> None:
    requests: list[Request] = []

    def handler(request: Request) -> Response:
        requests.append(request)
        return Response(200)

    token = CancelToken()
    token.cancel(RegistryUnavailableError("shutting down"))
    with RegistryClient(transport=MockTransport(handler)) as client:
        with pytest.raises(RegistryUnavailableError) as info:
            client.get_manifest("127.0.0.1:5000/ns/x:v1", cancel=token)
        assert info.value is token.error
    assert requests == []


def blob_server(answer_head: bytes, *, chunked: bool = False) -> Loopback:
    server = Loopback(lambda conn, req: None)
    body = BLOB[:100_000]
    if chunked:
        body = f"{len(body):x}\r\n".encode() + body + b"\r\n"
    server.behave = stall_after(server, answer_head + body)
    return server


@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_cancel_in_the_middle_of_a_blob(
    client: RegistryClient, tmp_path: Path, framing: str
) -> None:
    if framing == "length":
        server = blob_server(head(Content_Length=str(len(BLOB))))
    else:
        server = blob_server(head(Transfer_Encoding="chunked"), chunked=True)
    dest = tmp_path / "blob"
    token = CancelToken()
    with server:
        at = cancel_later(token, lambda: server.wait_for_requests(1))
        fetch = lambda: client.fetch_blob(  # noqa: E731
            f"{server.host}/ns/x", BLOB_DESC, dest, cancel=token
        )
        assert_cancelled_in_time(fetch, token, at)
    assert not dest.exists()
    assert client.direct_blob_count == 0


def test_a_failed_blob_stops_its_stalled_sibling(client: RegistryClient, tmp_path: Path) -> None:
    missing = oci.Descriptor(oci.OCI_LAYER_GZIP, "sha256:" + "0" * 64, 10)

    def behave(conn: socket.socket, request: bytes) -> None:
        if missing.digest.encode() in request:
            time.sleep(0.3)  # let the other download get going first
            conn.sendall(head("404 Not Found", Content_Length="0"))
            return
        conn.sendall(head(Content_Length=str(len(BLOB))) + BLOB[:100_000])
        server.closed.wait(30)

    server = Loopback(behave)
    with server:
        started = time.monotonic()
        with pytest.raises(NotFoundError):
            client.fetch_blobs(
                _resolved(server.host),
                [(BLOB_DESC, tmp_path / "a", "layer"), (missing, tmp_path / "b", "layer")],
            )
        assert time.monotonic() - started < 0.3 + BOUND
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def _resolved(host: str) -> ResolvedImage:
    """What fetch_blobs needs of a resolved image: where the blobs live."""
    desc = oci.Descriptor(oci.OCI_CONFIG, "sha256:" + "1" * 64, 2)
    return ResolvedImage(
        registry=host,
        repository="ns/x",
        name=f"{host}/ns/x",
        tag="v1",
        digest="sha256:" + "2" * 64,
        manifest_digest="sha256:" + "2" * 64,
        manifest=b"{}",
        manifest_media_type=oci.OCI_MANIFEST,
        config=desc,
        layers=(),
    )
