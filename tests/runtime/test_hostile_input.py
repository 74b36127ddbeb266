"""Registry-supplied input that must fail cleanly: deeply nested JSON, look-alike loopback hosts.

Nesting: ``json.loads`` of ``[`` * 100000 raises RecursionError; every parser of registry
answers (manifests, indexes, token replies, error bodies) and of the store's own index must turn
that into its typed error.  Loopback: only the literal ``localhost`` and loopback IP addresses
get plain HTTP by default or may receive credentials over a cleartext token realm.
"""

from __future__ import annotations

import http.server
import json
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from pullwarden.errors import (
    DeniedError,
    ImageStoreError,
    NotFoundError,
    RegistryError,
    UnsupportedMediaTypeError,
)
from pullwarden.runtime import AuthConfig, LocalImageService, RegistryClient, oci
from pullwarden.runtime._auth import parse_token_reply
from pullwarden.runtime._messages import URL, Request, Response
from pullwarden.testing import MockTransport

DEEP = b"[" * 100_000
DEEP_OBJECT = b'{"a":' * 100_000
DIGEST = "sha256:" + "a" * 64


@pytest.mark.parametrize("body", [DEEP, DEEP_OBJECT], ids=["array", "object"])
def test_deep_manifest_and_index_are_unsupported(body: bytes) -> None:
    with pytest.raises(UnsupportedMediaTypeError, match="not valid JSON"):
        oci.parse_manifest(body, oci.OCI_MANIFEST)
    with pytest.raises(UnsupportedMediaTypeError, match="not valid JSON"):
        oci.parse_index(body, oci.OCI_INDEX)
    with pytest.raises(UnsupportedMediaTypeError, match="not valid JSON"):
        oci.media_type_of(body, oci.OCI_MANIFEST)


def test_deep_token_reply_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not JSON"):
        parse_token_reply(DEEP)


def client_answering(answer: Response) -> RegistryClient:
    return RegistryClient(
        transport=MockTransport(lambda request: answer), retries=0, sleep=lambda s: None
    )


def test_deep_manifest_from_a_registry() -> None:
    answer = Response(200, headers={"Content-Type": oci.OCI_MANIFEST}, content=DEEP)
    with client_answering(answer) as client, pytest.raises(UnsupportedMediaTypeError) as info:
        client.get_manifest("127.0.0.1:5000/ns/x:v1")
    assert "127.0.0.1:5000/ns/x:v1" in str(info.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, NotFoundError), (403, DeniedError), (400, RegistryError)],
)
def test_deep_error_body_from_a_registry(status: int, error: type[RegistryError]) -> None:
    with (
        client_answering(Response(status, content=DEEP)) as client,
        pytest.raises(error) as info,
    ):
        client.get_manifest("127.0.0.1:5000/ns/x:v1")
    assert "127.0.0.1:5000/ns/x:v1" in str(info.value)


def test_deep_token_reply_from_a_token_server() -> None:
    def handler(request: Request) -> Response:
        if request.url.path == "/token":
            return Response(200, content=DEEP)
        challenge = 'Bearer realm="http://127.0.0.1:5080/token",service="s"'
        return Response(401, headers={"WWW-Authenticate": challenge})

    client = RegistryClient(transport=MockTransport(handler), sleep=lambda s: None)
    with client, pytest.raises(RegistryError, match="not JSON"):
        client.head_manifest("127.0.0.1:5000/ns/x:v1", AuthConfig("alice", "pw"))


def test_deep_store_index_is_a_store_error(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "index.json").write_bytes(DEEP)
    with pytest.raises(ImageStoreError, match="corrupt"):
        LocalImageService(root, client=client_answering(Response(500)))


# --- what counts as loopback -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "scheme"),
    [
        ("localhost:5000/a:v1", "http"),
        ("127.0.0.1:5000/a:v1", "http"),
        ("127.9.8.7:5000/a:v1", "http"),
        ("[::1]:5000/a:v1", "http"),
        ("foo.localhost:5000/a:v1", "https"),
        ("localhost.example:5000/a:v1", "https"),
        ("localhost.localdomain:5000/a:v1", "https"),
        ("127.0.0.1.nip.io:5000/a:v1", "https"),
    ],
)
def test_only_real_loopback_hosts_get_plain_http(image: str, scheme: str) -> None:
    seen: list[URL] = []

    def handler(request: Request) -> Response:
        seen.append(request.url)
        return Response(200, headers={"Docker-Content-Digest": DIGEST})

    with RegistryClient(transport=MockTransport(handler)) as client:
        client.head_manifest(image)
    assert seen[0].scheme == scheme


@pytest.mark.parametrize(
    ("realm", "sends_credentials"),
    [
        ("http://localhost:5080/token", True),
        ("http://127.0.0.1:5080/token", True),
        ("http://[::1]:5080/token", True),
        ("http://auth.localhost:5080/token", False),
        ("http://localhost.example/token", False),
    ],
)
def test_cleartext_realm_gets_credentials_only_on_real_loopback(
    realm: str, sends_credentials: bool
) -> None:
    token_requests: list[Request] = []

    def handler(request: Request) -> Response:
        if request.url.path == "/token":
            token_requests.append(request)
            return Response(200, json={"token": "t"})
        if request.headers.get("Authorization") == "Bearer t":
            return Response(200, headers={"Docker-Content-Digest": DIGEST})
        return Response(401, headers={"WWW-Authenticate": f'Bearer realm="{realm}"'})

    with RegistryClient(transport=MockTransport(handler)) as client:
        client.head_manifest("registry.test/ns/x:v1", AuthConfig("alice", "pw"))
    (request,) = token_requests
    assert ("Authorization" in request.headers) is sends_credentials


