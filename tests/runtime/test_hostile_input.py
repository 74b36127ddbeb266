"""Registry-supplied input that must fail cleanly: deeply nested JSON, look-alike loopback hosts.

Nesting: ``json.loads`` of ``[`` * 100000 raises RecursionError; every parser of registry
answers (manifests, indexes, token replies, error bodies) and of the store's own index must turn
that into its typed error.  Loopback: only the literal ``localhost`` and loopback IP addresses
get plain HTTP by default or may receive credentials over a cleartext token realm.
"""

from __future__ import annotations

from pathlib import Path

import httpx
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


def client_answering(answer: httpx.Response) -> RegistryClient:
    return RegistryClient(
        transport=httpx.MockTransport(lambda request: answer), retries=0, sleep=lambda s: None
    )


def test_deep_manifest_from_a_registry() -> None:
    answer = httpx.Response(200, headers={"Content-Type": oci.OCI_MANIFEST}, content=DEEP)
    with client_answering(answer) as client, pytest.raises(UnsupportedMediaTypeError) as info:
        client.get_manifest("127.0.0.1:5000/ns/x:v1")
    assert "127.0.0.1:5000/ns/x:v1" in str(info.value)


@pytest.mark.parametrize(
    ("status", "error"),
    [(404, NotFoundError), (403, DeniedError), (400, RegistryError)],
)
def test_deep_error_body_from_a_registry(status: int, error: type[RegistryError]) -> None:
    with (
        client_answering(httpx.Response(status, content=DEEP)) as client,
        pytest.raises(error) as info,
    ):
        client.get_manifest("127.0.0.1:5000/ns/x:v1")
    assert "127.0.0.1:5000/ns/x:v1" in str(info.value)


def test_deep_token_reply_from_a_token_server() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            return httpx.Response(200, content=DEEP)
        challenge = 'Bearer realm="http://127.0.0.1:5080/token",service="s"'
        return httpx.Response(401, headers={"WWW-Authenticate": challenge})

    client = RegistryClient(transport=httpx.MockTransport(handler), sleep=lambda s: None)
    with client, pytest.raises(RegistryError, match="not JSON"):
        client.head_manifest("127.0.0.1:5000/ns/x:v1", AuthConfig("alice", "pw"))


def test_deep_store_index_is_a_store_error(tmp_path: Path) -> None:
    root = tmp_path / "store"
    root.mkdir()
    (root / "index.json").write_bytes(DEEP)
    with pytest.raises(ImageStoreError, match="corrupt"):
        LocalImageService(root, client=client_answering(httpx.Response(500)))


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
    seen: list[httpx.URL] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.url)
        return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})

    with RegistryClient(transport=httpx.MockTransport(handler)) as client:
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
    token_requests: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/token":
            token_requests.append(request)
            return httpx.Response(200, json={"token": "t"})
        if request.headers.get("Authorization") == "Bearer t":
            return httpx.Response(200, headers={"Docker-Content-Digest": DIGEST})
        return httpx.Response(401, headers={"WWW-Authenticate": f'Bearer realm="{realm}"'})

    with RegistryClient(transport=httpx.MockTransport(handler)) as client:
        client.head_manifest("registry.test/ns/x:v1", AuthConfig("alice", "pw"))
    (request,) = token_requests
    assert ("Authorization" in request.headers) is sends_credentials
