"""Unit tests for the OCI distribution client, against an in-memory registry (MockTransport).

These cover the protocol and the faults a real registry will not produce; the real
``docker-registry`` runs in tests/integration.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hashlib
import http.server
import itertools
import json
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qs

import pytest

from pullwarden.errors import (
    DeniedError,
    DigestMismatchError,
    NotFoundError,
    RegistryError,
    RegistryUnavailableError,
    TooLargeError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)
from pullwarden.runtime import (
    AuthConfig,
    HostOptions,
    Platform,
    PullProgress,
    RegistryClient,
    ResolvedImage,
    oci,
)
from pullwarden.runtime._messages import (
    URL,
    ConnectError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    Request,
    Response,
    TransportError,
)
from pullwarden.testing import MockTransport

REG = "127.0.0.1:5000"
TOKEN_HOST = "127.0.0.1:5080"
REALM = f"http://{TOKEN_HOST}/token"
SERVICE = "test-registry"
AMD64 = Platform("linux", "amd64")

ALICE = AuthConfig("alice", "alice-S3cret-pw")
BOB = AuthConfig("bob", "bob-S3cret-pw")
USERS = {"alice": "alice-S3cret-pw", "bob": "bob-S3cret-pw"}

Handler = Callable[[Request], Response | None]


def digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def desc(data: bytes, media_type: str, platform: Platform | None = None) -> oci.Descriptor:
    return oci.Descriptor(media_type, digest(data), len(data), platform)


def canonical(doc: object) -> bytes:
    return json.dumps(doc, separators=(",", ":"), sort_keys=True).encode()


@dataclass
class Image:
    config: bytes
    layers: list[bytes]
    manifest: bytes
    media_type: str

    @property
    def digest(self) -> str:
        return digest(self.manifest)


def make_image(
    arch: str = "amd64", variant: str = "", *, layers: int = 1, docker: bool = False
) -> Image:
    config = canonical({"architecture": arch, "os": "linux", "variant": variant, "rootfs": {}})
    blobs = [
        gzip.compress(f"{arch}{variant} layer {i}".encode() * 50, mtime=0) for i in range(layers)
    ]
    if docker:
        mt, cfg_t, layer_t = oci.DOCKER_MANIFEST, oci.DOCKER_CONFIG, oci.DOCKER_LAYER
    else:
        mt, cfg_t, layer_t = oci.OCI_MANIFEST, oci.OCI_CONFIG, oci.OCI_LAYER_GZIP
    manifest = canonical(
        {
            "schemaVersion": 2,
            "mediaType": mt,
            "config": desc(config, cfg_t).to_json(),
            "layers": [desc(b, layer_t).to_json() for b in blobs],
        }
    )
    return Image(config, blobs, manifest, mt)


def make_index(*images: tuple[Image, Platform]) -> bytes:
    return canonical(
        {
            "schemaVersion": 2,
            "mediaType": oci.OCI_INDEX,
            "manifests": [desc(i.manifest, i.media_type, p).to_json() for i, p in images],
        }
    )


@dataclass
class FakeRegistry:
    """A small in-memory distribution registry with basic or token auth and fault hooks."""

    auth: str = "none"  # "none", "basic" or "bearer"
    manifests: dict[tuple[str, str], tuple[bytes, str]] = field(default_factory=dict)
    blobs: dict[str, bytes] = field(default_factory=dict)
    acl: dict[str, set[str]] = field(default_factory=dict)  # user ("" = anonymous) -> repos
    realm: str = REALM
    token_field: str = "token"
    expires_in: int | None = 300
    send_digest: bool = True
    hooks: list[Handler] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    tokens: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    uploads: dict[str, bytes] = field(default_factory=dict)
    _counter: itertools.count[int] = field(default_factory=itertools.count)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # -- content --

    def add(self, repo: str, tag: str, image: Image) -> None:
        self.manifests[(repo, tag)] = (image.manifest, image.media_type)
        self.manifests[(repo, image.digest)] = (image.manifest, image.media_type)
        self.blobs[digest(image.config)] = image.config
        for layer in image.layers:
            self.blobs[digest(layer)] = layer

    def add_index(self, repo: str, tag: str, index: bytes, *images: Image) -> None:
        self.manifests[(repo, tag)] = (index, oci.OCI_INDEX)
        self.manifests[(repo, digest(index))] = (index, oci.OCI_INDEX)
        for image in images:
            self.add(repo, image.digest, image)

    # -- transport --

    def transport(self) -> MockTransport:
        return MockTransport(self.handle)

    def to(self, host: str) -> list[Request]:
        return [r for r in self.requests if r.url.netloc == host]

    def handle(self, request: Request) -> Response:
        with self._lock:
            self.requests.append(request)
        for hook in self.hooks:
            answer = hook(request)
            if answer is not None:
                return answer
        if request.url.path == "/token":
            return self._token(request)
        return self._registry(request)

    def _token(self, request: Request) -> Response:
        user = ""
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            if USERS.get(user) != password:
                return Response(401, json={"details": "wrong password"})
        scopes = tuple(request.url.params.get_list("scope"))
        token = f"tok-{next(self._counter)}-{user or 'anon'}"
        self.tokens[token] = (user, scopes)
        reply: dict[str, object] = {self.token_field: token}
        if self.expires_in is not None:
            reply["expires_in"] = self.expires_in
        return Response(200, json=reply)

    def _unauthorized(self, repo: str, error: str = "", actions: str = "pull") -> Response:
        if self.auth == "basic":
            challenge = 'Basic realm="fake"'
        else:
            challenge = f'Bearer realm="{self.realm}",service="{SERVICE}"'
            if repo:
                challenge += f',scope="repository:{repo}:{actions}"'
            if error:
                challenge += f',error="{error}"'
        body = {"errors": [{"code": "UNAUTHORIZED", "message": "authentication required"}]}
        return Response(401, headers={"WWW-Authenticate": challenge}, json=body)

    def _check_auth(self, request: Request, repo: str) -> Response | None:
        header = request.headers.get("Authorization", "")
        needed = ["pull"] if request.method in ("GET", "HEAD") else ["pull", "push"]
        if self.auth == "basic":
            if not header.startswith("Basic "):
                return self._unauthorized(repo)
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return None if USERS.get(user) == password else self._unauthorized(repo)
        if self.auth == "bearer":
            actions = ",".join(needed)
            if not header.startswith("Bearer "):
                return self._unauthorized(repo, "", actions)
            grant = self.tokens.get(header[7:])
            if grant is None:
                return self._unauthorized(repo, "invalid_token", actions)
            user, scopes = grant
            granted = {
                a
                for s in scopes
                if s.rpartition(":")[0] == f"repository:{repo}"
                for a in s.rpartition(":")[2].split(",")
            }
            if repo not in self.acl.get(user, set()) or not set(needed) <= granted:
                return self._unauthorized(repo, "insufficient_scope", actions)
        return None

    def _registry(self, request: Request) -> Response:
        path = request.url.path
        assert path.startswith("/v2/"), path
        rest = path[4:]
        for kind in ("/manifests/", "/blobs/uploads/", "/blobs/"):
            if kind in rest:
                repo, _, ref = rest.partition(kind)
                break
        else:
            return Response(200, json={})
        refused = self._check_auth(request, repo)
        if refused is not None:
            return refused
        if kind == "/manifests/":
            return self._manifest(request, repo, ref)
        if kind == "/blobs/uploads/":
            return self._upload(request, repo, ref)
        return self._blob(request, ref)

    def _manifest(self, request: Request, repo: str, ref: str) -> Response:
        if request.method == "PUT":
            body = request.read()
            self.manifests[(repo, ref)] = (body, request.headers["Content-Type"])
            self.manifests[(repo, digest(body))] = (body, request.headers["Content-Type"])
            return Response(201, headers={"Docker-Content-Digest": digest(body)})
        found = self.manifests.get((repo, ref))
        if found is None:
            return Response(
                404, json={"errors": [{"code": "MANIFEST_UNKNOWN", "message": "manifest unknown"}]}
            )
        body, media_type = found
        assert request.headers["Accept"] == oci.ACCEPT
        headers = {"Content-Type": media_type}
        if self.send_digest:
            headers["Docker-Content-Digest"] = digest(body)
        if request.method == "HEAD":
            headers["Content-Length"] = str(len(body))
            return Response(200, headers=headers)
        return Response(200, headers=headers, content=body)

    def _blob(self, request: Request, ref: str) -> Response:
        data = self.blobs.get(ref)
        if data is None:
            return Response(
                404, json={"errors": [{"code": "BLOB_UNKNOWN", "message": "blob unknown"}]}
            )
        if request.method == "HEAD":
            return Response(200, headers={"Content-Length": str(len(data))})
        return Response(200, content=data)

    def _upload(self, request: Request, repo: str, session: str) -> Response:
        if request.method == "POST":
            uid = f"u{next(self._counter)}"
            self.uploads[uid] = b""
            return Response(
                202, headers={"Location": f"/v2/{repo}/blobs/uploads/{uid}?_state=st-{uid}"}
            )
        assert request.method == "PUT"
        params = parse_qs(request.url.query)
        assert params["_state"] == [f"st-{session}"], "the Location query string was lost"
        data = request.read()
        if digest(data) != params["digest"][0]:
            return Response(400, json={"errors": [{"code": "DIGEST_INVALID"}]})
        self.blobs[params["digest"][0]] = data
        return Response(201)


@dataclass
class Env:
    registry: FakeRegistry
    client: RegistryClient
    sleeps: list[float]
    now: list[float]


@pytest.fixture
def env() -> Iterator[Env]:
    registry = FakeRegistry()
    sleeps: list[float] = []
    now = [1000.0]
    client = RegistryClient(
        transport=registry.transport(),
        sleep=sleeps.append,
        clock=lambda: now[0],
        platform=AMD64,
    )
    with client:
        yield Env(registry, client, sleeps, now)


def ref(repo: str = "ns/hello", tag: str = "v1") -> str:
    return f"{REG}/{repo}:{tag}"


# --- basic pulls and manifests -----------------------------------------------------------------


def test_get_manifest_without_auth(env: Env) -> None:
    image = make_image(layers=2)
    env.registry.add("ns/hello", "v1", image)
    got = env.client.get_manifest(ref())
    assert got.registry == REG and got.repository == "ns/hello"
    assert got.name == f"{REG}/ns/hello" and got.tag == "v1"
    assert got.digest == got.manifest_digest == image.digest
    assert got.manifest == image.manifest and got.manifest_media_type == oci.OCI_MANIFEST
    assert got.config.digest == digest(image.config)
    assert [layer.digest for layer in got.layers] == [digest(b) for b in image.layers]
    assert got.index is None and got.index_media_type == ""
    (request,) = env.registry.requests
    assert request.method == "GET" and request.url.scheme == "http"
    assert request.url.path == "/v2/ns/hello/manifests/v1"
    assert "Authorization" not in request.headers


def test_docker_schema2_and_default_tag(env: Env) -> None:
    image = make_image(docker=True)
    env.registry.add("ns/hello", "latest", image)
    got = env.client.get_manifest(f"{REG}/ns/hello")
    assert got.tag == "latest" and got.manifest_media_type == oci.DOCKER_MANIFEST


def test_pull_by_digest(env: Env) -> None:
    image = make_image()
    env.registry.add("ns/hello", "v1", image)
    got = env.client.get_manifest(f"{REG}/ns/hello@{image.digest}")
    assert got.tag == "" and got.digest == image.digest
    assert env.registry.requests[0].url.path == f"/v2/ns/hello/manifests/{image.digest}"


def test_head_manifest_with_and_without_digest_header(env: Env) -> None:
    image = make_image()
    env.registry.add("ns/hello", "v1", image)
    assert env.client.head_manifest(ref()) == image.digest
    env.registry.send_digest = False
    assert env.client.head_manifest(ref()) is None
    assert [r.method for r in env.registry.requests] == ["HEAD", "HEAD"]
    assert all(r.headers["Accept"] == oci.ACCEPT for r in env.registry.requests)


def test_head_manifest_by_digest_refuses_another_digest(env: Env) -> None:
    image = make_image()
    other = make_image("arm64")
    env.registry.manifests[("ns/hello", image.digest)] = (other.manifest, other.media_type)
    with pytest.raises(DigestMismatchError):
        env.client.head_manifest(f"{REG}/ns/hello@{image.digest}")


def test_head_manifest_not_found(env: Env) -> None:
    with pytest.raises(NotFoundError) as caught:
        env.client.head_manifest(ref(tag="nope"))
    assert caught.value.registry == REG and caught.value.repository == "ns/hello"
    assert caught.value.reference == "nope"


def test_missing_tag_is_not_found_with_a_clear_message(env: Env) -> None:
    with pytest.raises(NotFoundError) as caught:
        env.client.get_manifest(ref(tag="missing"))
    assert str(caught.value) == f"pulling {REG}/ns/hello:missing: not found: manifest unknown"


@pytest.mark.parametrize(
    ("code", "status", "error"),
    [
        ("NAME_UNKNOWN", 404, NotFoundError),
        ("BLOB_UNKNOWN", 404, NotFoundError),
        ("DENIED", 403, DeniedError),
        ("UNAUTHORIZED", 403, UnauthorizedError),
        ("TOOMANYREQUESTS", 429, RegistryUnavailableError),
        ("", 403, DeniedError),
        ("", 404, NotFoundError),
        ("MANIFEST_INVALID", 400, RegistryError),
    ],
)
def test_registry_error_codes_are_typed(
    env: Env, code: str, status: int, error: type[RegistryError]
) -> None:
    body = {"errors": [{"code": code, "message": "told you so"}]} if code else {}
    env.registry.hooks.append(lambda r: Response(status, json=body))
    with pytest.raises(error) as caught:
        env.client.get_manifest(ref())
    assert type(caught.value) is error
    assert str(caught.value).startswith(f"pulling {REG}/ns/hello:v1: ")
    assert len(env.registry.requests) == 1  # 4xx is never retried
    assert env.sleeps == []


def test_403_is_denied(env: Env) -> None:
    env.registry.hooks.append(lambda r: Response(403))
    with pytest.raises(DeniedError, match="access denied"):
        env.client.get_manifest(ref())


# --- index and platform selection --------------------------------------------------------------


@pytest.fixture
def multi(env: Env) -> tuple[Image, Image, bytes]:
    amd, arm = make_image("amd64"), make_image("arm64", "v8")
    index = make_index((amd, Platform("linux", "amd64")), (arm, Platform("linux", "arm64", "v8")))
    env.registry.add_index("ns/multi", "v1", index, amd, arm)
    return amd, arm, index


def test_index_selects_the_default_platform(env: Env, multi: tuple[Image, Image, bytes]) -> None:
    amd, _, index = multi
    got = env.client.get_manifest(ref("ns/multi"))
    assert got.digest == digest(index) and got.manifest_digest == amd.digest
    assert got.index == index and got.index_media_type == oci.OCI_INDEX
    assert got.config.digest == digest(amd.config)
    paths = [r.url.path for r in env.registry.requests]
    assert paths == ["/v2/ns/multi/manifests/v1", f"/v2/ns/multi/manifests/{amd.digest}"]


def test_index_platform_override(env: Env, multi: tuple[Image, Image, bytes]) -> None:
    _, arm, index = multi
    got = env.client.get_manifest(ref("ns/multi"), platform=Platform("linux", "arm64", "v8"))
    assert got.manifest_digest == arm.digest and got.digest == digest(index)


def test_index_default_platform_is_the_host(multi: tuple[Image, Image, bytes], env: Env) -> None:
    amd, arm, _ = multi
    host = Platform.host()
    with RegistryClient(transport=env.registry.transport()) as client:
        if host.architecture not in ("amd64", "arm64"):
            pytest.skip(f"no test manifest for {host}")
        got = client.get_manifest(ref("ns/multi"))
    assert got.manifest_digest == (amd if host.architecture == "amd64" else arm).digest


def test_index_without_the_platform_is_not_found(
    env: Env, multi: tuple[Image, Image, bytes]
) -> None:
    with pytest.raises(NotFoundError) as caught:
        env.client.get_manifest(ref("ns/multi"), platform=Platform("linux", "s390x"))
    message = str(caught.value)
    assert message.startswith(f"pulling {REG}/ns/multi:v1: no manifest for platform linux/s390x")
    assert "linux/arm64/v8" in message
    assert caught.value.registry == REG and caught.value.repository == "ns/multi"


# --- digests, sizes, media types ---------------------------------------------------------------


def test_pull_by_digest_with_wrong_body(env: Env) -> None:
    image, other = make_image(), make_image("arm64")
    env.registry.manifests[("ns/hello", image.digest)] = (other.manifest, other.media_type)
    env.registry.send_digest = False
    with pytest.raises(DigestMismatchError, match="does not match its digest"):
        env.client.get_manifest(f"{REG}/ns/hello@{image.digest}")


def test_docker_content_digest_mismatch(env: Env) -> None:
    image = make_image()
    env.registry.add("ns/hello", "v1", image)
    wrong = "sha256:" + "0" * 64
    env.registry.hooks.append(
        lambda r: Response(
            200,
            headers={"Content-Type": oci.OCI_MANIFEST, "Docker-Content-Digest": wrong},
            content=image.manifest,
        )
    )
    with pytest.raises(DigestMismatchError, match="Docker-Content-Digest"):
        env.client.get_manifest(ref())


def test_child_manifest_of_an_index_is_verified(
    env: Env, multi: tuple[Image, Image, bytes]
) -> None:
    amd, arm, _ = multi
    env.registry.manifests[("ns/multi", amd.digest)] = (arm.manifest, arm.media_type)
    env.registry.send_digest = False
    with pytest.raises(DigestMismatchError):
        env.client.get_manifest(ref("ns/multi"))


def test_oversized_manifest_by_content_length(env: Env) -> None:
    huge = b"x" * (oci.MAX_MANIFEST_BYTES + 1)
    served: list[int] = []

    def stream() -> Iterator[bytes]:
        for i in range(0, len(huge), 65536):
            served.append(i)
            yield huge[i : i + 65536]

    env.registry.hooks.append(
        lambda r: Response(
            200,
            headers={"Content-Type": oci.OCI_MANIFEST, "Content-Length": str(len(huge))},
            content=stream(),
        )
    )
    with pytest.raises(TooLargeError, match="Content-Length"):
        env.client.get_manifest(ref())
    assert served == []  # refused before reading the body


def test_oversized_manifest_without_content_length(env: Env) -> None:
    served = [0]

    def stream() -> Iterator[bytes]:
        while True:  # endless: the client must stop reading
            served[0] += 1
            yield b"y" * 65536

    env.registry.hooks.append(
        lambda r: Response(200, headers={"Content-Type": oci.OCI_MANIFEST}, content=stream())
    )
    with pytest.raises(TooLargeError, match="limit"):
        env.client.get_manifest(ref())
    assert served[0] <= oci.MAX_MANIFEST_BYTES // 65536 + 2


def test_schema1_is_unsupported(env: Env) -> None:
    body = canonical({"schemaVersion": 1, "name": "ns/hello", "tag": "v1", "fsLayers": []})
    media_type = "application/vnd.docker.distribution.manifest.v1+prettyjws"
    env.registry.manifests[("ns/hello", "v1")] = (body, media_type)
    with pytest.raises(UnsupportedMediaTypeError, match=r"v1\+prettyjws"):
        env.client.get_manifest(ref())


def test_manifest_that_is_not_json_is_unsupported(env: Env) -> None:
    env.registry.manifests[("ns/hello", "v1")] = (b"<html>", "text/html")
    with pytest.raises(UnsupportedMediaTypeError) as caught:
        env.client.get_manifest(ref())
    assert str(caught.value).startswith(f"pulling {REG}/ns/hello:v1: ")


# --- basic auth --------------------------------------------------------------------------------


def test_basic_auth_flow(env: Env, tmp_path: Path) -> None:
    env.registry.auth = "basic"
    image = make_image()
    env.registry.add("ns/hello", "v1", image)
    got = env.client.get_manifest(ref(), ALICE)
    assert got.digest == image.digest
    first, second = env.registry.requests
    assert "Authorization" not in first.headers
    assert second.headers["Authorization"].startswith("Basic ")
    # the registry is now known to want Basic: the blob goes with credentials at once
    env.client.fetch_blob(got, got.config, tmp_path / "blob.tmp", ALICE, kind="config")
    assert len(env.registry.requests) == 3
    assert env.registry.requests[2].headers["Authorization"] == second.headers["Authorization"]


def test_basic_auth_wrong_password(env: Env) -> None:
    env.registry.auth = "basic"
    env.registry.add("ns/hello", "v1", make_image())
    with pytest.raises(UnauthorizedError, match="credentials rejected"):
        env.client.get_manifest(ref(), AuthConfig("alice", "wrong"))
    assert len(env.registry.requests) == 2


def test_basic_auth_anonymous_is_unauthorized(env: Env) -> None:
    env.registry.auth = "basic"
    env.registry.add("ns/hello", "v1", make_image())
    with pytest.raises(UnauthorizedError, match="authentication required"):
        env.client.get_manifest(ref())
    assert len(env.registry.requests) == 1


# --- bearer auth -------------------------------------------------------------------------------


@pytest.fixture
def bearer(env: Env) -> Image:
    env.registry.auth = "bearer"
    env.registry.acl = {
        "alice": {"ns/hello", "private/alice"},
        "bob": {"ns/hello"},
        "": {"public/app"},
    }
    image = make_image()
    for repo in ("ns/hello", "private/alice", "public/app"):
        env.registry.add(repo, "v1", image)
    return image


@pytest.mark.parametrize("token_field", ["token", "access_token"])
def test_bearer_flow(env: Env, bearer: Image, token_field: str) -> None:
    env.registry.token_field = token_field
    got = env.client.get_manifest(ref("private/alice"), ALICE)
    assert got.digest == bearer.digest
    first, token_request, second = env.registry.requests
    assert "Authorization" not in first.headers
    assert token_request.url.netloc == TOKEN_HOST
    assert token_request.method == "GET"
    assert token_request.url.params["service"] == SERVICE
    assert token_request.url.params.get_list("scope") == ["repository:private/alice:pull"]
    assert token_request.url.params["account"] == "alice"
    user, _, password = base64.b64decode(token_request.headers["Authorization"][6:]).partition(b":")
    assert (user, password) == (b"alice", b"alice-S3cret-pw")
    assert second.headers["Authorization"] == "Bearer tok-0-alice"


def test_bearer_token_is_cached_until_it_expires(env: Env, bearer: Image, tmp_path: Path) -> None:
    env.registry.expires_in = 120  # reused for 120 - 10 = 110 s
    env.client.get_manifest(ref(), ALICE)
    assert len(env.registry.to(TOKEN_HOST)) == 1
    env.now[0] += 100
    got = env.client.get_manifest(ref(), ALICE)
    env.client.fetch_blob(got, got.config, tmp_path / "blob.tmp", ALICE)
    assert len(env.registry.to(TOKEN_HOST)) == 1  # reused, and sent up front (no extra 401)
    assert [r.headers.get("Authorization") for r in env.registry.to(REG)[-2:]] == [
        "Bearer tok-0-alice"
    ] * 2
    env.now[0] += 11
    env.client.head_manifest(ref(), ALICE)
    assert len(env.registry.to(TOKEN_HOST)) == 2
    assert env.registry.requests[-1].headers["Authorization"] == "Bearer tok-1-alice"


def test_default_token_lifetime_is_60_seconds(env: Env, bearer: Image) -> None:
    env.registry.expires_in = None
    env.client.head_manifest(ref(), ALICE)
    env.now[0] += 53
    env.client.head_manifest(ref(), ALICE)
    assert len(env.registry.to(TOKEN_HOST)) == 1
    env.now[0] += 2
    env.client.head_manifest(ref(), ALICE)
    assert len(env.registry.to(TOKEN_HOST)) == 2


def test_different_credentials_get_different_tokens(env: Env, bearer: Image) -> None:
    env.client.head_manifest(ref(), ALICE)
    env.client.head_manifest(ref(), BOB)
    env.client.head_manifest(ref(), ALICE)
    token_users = [
        base64.b64decode(r.headers["Authorization"][6:]).split(b":")[0]
        for r in env.registry.to(TOKEN_HOST)
    ]
    assert token_users == [b"alice", b"bob"]
    sent = [
        r.headers.get("Authorization")
        for r in env.registry.to(REG)
        if r.headers.get("Authorization")
    ]
    assert sent == ["Bearer tok-0-alice", "Bearer tok-1-bob", "Bearer tok-0-alice"]


def test_scopes_are_per_repository(env: Env, bearer: Image) -> None:
    env.client.head_manifest(ref("ns/hello"), ALICE)
    env.client.head_manifest(ref("private/alice"), ALICE)
    scopes = [r.url.params["scope"] for r in env.registry.to(TOKEN_HOST)]
    assert scopes == ["repository:ns/hello:pull", "repository:private/alice:pull"]


def test_anonymous_bearer(env: Env, bearer: Image) -> None:
    got = env.client.get_manifest(ref("public/app"))
    assert got.digest == bearer.digest
    (token_request,) = env.registry.to(TOKEN_HOST)
    assert "Authorization" not in token_request.headers
    assert "account" not in token_request.url.params


def test_anonymous_bearer_denied(env: Env, bearer: Image) -> None:
    with pytest.raises(DeniedError) as caught:
        env.client.get_manifest(ref("private/alice"))
    assert str(caught.value) == (
        f"pulling {REG}/private/alice:v1: access denied (insufficient_scope) (anonymous)"
    )


def test_insufficient_scope_is_denied(env: Env, bearer: Image) -> None:
    with pytest.raises(DeniedError) as caught:
        env.client.get_manifest(ref("private/alice"), BOB)
    assert (
        str(caught.value) == f"pulling {REG}/private/alice:v1: access denied (insufficient_scope)"
    )
    assert caught.value.registry == REG
    assert caught.value.repository == "private/alice"
    assert caught.value.reference == "v1"
    assert env.sleeps == []


def test_bob_denied_even_after_alice_pulled(env: Env, bearer: Image) -> None:
    env.client.get_manifest(ref("private/alice"), ALICE)
    with pytest.raises(DeniedError):
        env.client.head_manifest(ref("private/alice"), BOB)


def test_token_server_401_is_unauthorized(env: Env, bearer: Image) -> None:
    with pytest.raises(UnauthorizedError, match=f"token server {TOKEN_HOST} rejected"):
        env.client.get_manifest(ref(), AuthConfig("alice", "wrong-password"))


def test_stale_cached_token_is_replaced_once(env: Env, bearer: Image) -> None:
    env.client.head_manifest(ref(), ALICE)
    env.registry.tokens.clear()  # the registry forgets every token (key rotation, say)
    assert env.client.head_manifest(ref(), ALICE) == bearer.digest
    assert len(env.registry.to(TOKEN_HOST)) == 2


def test_fresh_token_refused_is_unauthorized(env: Env, bearer: Image) -> None:
    env.registry.hooks.append(
        lambda r: (
            env.registry._unauthorized("ns/hello", "invalid_token")
            if r.headers.get("Authorization", "").startswith("Bearer")
            else None
        )
    )
    with pytest.raises(UnauthorizedError, match="invalid_token"):
        env.client.head_manifest(ref(), ALICE)


def test_registry_token_is_used_directly(env: Env, bearer: Image) -> None:
    env.registry.tokens["opaque-registry-token"] = ("alice", ("repository:ns/hello:pull",))
    got = env.client.head_manifest(ref(), AuthConfig(registry_token="opaque-registry-token"))
    assert got == bearer.digest
    assert env.registry.to(TOKEN_HOST) == []
    assert env.registry.requests[-1].headers["Authorization"] == "Bearer opaque-registry-token"


def test_identity_token_is_a_refresh_token(env: Env, bearer: Image) -> None:
    def refresh(request: Request) -> Response | None:
        if request.url.path != "/token" or request.method != "POST":
            return None
        form = parse_qs(request.read().decode())
        assert form["grant_type"] == ["refresh_token"]
        assert form["refresh_token"] == ["refresh-me"]
        assert form["service"] == [SERVICE]
        assert form["scope"] == ["repository:ns/hello:pull"]
        env.registry.tokens["from-refresh"] = ("alice", ("repository:ns/hello:pull",))
        return Response(200, json={"access_token": "from-refresh", "expires_in": 300})

    env.registry.hooks.append(refresh)
    got = env.client.head_manifest(ref(), AuthConfig(identity_token="refresh-me"))
    assert got == bearer.digest
    assert env.registry.requests[-1].headers["Authorization"] == "Bearer from-refresh"


def test_unsupported_challenge(env: Env) -> None:
    env.registry.hooks.append(
        lambda r: Response(401, headers={"WWW-Authenticate": 'Negotiate realm="x"'})
    )
    with pytest.raises(UnauthorizedError, match="unsupported challenge: negotiate"):
        env.client.head_manifest(ref(), ALICE)


# --- where credentials go ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("realm", "hosts", "sends_credentials"),
    [
        ("http://127.0.0.1:5080/token", {}, True),  # loopback realm
        ("http://localhost:5080/token", {}, True),
        ("https://auth.registry.test/token", {}, True),  # TLS realm
        ("http://auth.registry.test/token", {}, False),  # cleartext, foreign host
        # cleartext realm on the registry's own host, registry configured insecure
        ("http://registry.test:8080/token", {"registry.test:5000": HostOptions(True)}, True),
        ("http://other.test/token", {"registry.test:5000": HostOptions(True)}, False),
    ],
)
def test_token_realm_credential_rule(
    realm: str, hosts: dict[str, HostOptions], sends_credentials: bool
) -> None:
    registry = FakeRegistry(auth="bearer", realm=realm, acl={"alice": {"ns/hello"}})
    registry.add("ns/hello", "v1", make_image())
    host = "registry.test:5000" if hosts else REG
    with RegistryClient(transport=registry.transport(), hosts=hosts, sleep=lambda s: None) as c:
        if sends_credentials:
            c.head_manifest(f"{host}/ns/hello:v1", ALICE)
        else:
            with pytest.raises(DeniedError, match="withheld from the cleartext token realm"):
                c.head_manifest(f"{host}/ns/hello:v1", ALICE)
    (token_request,) = [r for r in registry.requests if r.url.path == "/token"]
    assert str(token_request.url).startswith(realm)
    assert ("Authorization" in token_request.headers) is sends_credentials
    assert ("account" in token_request.url.params) is sends_credentials
    # the bearer token goes to the registry, never its credentials
    registry_requests = [r for r in registry.requests if r.url.path.startswith("/v2/")]
    assert all(
        not r.headers.get("Authorization", "").startswith("Basic") for r in registry_requests
    )


def test_blob_redirect_to_another_host_drops_authorization(
    env: Env, bearer: Image, tmp_path: Path
) -> None:
    storage = "127.0.0.2:9000"
    layer = bearer.layers[0]

    def redirect(request: Request) -> Response | None:
        netloc = request.url.netloc
        if netloc == REG and "/blobs/" in request.url.path and request.headers.get("Authorization"):
            return Response(307, headers={"Location": f"http://{storage}/b/x?sig=1"})
        if netloc == storage:
            return Response(200, content=layer)
        return None

    env.registry.hooks.append(redirect)
    got = env.client.get_manifest(ref(), ALICE)
    dest = tmp_path / "layer"
    env.client.fetch_blob(got, got.layers[0], dest, ALICE)
    assert dest.read_bytes() == layer
    (at_storage,) = env.registry.to(storage)
    assert "Authorization" not in at_storage.headers
    assert at_storage.url.params["sig"] == "1"
    blob_at_registry = [r for r in env.registry.to(REG) if "/blobs/" in r.url.path]
    assert blob_at_registry[-1].headers["Authorization"] == "Bearer tok-0-alice"


def test_redirect_to_same_host_other_port_or_scheme_drops_authorization(env: Env) -> None:
    env.registry.auth = "basic"
    image = make_image()
    env.registry.add("ns/hello", "v1", image)

    def redirect(request: Request) -> Response | None:
        if request.url.path == "/v2/ns/hello/manifests/v1" and request.url.port == 5000:
            if "Authorization" not in request.headers:
                return None  # let the fake registry challenge
            return Response(302, headers={"Location": "http://127.0.0.1:5001/m"})
        if request.url.port == 5001:
            return Response(
                301, headers={"Location": "https://127.0.0.1:5000/v2/ns/hello/manifests/v1x"}
            )
        if request.url.scheme == "https":
            return Response(200, headers={"Content-Type": oci.OCI_MANIFEST}, content=image.manifest)
        return None

    env.registry.hooks.append(redirect)
    env.client.get_manifest(ref(), ALICE)
    hops = [(r.url.scheme, r.url.port, "Authorization" in r.headers) for r in env.registry.requests]
    assert hops == [
        ("http", 5000, False),
        ("http", 5000, True),
        ("http", 5001, False),
        ("https", 5000, False),
    ]


def test_redirect_target_asking_for_credentials_gets_none(env: Env, tmp_path: Path) -> None:
    env.registry.auth = "basic"
    env.registry.add("ns/hello", "v1", make_image())

    def redirect(request: Request) -> Response | None:
        if request.url.host == "127.0.0.2":
            return Response(401, headers={"WWW-Authenticate": 'Basic realm="evil"'})
        if "/blobs/" in request.url.path and "Authorization" in request.headers:
            return Response(302, headers={"Location": "http://127.0.0.2/steal"})
        return None

    env.registry.hooks.append(redirect)
    got = env.client.get_manifest(ref(), ALICE)
    with pytest.raises(UnauthorizedError, match="never sent to another host"):
        env.client.fetch_blob(got, got.config, tmp_path / "blob.tmp", ALICE)
    assert all("Authorization" not in r.headers for r in env.registry.to("127.0.0.2"))


def test_too_many_redirects(env: Env) -> None:
    env.registry.hooks.append(lambda r: Response(302, headers={"Location": "/again"}))
    with pytest.raises(RegistryError, match="too many redirects"):
        env.client.head_manifest(ref())


# --- retries and unavailability ----------------------------------------------------------------


def test_5xx_is_retried_then_unavailable(env: Env) -> None:
    env.registry.hooks.append(lambda r: Response(503))
    with pytest.raises(RegistryUnavailableError) as caught:
        env.client.get_manifest(ref())
    assert len(env.registry.requests) == 4  # 1 + retries=3
    assert env.sleeps == [0.25, 0.5, 1.0]
    message = str(caught.value)
    assert message.startswith(f"pulling {REG}/ns/hello:v1: registry unavailable: {REG}: HTTP 503")
    assert "after 4 attempts" in message


def test_5xx_then_success(env: Env) -> None:
    image = make_image()
    env.registry.add("ns/hello", "v1", image)
    failures = iter([500, 502])
    env.registry.hooks.append(lambda r: Response(code) if (code := next(failures, 0)) else None)
    assert env.client.get_manifest(ref()).digest == image.digest
    assert len(env.registry.requests) == 3 and len(env.sleeps) == 2


def test_token_server_5xx_is_retried(env: Env, bearer: Image) -> None:
    calls = [0]

    def flaky(request: Request) -> Response | None:
        if request.url.path == "/token" and calls[0] == 0:
            calls[0] += 1
            return Response(502)
        return None

    env.registry.hooks.append(flaky)
    assert env.client.head_manifest(ref(), ALICE) == bearer.digest
    assert env.sleeps == [0.25]


def test_connection_errors_from_the_transport_are_retried(env: Env) -> None:
    def boom(request: Request) -> Response:
        raise ConnectError("[Errno 111] Connection refused", request=request)

    env.registry.hooks.append(boom)
    with pytest.raises(RegistryUnavailableError, match=f"{REG}: connection refused"):
        env.client.head_manifest(ref())
    assert len(env.registry.requests) == 4 and len(env.sleeps) == 3


def test_timeouts_are_unavailable(env: Env) -> None:
    def slow(request: Request) -> Response:
        raise ReadTimeout("timed out", request=request)

    env.registry.hooks.append(slow)
    with pytest.raises(RegistryUnavailableError, match="read timed out"):
        env.client.get_manifest(ref())


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_on_a_real_closed_port() -> None:
    port = free_port()
    sleeps: list[float] = []
    client = RegistryClient(sleep=sleeps.append, retries=2, timeout=5)
    with client, pytest.raises(RegistryUnavailableError) as caught:
        client.get_manifest(f"127.0.0.1:{port}/ns/hello:v1")
    message = str(caught.value)
    assert message.startswith(f"pulling 127.0.0.1:{port}/ns/hello:v1: registry unavailable")
    assert f"127.0.0.1:{port}: connection refused" in message
    assert sleeps == [0.25, 0.5]
    assert caught.value.registry == f"127.0.0.1:{port}"


# --- blobs -------------------------------------------------------------------------------------


@pytest.fixture
def pulled(env: Env) -> tuple[ResolvedImage, Image]:
    image = make_image(layers=3)
    env.registry.add("ns/hello", "v1", image)
    return env.client.get_manifest(ref()), image


def test_fetch_blob(env: Env, pulled: tuple[ResolvedImage, Image], tmp_path: Path) -> None:
    resolved, image = pulled
    dest = tmp_path / "config.tmp"
    env.client.fetch_blob(resolved, resolved.config, dest, kind="config")
    assert dest.read_bytes() == image.config
    request = env.registry.requests[-1]
    assert request.url.path == f"/v2/ns/hello/blobs/{resolved.config.digest}"


def test_fetch_blob_by_name(env: Env, pulled: tuple[ResolvedImage, Image], tmp_path: Path) -> None:
    resolved, image = pulled
    env.client.fetch_blob(f"{REG}/ns/hello", resolved.layers[1], tmp_path / "l")
    assert (tmp_path / "l").read_bytes() == image.layers[1]


def test_blob_with_wrong_bytes(
    env: Env, pulled: tuple[ResolvedImage, Image], tmp_path: Path
) -> None:
    resolved, image = pulled
    layer = resolved.layers[0]
    env.registry.blobs[layer.digest] = image.layers[0][:-1] + b"!"
    dest = tmp_path / "layer.tmp"
    with pytest.raises(DigestMismatchError) as caught:
        env.client.fetch_blob(resolved, layer, dest)
    assert not dest.exists()
    assert f"layer {layer.digest} content has digest sha256:" in str(caught.value)
    assert env.sleeps == []  # a digest mismatch is not retried


def test_blob_shorter_than_its_size(
    env: Env, pulled: tuple[ResolvedImage, Image], tmp_path: Path
) -> None:
    resolved, image = pulled
    env.registry.blobs[resolved.layers[0].digest] = image.layers[0][:-3]
    with pytest.raises(DigestMismatchError, match="bytes, its descriptor says"):
        env.client.fetch_blob(resolved, resolved.layers[0], tmp_path / "x")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("with_length", [True, False])
def test_blob_longer_than_its_size(
    env: Env, pulled: tuple[ResolvedImage, Image], tmp_path: Path, with_length: bool
) -> None:
    resolved, image = pulled
    layer = resolved.layers[0]
    extra = image.layers[0] + b"\0" * 200_000
    served = [0]

    def stream() -> Iterator[bytes]:
        for i in range(0, len(extra), 4096):
            served[0] += 4096
            yield extra[i : i + 4096]

    headers = {"Content-Length": str(len(extra))} if with_length else {}
    env.registry.hooks.append(
        lambda r: (
            Response(200, headers=headers, content=stream()) if "/blobs/" in r.url.path else None
        )
    )
    dest = tmp_path / "big"
    with pytest.raises(TooLargeError):
        env.client.fetch_blob(resolved, layer, dest)
    assert not dest.exists()
    assert served[0] < len(extra)  # stopped early


class DroppingStream:
    """A body that sends part of the data, then fails like a dropped connection."""

    def __init__(self, data: bytes, cut: int, error: type[TransportError]) -> None:
        self.data, self.cut, self.error = data, cut, error

    def __iter__(self) -> Iterator[bytes]:
        yield self.data[: self.cut]
        raise self.error("peer closed connection without sending complete message body")

    def close(self) -> None:
        pass


@pytest.mark.parametrize("error", [RemoteProtocolError, ReadError])
def test_connection_dropped_mid_blob_is_retried(
    env: Env, tmp_path: Path, error: type[TransportError]
) -> None:
    data = bytes(range(256)) * 20_000  # 5 MB: several progress steps
    blob = oci.Descriptor(oci.OCI_LAYER, digest(data), len(data))
    env.registry.blobs[blob.digest] = data
    attempts = [0]

    def drop_first(request: Request) -> Response | None:
        if "/blobs/" not in request.url.path:
            return None
        attempts[0] += 1
        if attempts[0] == 1:
            return Response(
                200,
                headers={"Content-Length": str(len(data))},
                stream=DroppingStream(data, 3_000_000, error),
            )
        return None

    env.registry.hooks.append(drop_first)
    progress: list[PullProgress] = []
    dest = tmp_path / "blob"
    env.client.fetch_blob(f"{REG}/ns/hello", blob, dest, on_progress=progress.append)
    assert dest.read_bytes() == data
    assert attempts[0] == 2 and env.sleeps == [0.25]
    done = [p.done for p in progress]
    assert done == sorted(set(done)), "progress must only go forwards"
    assert done[0] == 0 and done[-1] == len(data)
    assert all(
        p.total == len(data) and p.kind == "layer" and p.digest == blob.digest for p in progress
    )


def test_blob_dropped_every_time_is_unavailable(env: Env, tmp_path: Path) -> None:
    data = b"z" * 100_000
    blob = oci.Descriptor(oci.OCI_LAYER, digest(data), len(data))
    env.registry.hooks.append(lambda r: Response(200, stream=DroppingStream(data, 10, ReadError)))
    dest = tmp_path / "blob"
    with pytest.raises(RegistryUnavailableError, match="connection dropped while reading"):
        env.client.fetch_blob(f"{REG}/ns/hello", blob, dest)
    assert not dest.exists()
    assert len(env.sleeps) == 3


def test_blob_404_is_not_found_and_not_retried(env: Env, tmp_path: Path) -> None:
    blob = oci.Descriptor(oci.OCI_LAYER, "sha256:" + "1" * 64, 10)
    with pytest.raises(NotFoundError, match="blob unknown"):
        env.client.fetch_blob(f"{REG}/ns/hello", blob, tmp_path / "b")
    assert len(env.registry.requests) == 1 and env.sleeps == []


def test_progress_for_a_small_blob(
    env: Env, pulled: tuple[ResolvedImage, Image], tmp_path: Path
) -> None:
    resolved, _ = pulled
    progress: list[PullProgress] = []
    env.client.fetch_blob(
        resolved, resolved.config, tmp_path / "c", kind="config", on_progress=progress.append
    )
    size = resolved.config.size
    assert progress == [
        PullProgress(resolved.config.digest, "config", 0, size),
        PullProgress(resolved.config.digest, "config", size, size),
    ]


def test_fetch_blobs_in_parallel(env: Env, tmp_path: Path) -> None:
    image = make_image(layers=6)
    env.registry.add("ns/hello", "v1", image)
    resolved = env.client.get_manifest(ref())
    active, peak = [0], [0]
    lock = threading.Lock()

    def slow_body(data: bytes) -> Iterator[bytes]:
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.02)
        yield data
        with lock:
            active[0] -= 1

    def slow(request: Request) -> Response | None:
        if "/blobs/" not in request.url.path:
            return None
        data = env.registry.blobs[request.url.path.rsplit("/", 1)[1]]
        return Response(200, content=slow_body(data))

    env.registry.hooks.append(slow)
    items = [(d, tmp_path / f"{i}.tmp", "layer") for i, d in enumerate(resolved.layers)]
    items.append((resolved.config, tmp_path / "config.tmp", "config"))
    progress: list[PullProgress] = []
    with RegistryClient(transport=env.registry.transport(), max_parallel_blobs=3) as client:
        client.fetch_blobs(resolved, items, on_progress=progress.append)
    for d, path, _ in items:
        assert digest(path.read_bytes()) == d.digest
    assert 1 < peak[0] <= 3
    finals = {p.digest for p in progress if p.done == p.total}
    assert finals == {d.digest for d, _, _ in items}


def test_fetch_blobs_first_error_stops_the_rest(env: Env, tmp_path: Path) -> None:
    image = make_image(layers=8)
    env.registry.add("ns/hello", "v1", image)
    resolved = env.client.get_manifest(ref())
    bad = resolved.layers[0]
    env.registry.blobs[bad.digest] = b"x" * bad.size

    def slow_good_blobs(request: Request) -> Response | None:
        if "/blobs/" in request.url.path and not request.url.path.endswith(bad.digest):
            time.sleep(0.05)
        return None

    env.registry.hooks.append(slow_good_blobs)
    items = [(d, tmp_path / f"{i}.tmp", "layer") for i, d in enumerate(resolved.layers)]
    client = RegistryClient(transport=env.registry.transport(), max_parallel_blobs=2)
    with client, pytest.raises(DigestMismatchError, match=bad.digest):
        client.fetch_blobs(resolved, items)
    assert not (tmp_path / "0.tmp").exists()
    for d, path, _ in items:  # whatever is left on disk is complete and correct
        if path.exists():
            assert digest(path.read_bytes()) == d.digest
    blob_requests = [r for r in env.registry.requests if "/blobs/" in r.url.path]
    assert len(blob_requests) <= 3  # the queued blobs were never started


def test_fetch_blobs_with_nothing_to_do(env: Env, pulled: tuple[ResolvedImage, Image]) -> None:
    before = len(env.registry.requests)
    env.client.fetch_blobs(pulled[0], [])
    assert len(env.registry.requests) == before


# --- pushing -----------------------------------------------------------------------------------


def test_push_blob_uploads_with_post_then_put(env: Env) -> None:
    data = b"hello blob"
    got = env.client.push_blob(f"{REG}/ns/new", data)
    assert got == oci.Descriptor("application/octet-stream", digest(data), len(data))
    assert env.registry.blobs[digest(data)] == data
    head, post, put = env.registry.requests
    assert (head.method, head.url.path) == ("HEAD", f"/v2/ns/new/blobs/{digest(data)}")
    assert (post.method, post.url.path) == ("POST", "/v2/ns/new/blobs/uploads/")
    assert put.method == "PUT" and put.url.path == "/v2/ns/new/blobs/uploads/u0"
    assert put.url.params["_state"] == "st-u0" and put.url.params["digest"] == digest(data)
    assert put.headers["Content-Type"] == "application/octet-stream"


def test_push_blob_from_a_file_and_skip_when_present(env: Env, tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"q" * 3_000_000)
    env.client.push_blob(f"{REG}/ns/new", path)
    assert env.registry.blobs[digest(path.read_bytes())] == path.read_bytes()
    before = len(env.registry.requests)
    env.client.push_blob(f"{REG}/ns/new", path)
    assert [r.method for r in env.registry.requests[before:]] == ["HEAD"]


def test_push_with_absolute_location(env: Env) -> None:
    def absolute(request: Request) -> Response | None:
        if request.method == "POST":
            return Response(
                202, headers={"Location": f"http://{REG}/v2/ns/new/blobs/uploads/u9?_state=st-u9"}
            )
        return None

    env.registry.hooks.append(absolute)
    env.client.push_blob(f"{REG}/ns/new", b"abs")
    assert env.registry.requests[-1].url.path == "/v2/ns/new/blobs/uploads/u9"


def test_push_manifest(env: Env) -> None:
    image = make_image()
    got = env.client.push_manifest(f"{REG}/ns/new", "v2", image.manifest, image.media_type)
    assert got == image.digest
    assert env.registry.manifests[("ns/new", "v2")] == (image.manifest, image.media_type)
    assert env.client.get_manifest(f"{REG}/ns/new:v2").digest == image.digest


def test_push_with_bearer_asks_for_push_scope(env: Env, bearer: Image) -> None:
    env.registry.acl["alice"].add("ns/new")
    image = make_image()
    env.client.push_blob(f"{REG}/ns/new", image.config, ALICE)
    env.client.push_manifest(f"{REG}/ns/new", "v1", image.manifest, image.media_type, ALICE)
    scopes = {r.url.params["scope"] for r in env.registry.to(TOKEN_HOST)}
    assert scopes == {"repository:ns/new:pull,push"}


def test_push_manifest_refused(env: Env) -> None:
    env.registry.hooks.append(
        lambda r: Response(400, json={"errors": [{"code": "MANIFEST_INVALID"}]})
    )
    with pytest.raises(RegistryError, match=r"pushing 127.0.0.1:5000/ns/new.*MANIFEST_INVALID"):
        env.client.push_manifest(f"{REG}/ns/new", "v1", b"{}", oci.OCI_MANIFEST)


# --- hosts, schemes, TLS (a real loopback HTTPS server) ---------------------------------------


def _make_ca_and_server_cert(directory: Path) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for 127.0.0.1 signed by it (PEM files)."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def build(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
                ),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pullwarden test CA")])
    ca_cert = build("pullwarden test CA", ca_key, ca_name, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = build("127.0.0.1", server_key, ca_name, ca_key, ca=False)
    ca_path, cert_path, key_path = (
        directory / "ca.pem",
        directory / "server.pem",
        directory / "key.pem",
    )
    ca_path.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    cert_path.write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        server_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_path, cert_path, key_path


TLS_DIGEST = "sha256:" + "c" * 64


class _TLSHandler(http.server.BaseHTTPRequestHandler):
    def do_HEAD(self) -> None:
        self.send_response(200)
        self.send_header("Docker-Content-Digest", TLS_DIGEST)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextlib.contextmanager
def serve_tls(
    directory: Path, handler: type[http.server.BaseHTTPRequestHandler]
) -> Iterator[tuple[str, Path]]:
    """A loopback HTTPS server with a certificate from a test CA: ``(host:port, CA file)``."""
    ca, cert, key = _make_ca_and_server_cert(directory)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}", ca
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    with serve_tls(tmp_path, _TLSHandler) as served:
        yield served


def test_tls_with_a_per_host_ca_file(tls_server: tuple[str, Path]) -> None:
    host, ca = tls_server
    with RegistryClient(hosts={host: HostOptions(ca_file=ca)}, retries=0, timeout=5) as client:
        assert client.head_manifest(f"{host}/ns/hello:v1") == TLS_DIGEST


def test_tls_without_the_ca_is_refused_and_not_retried(tls_server: tuple[str, Path]) -> None:
    host, _ = tls_server
    sleeps: list[float] = []
    client = RegistryClient(hosts={host: HostOptions(insecure=False)}, sleep=sleeps.append)
    with client, pytest.raises(RegistryUnavailableError, match="TLS certificate verification"):
        client.head_manifest(f"{host}/ns/hello:v1")
    assert sleeps == []


@pytest.mark.parametrize(
    ("image", "hosts", "expected"),
    [
        ("127.0.0.1:5000/a:v1", {}, "http://127.0.0.1:5000"),
        ("localhost:5000/a:v1", {}, "http://localhost:5000"),
        ("[::1]:5000/a:v1", {}, "http://[::1]:5000"),
        ("registry.test/a:v1", {}, "https://registry.test"),
        (
            "registry.test:5000/a:v1",
            {"registry.test:5000": HostOptions(True)},
            "http://registry.test:5000",
        ),
        ("127.0.0.1:5000/a:v1", {"127.0.0.1:5000": HostOptions(False)}, "https://127.0.0.1:5000"),
        ("a:v1", {}, "https://registry-1.docker.io"),
        ("docker.io/library/a:v1", {"docker.io": HostOptions(True)}, "http://registry-1.docker.io"),
    ],
)
def test_scheme_and_host(image: str, hosts: dict[str, HostOptions], expected: str) -> None:
    seen: list[URL] = []

    def handler(request: Request) -> Response:
        seen.append(request.url)
        return Response(200, headers={"Docker-Content-Digest": "sha256:" + "a" * 64})

    with RegistryClient(transport=MockTransport(handler), hosts=hosts) as client:
        client.head_manifest(image)
    assert str(seen[0]).startswith(expected + "/v2/")


def test_loopback_with_a_ca_file_uses_tls(tls_server: tuple[str, Path]) -> None:
    host, ca = tls_server
    seen: list[URL] = []

    def handler(request: Request) -> Response:
        seen.append(request.url)
        return Response(200)

    options = {host: HostOptions(ca_file=ca)}
    with RegistryClient(transport=MockTransport(handler), hosts=options) as client:
        client.head_manifest(f"{host}/a:v1")
    assert seen[0].scheme == "https"


# --- secrets never leak ------------------------------------------------------------------------

SECRET_AUTHS = [
    AuthConfig("alice", "alice-S3cret-pw"),
    AuthConfig("alice", "wrong-S3cret-pw"),
    AuthConfig(identity_token="idtok-S3cret"),
    AuthConfig(registry_token="regtok-S3cret"),
]


def _echo_authorization(request: Request) -> Response | None:
    """A hostile registry that echoes whatever credentials it got into its error message."""
    header = request.headers.get("Authorization", "")
    if request.url.path.startswith("/v2/") and header:
        body = {"errors": [{"code": "DENIED", "message": f"you sent {header} {header[7:]}"}]}
        return Response(403, json=body)
    return None


def _scenario_5xx(env: Env) -> None:
    env.registry.hooks.append(lambda r: Response(500) if "/v2/" in r.url.path else None)


def _scenario_echo(env: Env) -> None:
    env.registry.hooks.append(_echo_authorization)


def _scenario_token_401(env: Env) -> None:
    env.registry.hooks.append(
        lambda r: Response(401, text="bad") if r.url.path == "/token" else None
    )


def _scenario_denied(env: Env) -> None:
    env.registry.acl = {}


def _scenario_missing(env: Env) -> None:
    env.registry.manifests.clear()


def _scenario_bad_digest(env: Env) -> None:
    env.registry.send_digest = True
    env.registry.hooks.append(
        lambda r: (
            Response(
                200,
                headers={
                    "Docker-Content-Digest": "sha256:" + "f" * 64,
                    "Content-Type": oci.OCI_MANIFEST,
                },
                content=make_image().manifest,
            )
            if r.url.path.startswith("/v2/") and r.headers.get("Authorization")
            else None
        )
    )


@pytest.mark.parametrize("auth", SECRET_AUTHS, ids=["right", "wrong", "identity", "registry"])
@pytest.mark.parametrize(
    "scenario",
    [
        _scenario_5xx,
        _scenario_echo,
        _scenario_token_401,
        _scenario_denied,
        _scenario_missing,
        _scenario_bad_digest,
    ],
)
@pytest.mark.parametrize("mode", ["basic", "bearer"])
def test_errors_never_contain_secrets(
    env: Env, auth: AuthConfig, scenario: Callable[[Env], None], mode: str, tmp_path: Path
) -> None:
    env.registry.auth = mode
    env.registry.acl = {"alice": {"ns/hello"}}
    env.registry.tokens["regtok-S3cret"] = ("alice", ("repository:ns/hello:pull",))
    env.registry.hooks.append(
        lambda r: (
            Response(200, json={"token": "issued-S3cret-token"})
            if r.url.path == "/token" and r.method == "POST"
            else None
        )
    )
    env.registry.tokens["issued-S3cret-token"] = ("alice", ("repository:ns/hello:pull",))
    env.registry.add("ns/hello", "v1", make_image())
    scenario(env)
    secrets = [
        s
        for s in (auth.password, auth.identity_token, auth.registry_token, "issued-S3cret-token")
        if s
    ]
    if auth.username:
        secrets.append(base64.b64encode(f"{auth.username}:{auth.password}".encode()).decode())
    secrets += [t for t in env.registry.tokens if t.startswith("tok-")]
    errors: list[RegistryError] = []
    for call in (
        lambda: env.client.get_manifest(ref(), auth),
        lambda: env.client.head_manifest(ref(), auth),
        lambda: env.client.fetch_blob(
            f"{REG}/ns/hello",
            oci.Descriptor(oci.OCI_LAYER, "sha256:" + "2" * 64, 1),
            tmp_path / "b",
            auth,
        ),
        lambda: env.client.push_blob(f"{REG}/ns/hello", b"data", auth),
    ):
        try:
            call()
        except RegistryError as exc:
            errors.append(exc)
    assert errors, "the scenario should make at least one call fail"
    secrets += [t for t in env.registry.tokens if t.startswith("tok-")]
    for error in errors:
        text = " ".join(
            [str(error), repr(error), repr(error.args), error.registry, error.repository]
        )
        for secret in secrets:
            pieces = {secret[i : i + 8] for i in range(max(1, len(secret) - 7))}
            leaked = [p for p in pieces if p in text]
            assert not leaked, f"{type(error).__name__} leaks a secret: {text}"
        assert error.__cause__ is None or not any(s in str(error.__cause__) for s in secrets)


def test_fetch_blobs_stops_a_blob_in_flight(env: Env, tmp_path: Path) -> None:
    big = bytes(range(256)) * 40_000  # 10 MB in 40 pieces, the later ones slow
    small = b"not what the descriptor says"
    big_desc = oci.Descriptor(oci.OCI_LAYER, digest(big), len(big))
    bad_desc = oci.Descriptor(oci.OCI_LAYER, "sha256:" + "3" * 64, len(small))
    piece = 256 * 1024
    sent = [0]
    bad_served = threading.Event()

    def slow_big() -> Iterator[bytes]:
        for i in range(0, len(big), piece):
            if i:
                bad_served.wait(5)
                time.sleep(0.005)
            sent[0] += 1
            yield big[i : i + piece]

    def bad_body() -> Iterator[bytes]:
        yield small
        bad_served.set()

    def blobs(request: Request) -> Response | None:
        if request.url.path.endswith(big_desc.digest):
            return Response(200, content=slow_big())
        if request.url.path.endswith(bad_desc.digest):
            return Response(200, content=bad_body())
        return None

    env.registry.hooks.append(blobs)
    resolved = ResolvedImage(
        REG, "ns/hello", f"{REG}/ns/hello", "v1", "", "", b"", "", big_desc, ()
    )
    items = [(big_desc, tmp_path / "big.tmp", "layer"), (bad_desc, tmp_path / "bad.tmp", "layer")]
    with pytest.raises(DigestMismatchError):
        env.client.fetch_blobs(resolved, items)
    assert not (tmp_path / "big.tmp").exists() and not (tmp_path / "bad.tmp").exists()
    assert sent[0] < len(big) // piece  # the big blob was stopped part-way