# --- answers that try to put bytes of their own on the wire ------------------------------------


class _TokenInjector(http.server.BaseHTTPRequestHandler):
    """A registry and token server in one that hands out a token carrying a line break."""

    seen: ClassVar[list[list[str]]] = []  # each request's header names (set per server)
    realm: ClassVar[str] = ""

    def do_GET(self) -> None:
        self.seen.append([name.lower() for name in self.headers])
        if self.path.startswith("/token"):
            body = json.dumps({"token": "abc\r\nX-Injected: yes"}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
        else:
            body = b""
            self.send_response(401)
            self.send_header("WWW-Authenticate", f'Bearer realm="{self.realm}",service="s"')
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_token_cannot_add_a_header_to_the_registry_request() -> None:
    """A token server's token with CR LF in it is refused; no request ever carries its line."""
    seen: list[list[str]] = []
    handler: type[_TokenInjector] = type("Injector", (_TokenInjector,), {"seen": seen})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    port = server.socket.getsockname()[1]
    handler.realm = f"http://127.0.0.1:{port}/token"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        image = f"127.0.0.1:{port}/ns/x:v1"
        with RegistryClient(retries=0) as client, pytest.raises(RegistryError) as info:
            client.head_manifest(image, AuthConfig("alice", "pw"))
    finally:
        server.shutdown()
        server.server_close()
    assert "token that is not visible ASCII" in str(info.value)
    assert "X-Injected" not in str(info.value)
    assert seen and all("x-injected" not in names for names in seen)
    assert len(seen) == 2  # the challenge and the token: the registry never got the token


@pytest.mark.parametrize("token", ["abc\r\nX: 1", "abc def", "abc\u00e9", "\t"])
def test_a_token_with_other_than_visible_ascii_is_refused(token: str) -> None:
    with pytest.raises(ValueError, match="not visible ASCII"):
        parse_token_reply(json.dumps({"token": token}).encode())
    assert parse_token_reply(json.dumps({"token": "eyJh.b-c_d~e+f/g="}).encode())[0]


@pytest.mark.parametrize(
    "realm",
    ["http://a b/token", "http://auth.test:99999/t", "http://[::1/t", f"http://{'a' * 64}.test/t"],
)
def test_a_token_realm_that_is_no_url_is_a_clear_refusal(realm: str) -> None:
    def handler(request: Request) -> Response:
        return Response(401, headers={"WWW-Authenticate": f'Bearer realm="{realm}"'})

    client = RegistryClient(transport=MockTransport(handler), sleep=lambda s: None)
    with client, pytest.raises(RegistryError, match="token realm is not an http"):
        client.head_manifest("127.0.0.1:5000/ns/x:v1", AuthConfig("alice", "pw"))


@pytest.mark.parametrize(
    "location", ["http://storage.test:port/b", "http://a b/c", "http://[::1/c"]
)
def test_a_redirect_to_no_url_is_a_clear_refusal(location: str) -> None:
    def handler(request: Request) -> Response:
        return Response(307, headers={"Location": location})

    client = RegistryClient(transport=MockTransport(handler), retries=0, sleep=lambda s: None)
    with client, pytest.raises(RegistryError, match="redirect to an invalid location"):
        client.get_manifest("127.0.0.1:5000/ns/x:v1")


def test_a_credential_no_header_can_carry_is_a_clear_error_without_it() -> None:
    sent: list[Request] = []

    def handler(request: Request) -> Response:
        sent.append(request)
        return Response(401, headers={"WWW-Authenticate": 'Bearer realm="http://127.0.0.1:1/t"'})

    client = RegistryClient(transport=MockTransport(handler), sleep=lambda s: None)
    with client, pytest.raises(RegistryError) as info:
        client.head_manifest("127.0.0.1:5000/ns/x:v1", AuthConfig(registry_token="s3cr\u20ac\nt"))
    assert type(info.value) is RegistryError  # not "registry unavailable": nothing to retry
    assert "cannot send the request" in str(info.value) and "Authorization" in str(info.value)
    assert "s3cr" not in str(info.value) and len(sent) == 1  # only the bare first request


@pytest.mark.parametrize(
    "host", [f"{'a' * 64}.example", f"registry.{'b' * 70}:5000", "127.0.0.1:65536"]
)
def test_a_registry_host_no_resolver_takes_is_refused_before_any_request(host: str) -> None:
    """The reference grammar bounds neither a DNS label nor a port; a label over 63 characters
    cannot be looked up (nor named to TLS), nor port 65536 reached: a final error, not a retry,
    and not the IDNA codec's or the URL's own."""
    image = f"{host}/ns/x:v1"
    slept: list[float] = []
    client = RegistryClient(sleep=slept.append)  # the real transport: nothing may reach it
    with client, pytest.raises(RegistryError) as info:
        client.get_manifest(image, AuthConfig("alice", "pw"))
    assert type(info.value) is RegistryError and slept == []
    assert str(info.value) == f"pulling {image}: invalid registry host {host!r}"
    assert info.value.registry == host
