"""The fixtures behave like real-components.md says, checked with skopeo and plain httpx only."""

from __future__ import annotations

import base64
import json
import os
import re
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from pullwarden.runtime._oci import ACCEPT, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, digest_of
from tests.integration.infra import (
    ALICE,
    BOB,
    SEED_PLAN,
    Pki,
    Registry,
    Seeded,
    Skopeo,
    SkopeoError,
    TestImages,
    TokenServer,
    dying_with_parent,
    libtrust_kid,
    missing_tools,
)
from tests.support import busy_grpc, ends_within

WRONG = "not-the-password"


# --------------------------------------------------------------------------------------------
# helpers


def basic(user: str, password: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def challenge(response: httpx.Response) -> dict[str, str]:
    """The parameters of a ``WWW-Authenticate`` header (scheme under ``"scheme"``)."""
    header = response.headers["WWW-Authenticate"]
    scheme, _, rest = header.partition(" ")
    params = dict(re.findall(r'(\w+)="([^"]*)"', rest))
    params["scheme"] = scheme
    return params


def get_token(
    token_server: TokenServer, scope: str, creds: tuple[str, str] | None
) -> httpx.Response:
    headers = basic(*creds) if creds else {}
    params = {"service": token_server.service, "scope": scope}
    return httpx.get(token_server.realm, params=params, headers=headers, timeout=5)


def manifest(
    registry: Registry, repo: str, reference: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    return httpx.get(
        f"{registry.url}/v2/{repo}/manifests/{reference}",
        headers={"Accept": ACCEPT, **(headers or {})},
        verify=registry.verify(),
        timeout=5,
    )


def listening_addresses(pid: int) -> list[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state that process ``pid`` holds."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state == "0A" and inode in inodes:
                address, port = local.split(":")
                found.append((address, int(port, 16)))
    return found


# --------------------------------------------------------------------------------------------
# plumbing


def test_missing_tools_are_named(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # conftest skips on this list, or fails with PULLWARDEN_REQUIRE_REAL=1 (as CI sets it)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert missing_tools() == ["docker-registry", "skopeo"]
    fake = tmp_path / "skopeo"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    assert missing_tools() == ["docker-registry"]


def test_registries_listen_on_loopback_only(seeded: Seeded, token_server: TokenServer) -> None:
    for registry in seeded.registries.values():
        assert registry.pid is not None
        addresses = listening_addresses(registry.pid)
        assert addresses == [("0100007F", registry.port)], (registry, addresses)
    assert token_server.realm.startswith("http://127.0.0.1:")


def test_htpasswd_uses_bcrypt_cost_4(registry_basic: Registry) -> None:
    lines = (registry_basic.workdir / "htpasswd").read_text().split()
    assert sorted(line.split(":", 1)[0] for line in lines) == ["alice", "bob"]
    assert all(line.split(":", 1)[1].startswith("$2b$04$") for line in lines)


def test_pki_server_cert_and_token_kid(pki: Pki) -> None:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pki.server_cert.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert (pki.cert_dir / "ca.crt").read_bytes() == pki.ca_file.read_bytes()
    groups = pki.kid.split(":")
    assert len(groups) == 12 and all(len(g) == 4 for g in groups)
    assert pki.kid == libtrust_kid(pki.token_key.public_key())


# --------------------------------------------------------------------------------------------
# no auth, basic auth


def test_noauth_ping_is_anonymous(registry_noauth: Registry) -> None:
    response = httpx.get(f"{registry_noauth.url}/v2/", timeout=5)
    assert response.status_code == 200
    assert response.json() == {}


def test_basic_challenge_then_credentials(seeded: Seeded, registry_basic: Registry) -> None:
    anonymous = httpx.get(f"{registry_basic.url}/v2/", timeout=5)
    assert anonymous.status_code == 401
    assert challenge(anonymous) == {"scheme": "Basic", "realm": "test-basic-realm"}
    assert httpx.get(f"{registry_basic.url}/v2/", headers=basic(*ALICE)).status_code == 200
    assert httpx.get(f"{registry_basic.url}/v2/", headers=basic("bob", WRONG)).status_code == 401

    response = manifest(registry_basic, "ns/hello", "v1", basic(*BOB))
    assert response.status_code == 200
    assert response.headers["Docker-Content-Digest"] == seeded.digest("basic", "ns/hello:v1")
    assert manifest(registry_basic, "ns/hello", "v1").status_code == 401


# --------------------------------------------------------------------------------------------
# token auth


ACL_CASES = [
    ("alice", "private/alice", 200),
    ("bob", "private/alice", 401),
    ("anonymous", "private/alice", 401),
    ("alice", "ns/hello", 200),
    ("bob", "ns/hello", 200),
    ("anonymous", "ns/hello", 401),
    ("anonymous", "public/hello", 200),
    ("bob", "public/hello", 200),
]


@pytest.mark.parametrize(("who", "repo", "status"), ACL_CASES)
def test_token_acl(
    seeded: Seeded, registry_token: Registry, who: str, repo: str, status: int
) -> None:
    creds = {"alice": ALICE, "bob": BOB, "anonymous": None}[who]
    # the full dance: challenge → token from the realm → retry with Bearer
    first = manifest(registry_token, repo, "v1")
    assert first.status_code == 401
    params = challenge(first)
    assert params["scheme"] == "Bearer"
    assert params["scope"] == f"repository:{repo}:pull"
    assert params["service"] == "test-registry"
    assert params["realm"] == registry_token.token_server.realm  # type: ignore[union-attr]
    assert "error" not in params

    reply = httpx.get(
        params["realm"],
        params={"service": params["service"], "scope": params["scope"]},
        headers=basic(*creds) if creds else {},
        timeout=5,
    )
    assert reply.status_code == 200
    token = reply.json()["token"]
    second = manifest(registry_token, repo, "v1", {"Authorization": f"Bearer {token}"})
    assert second.status_code == status
    if status == 200:
        assert second.headers["Docker-Content-Digest"] == seeded.digest("token", f"{repo}:v1")
    else:
        assert challenge(second)["error"] == "insufficient_scope"


def test_token_for_one_repository_does_not_open_another(
    seeded: Seeded, registry_token: Registry, token_server: TokenServer
) -> None:
    token = get_token(token_server, "repository:ns/hello:pull", ALICE).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    assert manifest(registry_token, "ns/hello", "v1", bearer).status_code == 200
    other = manifest(registry_token, "private/alice", "v1", bearer)
    assert other.status_code == 401
    assert challenge(other)["error"] == "insufficient_scope"


def test_token_server_refuses_bad_credentials(token_server: TokenServer) -> None:
    mark = token_server.count
    scope = "repository:ns/hello:pull"
    assert get_token(token_server, scope, ("bob", WRONG)).status_code == 401
    assert get_token(token_server, scope, ("mallory", "x")).status_code == 401
    assert get_token(token_server, scope, BOB).status_code == 200
    seen = token_server.requests_since(mark)
    assert [(r.account, r.status) for r in seen] == [("bob", 401), ("mallory", 401), ("bob", 200)]
    assert seen[2].granted == (("ns/hello", ("pull",)),)


def test_token_reply_and_jwt_claims(token_server: TokenServer, pki: Pki) -> None:
    reply = get_token(token_server, "repository:private/alice:pull,push", ALICE)
    body = reply.json()
    assert body["token"] == body["access_token"]
    assert body["expires_in"] == 300
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", body["issued_at"])
    header = jwt.get_unverified_header(body["token"])
    assert header["alg"] == "RS256"
    assert header["kid"] == pki.kid
    claims: dict[str, Any] = jwt.decode(
        body["token"], pki.token_key.public_key(), algorithms=["RS256"], audience="test-registry"
    )
    assert claims["iss"] == "test-issuer"
    assert claims["sub"] == "alice"
    assert claims["exp"] - claims["iat"] == 300
    assert claims["access"] == [
        {"type": "repository", "name": "private/alice", "actions": ["pull", "push"]}
    ]


def test_token_scopes_not_granted_give_empty_access(token_server: TokenServer) -> None:
    body = get_token(token_server, "repository:private/alice:pull", BOB).json()
    assert jwt.decode(body["token"], options={"verify_signature": False})["access"] == []
    push = get_token(token_server, "repository:ns/hello:pull,push", BOB).json()
    access = jwt.decode(push["token"], options={"verify_signature": False})["access"]
    assert access == [{"type": "repository", "name": "ns/hello", "actions": ["pull"]}]


def test_token_post_form_like_containerd(
    registry_token: Registry, token_server: TokenServer
) -> None:
    def post(form: dict[str, str]) -> httpx.Response:
        return httpx.post(token_server.realm, data=form, timeout=5)

    form = {
        "grant_type": "password",
        "username": ALICE[0],
        "password": ALICE[1],
        "service": "test-registry",
        "scope": "repository:private/alice:pull repository:ns/hello:pull",
        "client_id": "containerd-client",
    }
    reply = post(form)
    assert reply.status_code == 200
    access = jwt.decode(reply.json()["access_token"], options={"verify_signature": False})
    assert [a["name"] for a in access["access"]] == ["private/alice", "ns/hello"]
    bearer = {"Authorization": f"Bearer {reply.json()['access_token']}"}
    assert manifest(registry_token, "private/alice", "v1", bearer).status_code == 200

    assert post({**form, "password": WRONG}).status_code == 401
    assert post({**form, "grant_type": "refresh_token"}).status_code == 400
    assert post({**form, "service": "another-registry"}).status_code == 400


def test_token_registry_ping_accepts_any_valid_token(
    registry_token: Registry, token_server: TokenServer
) -> None:
    ping = httpx.get(f"{registry_token.url}/v2/", timeout=5)
    assert ping.status_code == 401
    assert "scope" not in challenge(ping)
    token = get_token(token_server, "", None).json()["token"]
    ok = httpx.get(f"{registry_token.url}/v2/", headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200


# --------------------------------------------------------------------------------------------
# TLS


def test_tls_works_with_the_ca_and_fails_without(seeded: Seeded, registry_tls: Registry) -> None:
    assert registry_tls.url.startswith("https://127.0.0.1:")
    assert registry_tls.ca_file is not None
    trusted = ssl.create_default_context(cafile=str(registry_tls.ca_file))
    assert httpx.get(f"{registry_tls.url}/v2/", verify=trusted, timeout=5).status_code == 200
    by_name = f"https://localhost:{registry_tls.port}/v2/"
    assert httpx.get(by_name, verify=trusted, timeout=5).status_code == 200
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{registry_tls.url}/v2/", timeout=5)
    response = manifest(registry_tls, "ns/hello", "v1")
    assert response.headers["Docker-Content-Digest"] == seeded.digest("tls", "ns/hello:v1")


# --------------------------------------------------------------------------------------------
# seeded content, through skopeo


@pytest.mark.parametrize("entry", SEED_PLAN, ids=lambda e: f"{e.registry}-{e.repository_and_tag}")
def test_skopeo_sees_the_seeded_digests(seeded: Seeded, skopeo: Skopeo, entry: Any) -> None:
    registry = seeded.registries[entry.registry]
    creds = BOB if entry.registry == "basic" else None
    if entry.repository_and_tag.startswith("private/"):
        creds = ALICE
    elif entry.registry == "token" and entry.repository_and_tag.startswith("ns/"):
        creds = BOB
    raw = skopeo.inspect_raw(registry, entry.repository_and_tag, creds=creds)
    assert digest_of(raw) == seeded.digest(entry.registry, entry.repository_and_tag)


def test_media_types_survive_the_push(seeded: Seeded, registry_noauth: Registry) -> None:
    images = seeded.images
    cases = {
        "ns/hello": (OCI_MANIFEST, images.hello.manifest_digest),
        "ns/docker": (DOCKER_MANIFEST, images.docker.manifest_digest),
        "ns/multi": (OCI_INDEX, images.multi_index),
    }
    for repo, (media_type, digest) in cases.items():
        response = manifest(registry_noauth, repo, "v1")
        assert response.headers["Content-Type"] == media_type
        assert response.headers["Docker-Content-Digest"] == digest
        assert digest_of(response.content) == digest
    index = json.loads(manifest(registry_noauth, "ns/multi", "v1").content)
    platforms = [m["platform"] for m in index["manifests"]]
    assert platforms == [
        {"architecture": "amd64", "os": "linux"},
        {"architecture": "arm64", "os": "linux", "variant": "v8"},
    ]
    for child in (images.multi_amd64, images.multi_arm64):
        assert manifest(registry_noauth, "ns/multi", child.manifest_digest).status_code == 200


def test_skopeo_is_denied_where_the_acl_says(seeded: Seeded, skopeo: Skopeo) -> None:
    token_registry = seeded.registries["token"]
    with pytest.raises(SkopeoError, match=r"unauthorized|denied|authentication required"):
        skopeo.inspect_raw(token_registry, "private/alice:v1", creds=BOB)
    with pytest.raises(SkopeoError):
        skopeo.inspect_raw(token_registry, "private/alice:v1")
    public = skopeo.inspect_raw(token_registry, "public/hello:v1")
    assert digest_of(public) == seeded.digest("token", "public/hello:v1")


def test_skopeo_inspect_reports_the_amd64_config(seeded: Seeded, skopeo: Skopeo) -> None:
    info = skopeo.inspect(seeded.registries["noauth"], "ns/multi:v1")
    assert info["Architecture"] == "amd64"
    assert info["Layers"] == list(seeded.images.multi_amd64.layer_digests)


# --------------------------------------------------------------------------------------------
# access log, stop/restart


def test_access_log_counts_blob_requests(seeded: Seeded, registry_noauth: Registry) -> None:
    hello = seeded.images.hello
    layer = hello.layer_digests[0]
    blob_url = f"{registry_noauth.url}/v2/ns/hello/blobs/{layer}"
    mark = registry_noauth.mark()
    with httpx.Client(timeout=5) as client:
        assert client.get(blob_url).status_code == 200
        assert client.get(blob_url).status_code == 200
        assert client.head(blob_url).status_code == 200
        assert client.get(blob_url.replace(layer, "sha256:" + "0" * 64)).status_code == 404
    assert registry_noauth.count_requests("GET", f"/blobs/{layer}", since=mark) == 2
    assert registry_noauth.count_requests("HEAD", "/blobs/", since=mark) == 1
    assert registry_noauth.count_requests("GET", "/blobs/", since=mark, status=404) == 1
    assert registry_noauth.blob_bytes_served(since=mark) == 2 * hello.layer_sizes[0]
    assert registry_noauth.count_requests("GET", f"/blobs/{layer}") >= 2  # from the start


def test_access_log_sees_a_skopeo_pull(
    seeded: Seeded, registry_noauth: Registry, skopeo: Skopeo, tmp_path: Path
) -> None:
    hello = seeded.images.hello
    mark = registry_noauth.mark()
    skopeo.copy_from(registry_noauth, "ns/hello:v1", f"oci:{tmp_path / 'out'}:v1")
    assert registry_noauth.count_requests("GET", "/v2/ns/hello/blobs/", since=mark) == 3
    assert registry_noauth.blob_bytes_served(since=mark) == hello.config_size + sum(
        hello.layer_sizes
    )
    assert registry_noauth.count_requests("PUT", "/", since=mark) == 0


def test_stopped_registry_refuses_then_restarts_on_its_port(fresh_registry: Registry) -> None:
    port = fresh_registry.port
    assert manifest(fresh_registry, "ns/hello", "v1").status_code == 200
    fresh_registry.stop()
    assert not fresh_registry.running
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{fresh_registry.url}/v2/", timeout=2)
    fresh_registry.start()
    assert fresh_registry.port == port
    assert manifest(fresh_registry, "ns/hello", "v1").status_code == 200  # data kept


def test_seeded_images_are_deterministic(test_images: TestImages, tmp_path: Path) -> None:
    from tests.integration.infra import build_test_images

    again = build_test_images(tmp_path / "layout")
    assert again.hello == test_images.hello
    assert again.multi_index == test_images.multi_index
    assert again.docker.media_type == DOCKER_MANIFEST


# --------------------------------------------------------------------------------------------
# the project's own push helper, checked with skopeo


def test_push_layout_with_the_project_client(seeded: Seeded, skopeo: Skopeo) -> None:
    from pullwarden.errors import RegistryError
    from pullwarden.runtime._base import AuthConfig
    from pullwarden.runtime._layout import push_layout
    from pullwarden.runtime._registry import HostOptions, RegistryClient

    images = seeded.images
    layout = images.layout_dir
    noauth, token, tls = (seeded.registries[m] for m in ("noauth", "token", "tls"))
    hosts = {tls.host: HostOptions(ca_file=tls.ca_file)}
    alice = AuthConfig(*ALICE)
    cases = [
        (noauth, "pushed/multi:v1", "multi", None, images.multi_index),
        (token, "ns/pushed-docker:v1", "docker", alice, images.docker.manifest_digest),
        (token, "private/alice:pushed", "alice", alice, images.alice.manifest_digest),
        (tls, "pushed/hello:v1", "hello", None, images.hello.manifest_digest),
    ]
    with RegistryClient(hosts=hosts, retries=0) as client:
        for registry, target, layout_ref, auth, expected in cases:
            mark = registry.mark()
            digest = push_layout(client, layout, layout_ref, registry.ref(target), auth)
            assert digest == expected
            assert registry.count_requests("PUT", "/manifests/", since=mark) >= 1
            creds = ALICE if registry is token else None
            assert digest_of(skopeo.inspect_raw(registry, target, creds=creds)) == expected
        with pytest.raises(RegistryError):
            push_layout(client, layout, "hello", token.ref("ns/by-bob:v1"), AuthConfig(*BOB))
    with pytest.raises(SkopeoError):
        skopeo.inspect_raw(token, "ns/by-bob:v1", creds=BOB)


def test_a_fixture_process_dies_with_the_test_process(tmp_path: Path) -> None:
    """What ``dying_with_parent`` promises, without a preexec_fn: a child whose parent dies
    without cleanup gets SIGTERM."""
    script = (
        "import subprocess, sys\n"
        "from tests.integration.infra import dying_with_parent\n"
        "child = subprocess.Popen(dying_with_parent(['sleep', '60']))\n"
        "print(child.pid, flush=True)\n"
        "import os; os._exit(0)\n"  # no cleanup, as a killed test run
    )
    repo = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=repo, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    assert ends_within(int(done.stdout), 10), "the fixture's child outlived the test process"


def test_fixture_processes_start_while_grpc_is_busy() -> None:
    """The fixtures' processes start even while this process's gRPC is busy, as it is after a
    CRI test: they are started without a ``preexec_fn`` (see ``busy_grpc``)."""
    with busy_grpc():
        codes = [subprocess.run(dying_with_parent(["true"])).returncode for _ in range(300)]
    assert codes == [0] * len(codes)
