"""Manifest and token exchanges have an overall deadline (RegistryClient ``request_timeout``).

A per-read timeout does not bound a server that drips its answer one byte at a time: every
read returns something.  These loopback fakes drip the headers or the body of an answer; the
exchange must fail with RegistryUnavailableError once ``request_timeout`` has passed, however
generous the per-read ``timeout`` is.  Blob downloads have no such deadline (their stalls are
the store's progress timeout), so a slow blob still completes.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from pullwarden.errors import RegistryUnavailableError
from pullwarden.runtime import AuthConfig, RegistryClient, oci
from tests.runtime.loopback import Behaviour, Loopback, drip, head

DEADLINE = 0.5
SLACK = 0.5  # scheduling and one last socket operation
MANIFEST = b'{"schemaVersion":2,"mediaType":"' + oci.OCI_MANIFEST.encode() + b'"}'


def client(retries: int = 0) -> RegistryClient:
    return RegistryClient(timeout=4.0, request_timeout=DEADLINE, retries=retries, sleep=None)


def head_then_drip(server: Loopback, answer_head: bytes, body: bytes, every: float) -> Behaviour:
    dripper = drip(server, body, every)

    def behave(conn: socket.socket, request: bytes) -> None:
        conn.sendall(answer_head)
        dripper(conn, request)

    return behave


def expect_deadline(action: Callable[[], object], attempts: int = 1) -> str:
    started = time.monotonic()
    with pytest.raises(RegistryUnavailableError) as info:
        action()
    took = time.monotonic() - started
    assert DEADLINE * attempts <= took < DEADLINE * attempts + SLACK, f"took {took:.2f}s"
    message = str(info.value)
    assert "no complete answer within 500ms" in message, message
    return message


MANIFEST_HEAD = head(
    Content_Type=oci.OCI_MANIFEST,
    Content_Length=str(len(MANIFEST)),
    Docker_Content_Digest=oci.digest_of(MANIFEST),
)


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_dripping_manifest_headers_hit_the_deadline(method: str) -> None:
    server = Loopback(lambda conn, req: None)
    server.behave = drip(server, MANIFEST_HEAD + MANIFEST, every=0.05)  # ~9 s in all
    ref = f"{server.host}/ns/x:v1"
    with server, client() as c:
        call = c.get_manifest if method == "GET" else c.head_manifest
        message = expect_deadline(lambda: call(ref))
    assert server.host in message and "ns/x:v1" in message


def test_a_dripping_manifest_body_hits_the_deadline() -> None:
    server = Loopback(lambda conn, req: None)
    server.behave = head_then_drip(server, MANIFEST_HEAD, MANIFEST, every=0.05)  # ~4 s
    with server, client() as c:
        expect_deadline(lambda: c.get_manifest(f"{server.host}/ns/x:v1"))


def test_a_dripping_token_server_hits_the_deadline() -> None:
    token_server = Loopback(lambda conn, req: None)
    reply = b'{"token":"t","expires_in":300}'
    token_server.behave = drip(
        token_server, head(Content_Length=str(len(reply))) + reply, every=0.05
    )
    challenge = f'Bearer realm="http://{token_server.host}/token",service="s"'
    registry = Loopback(
        lambda conn, req: conn.sendall(
            head("401 Unauthorized", WWW_Authenticate=challenge, Content_Length="0")
        )
    )
    with token_server, registry, client() as c:
        message = expect_deadline(
            lambda: c.head_manifest(f"{registry.host}/ns/x:v1", AuthConfig("alice", "pw"))
        )
    assert "pw" not in message.replace("ns/x", "")


def test_each_attempt_gets_the_deadline_then_the_error_says_so() -> None:
    server = Loopback(lambda conn, req: None)
    server.behave = drip(server, MANIFEST_HEAD + MANIFEST, every=0.05)
    with (
        server,
        RegistryClient(timeout=4.0, request_timeout=DEADLINE, retries=1, retry_backoff=0.01) as c,
    ):
        message = expect_deadline(lambda: c.get_manifest(f"{server.host}/ns/x:v1"), attempts=2)
    assert "after 2 attempts" in message
    assert len(server.requests) == 2


def test_an_answer_within_the_deadline_is_fine() -> None:
    server = Loopback(lambda conn, req: None)
    server.behave = head_then_drip(server, MANIFEST_HEAD, MANIFEST, every=0.002)
    with server, client() as c:
        assert c.head_manifest(f"{server.host}/ns/x:v1") == oci.digest_of(MANIFEST)


def test_a_slow_blob_is_not_held_to_the_deadline(tmp_path: Path) -> None:
    blob = b"0123456789" * 3
    desc = oci.Descriptor(oci.OCI_LAYER_GZIP, oci.digest_of(blob), len(blob))
    server = Loopback(lambda conn, req: None)
    server.behave = head_then_drip(server, head(Content_Length=str(len(blob))), blob, every=0.03)
    with server, client() as c:
        started = time.monotonic()
        c.fetch_blob(f"{server.host}/ns/x", desc, tmp_path / "blob")
        assert time.monotonic() - started > DEADLINE
    assert (tmp_path / "blob").read_bytes() == blob
