"""DevRegistry against pullwarden's own client and store: auth flows, rules, protocol details."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pullwarden.devregistry import SERVICE, AccessRule, DevRegistry, Faults
from pullwarden.errors import DeniedError, NotFoundError, UnauthorizedError
from pullwarden.runtime import (
    AuthConfig,
    BuiltImage,
    LocalImageService,
    Platform,
    RegistryClient,
    build_image,
    build_index,
    oci,
    push_layout,
)
from pullwarden.testing import FakeClock

ALICE = AuthConfig("alice", "alice-secret-pw")
BOB = AuthConfig("bob", "bob-secret-pw")
USERS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw"}
RULES = (
    AccessRule("alice", "private/alice", frozenset({"pull", "push"})),
    AccessRule("alice", "ns/*", frozenset({"pull", "push"})),
    AccessRule("*", "ns/*", frozenset({"pull"})),
)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, BuiltImage]:
    directory = tmp_path / "layout"
    return directory, build_image(directory, "v1", files={"app.txt": b"hello devregistry\n"})


@pytest.fixture
def client() -> Iterator[RegistryClient]:
    with RegistryClient(retries=3, sleep=lambda _: None) as c:
        yield c


def blob_total(image: BuiltImage) -> int:
    return image.config_size + sum(image.layer_sizes)


def test_anonymous_push_then_pull_and_cheap_reverification(
    layout: tuple[Path, BuiltImage], client: RegistryClient, tmp_path: Path
) -> None:
    directory, image = layout
    with DevRegistry() as reg:
        ref = f"{reg.host}/ns/app:v1"
        assert push_layout(client, directory, "v1", ref) == image.manifest_digest
        mark = reg.mark()
        with LocalImageService(tmp_path / "store", client=client) as store:
            assert store.pull_image(ref) == image.config_digest
            status = store.image_status(ref)
            assert status is not None
            assert status.repo_digests == (f"{reg.host}/ns/app@{image.manifest_digest}",)
            assert reg.blob_bytes_served(since=mark) == blob_total(image)
            assert reg.count("GET", "/blobs/", since=mark) == 2
            # a re-pull of a held image is one manifest HEAD and no blob bytes
            mark = reg.mark()
            assert store.pull_image(ref) == image.config_digest
        assert reg.count(since=mark) == 1
        assert reg.count("HEAD", "/manifests/v1", since=mark, status=200) == 1
        assert reg.blob_bytes_served(since=mark) == 0
        assert all(r.user is None and r.auth_scheme == "" for r in reg.requests)
        assert reg.server_errors == []


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_per_repository_rules(
    mode: str, layout: tuple[Path, BuiltImage], client: RegistryClient, tmp_path: Path
) -> None:
    directory, image = layout
    with DevRegistry(users=USERS, auth=mode, rules=RULES) as reg:  # type: ignore[arg-type]
        private, shared = f"{reg.host}/private/alice:v1", f"{reg.host}/ns/app:v1"
        push_layout(client, directory, "v1", private, ALICE)
        push_layout(client, directory, "v1", shared, ALICE)
        with LocalImageService(tmp_path / "store", client=client) as store:
            assert store.pull_image(private, ALICE) == image.config_digest
            assert store.pull_image(shared, BOB) == image.config_digest
            with pytest.raises(DeniedError) as denied:
                store.pull_image(private, BOB)
            with pytest.raises(UnauthorizedError) as wrong:
                store.pull_image(private, AuthConfig("alice", "not-her-password"))
            anonymous_error = UnauthorizedError if mode == "basic" else DeniedError
            with pytest.raises(anonymous_error):
                store.pull_image(private)
        with pytest.raises(DeniedError):  # bob may pull ns/* but not push there
            push_layout(client, directory, "v1", f"{reg.host}/ns/bobs:v1", BOB)
    assert "private/alice" in str(denied.value)
    for text in (str(denied.value), str(wrong.value), repr(reg.requests)):
        assert "secret-pw" not in text and "not-her-password" not in text
    users_seen = {r.user for r in reg.requests}
    assert users_seen == {None, "alice", "bob"}


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_anonymous_pull_patterns(
    mode: str, layout: tuple[Path, BuiltImage], client: RegistryClient, tmp_path: Path
) -> None:
    directory, image = layout
    with DevRegistry(users=USERS, auth=mode, anonymous_pull=["public/*"]) as reg:  # type: ignore[arg-type]
        push_layout(client, directory, "v1", f"{reg.host}/public/app:v1", ALICE)
        push_layout(client, directory, "v1", f"{reg.host}/other/app:v1", ALICE)
        with LocalImageService(tmp_path / "store", client=client) as store:
            assert store.pull_image(f"{reg.host}/public/app:v1") == image.config_digest
            with pytest.raises(UnauthorizedError if mode == "basic" else DeniedError):
                store.pull_image(f"{reg.host}/other/app:v1")
        with pytest.raises(UnauthorizedError if mode == "basic" else DeniedError):
            push_layout(client, directory, "v1", f"{reg.host}/public/anon:v1")


def test_token_protocol_on_the_wire(layout: tuple[Path, BuiltImage]) -> None:
    directory, image = layout
    with DevRegistry(users=USERS, auth="token", rules=RULES) as reg, httpx.Client() as http:
        reg.add_image("private/alice", "v1", directory, "v1")
        base = http.get(f"{reg.url}/v2/")
        assert base.status_code == 401
        realm = f'Bearer realm="{reg.url}/token",service="{SERVICE}"'
        assert base.headers["WWW-Authenticate"] == realm
        manifest_url = f"{reg.url}/v2/private/alice/manifests/v1"
        bare = http.get(manifest_url, headers={"Accept": oci.ACCEPT})
        assert bare.status_code == 401
        assert bare.headers["WWW-Authenticate"] == realm + ',scope="repository:private/alice:pull"'
        error = bare.json()["errors"][0]
        assert error["code"] == "UNAUTHORIZED"
        assert error["detail"] == [
            {"Type": "repository", "Name": "private/alice", "Action": "pull"}
        ]

        scope = {"service": SERVICE, "scope": "repository:private/alice:pull,push"}
        wrong = http.get(f"{reg.url}/token", params=scope, auth=("alice", "nope"))
        assert wrong.status_code == 401
        reply = http.get(f"{reg.url}/token", params=scope, auth=("alice", "alice-secret-pw"))
        assert reply.status_code == 200
        body = reply.json()
        assert body["token"] == body["access_token"] and body["expires_in"] == 300
        assert body["issued_at"].endswith("Z")
        ok = http.get(
            manifest_url,
            headers={"Accept": oci.ACCEPT, "Authorization": f"Bearer {body['token']}"},
        )
        assert ok.status_code == 200
        assert ok.headers["Docker-Content-Digest"] == image.manifest_digest
        with_token = {"Authorization": f"Bearer {body['token']}"}
        assert http.get(f"{reg.url}/v2/", headers=with_token).status_code == 200

        # bob's token is valid but lacks the scope; an anonymous token has no access at all
        form = {"grant_type": "password", "username": "bob", "password": "bob-secret-pw",
                "service": SERVICE, "scope": "repository:private/alice:pull",
                "client_id": "containerd-client"}  # fmt: skip
        bob_token = http.post(f"{reg.url}/token", data=form).json()["token"]
        anonymous_token = http.get(f"{reg.url}/token", params=scope).json()["token"]
        for token in (bob_token, anonymous_token):
            refused = http.get(
                manifest_url, headers={"Accept": oci.ACCEPT, "Authorization": f"Bearer {token}"}
            )
            assert refused.status_code == 401
            assert refused.headers["WWW-Authenticate"].endswith(',error="insufficient_scope"')
        forged = http.get(manifest_url, headers={"Authorization": "Bearer forged"})
        assert forged.headers["WWW-Authenticate"].endswith(',error="invalid_token"')
        refresh = {"grant_type": "refresh_token", "refresh_token": "x", "service": SERVICE}
        assert http.post(f"{reg.url}/token", data=refresh).status_code == 400


def test_basic_challenge_and_denied_body(layout: tuple[Path, BuiltImage]) -> None:
    directory, _ = layout
    with DevRegistry(users=USERS, auth="basic", rules=RULES) as reg, httpx.Client() as http:
        reg.add_image("private/alice", "v1", directory, "v1")
        url = f"{reg.url}/v2/private/alice/manifests/v1"
        bare = http.get(url, headers={"Accept": oci.ACCEPT})
        assert bare.status_code == 401
        assert bare.headers["WWW-Authenticate"] == 'Basic realm="pullwarden-devregistry"'
        denied = http.get(url, headers={"Accept": oci.ACCEPT}, auth=("bob", "bob-secret-pw"))
        assert denied.status_code == 403
        assert denied.json()["errors"][0]["code"] == "DENIED"
        assert http.get(f"{reg.url}/token").status_code == 404  # no token endpoint in basic mode


def test_expired_token_is_refused_and_the_client_fetches_a_new_one(
    layout: tuple[Path, BuiltImage], client: RegistryClient, tmp_path: Path
) -> None:
    directory, image = layout
    clock = FakeClock()
    with DevRegistry(users=USERS, auth="token", clock=clock) as reg:
        reg.add_image("ns/app", "v1", directory, "v1")
        ref = f"{reg.host}/ns/app:v1"
        with LocalImageService(tmp_path / "store", client=client) as store:
            store.pull_image(ref, ALICE)
            mark = reg.mark()
            store.pull_image(ref, ALICE)  # the client's cached token still works
            assert reg.count("GET", "/token", since=mark) == 0
            clock.advance(301)
            mark = reg.mark()
            assert store.pull_image(ref, ALICE) == image.config_digest
        assert reg.count("HEAD", "/manifests/", since=mark, status=401) == 1
        assert reg.count("GET", "/token", since=mark) == 1


def test_manifest_accept_rules_like_docker_registry(tmp_path: Path) -> None:
    directory = tmp_path / "layout"
    amd = build_image(directory, "amd", files={"a": b"a"})
    arm = build_image(directory, "arm", files={"b": b"b"}, platform=Platform("linux", "arm64"))
    build_index(directory, "multi", [amd, arm])
    docker = build_image(directory, "docker", files={"d": b"d"}, docker=True)
    with DevRegistry() as reg, httpx.Client() as http:
        reg.add_image("ns/oci", "v1", directory, "amd")
        reg.add_image("ns/oci", "multi", directory, "multi")
        reg.add_image("ns/docker", "v1", directory, "docker")

        def get(path: str, accept: str | None, method: str = "GET") -> httpx.Response:
            headers = {"Accept": accept} if accept is not None else {}
            return http.request(method, f"{reg.url}/v2/{path}", headers=headers)

        for accept in (None, "*/*", oci.DOCKER_MANIFEST):
            for method in ("GET", "HEAD"):
                refused = get("ns/oci/manifests/v1", accept, method)
                assert refused.status_code == 404
            body = get("ns/oci/manifests/v1", accept).json()
            assert body["errors"][0]["code"] == "MANIFEST_UNKNOWN"
            assert "accept header does not support OCI manifests" in body["errors"][0]["message"]
        by_digest = get(f"ns/oci/manifests/{amd.manifest_digest}", None)
        assert by_digest.status_code == 404

        ok = get("ns/oci/manifests/v1", oci.OCI_MANIFEST)
        assert ok.status_code == 200
        assert ok.headers["Content-Type"] == oci.OCI_MANIFEST
        assert ok.headers["Docker-Content-Digest"] == amd.manifest_digest
        assert int(ok.headers["Content-Length"]) == amd.size == len(ok.content)
        head = get("ns/oci/manifests/v1", oci.OCI_MANIFEST, "HEAD")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["Content-Length"] == str(amd.size)

        assert get("ns/oci/manifests/multi", oci.OCI_MANIFEST).status_code == 404
        index = get("ns/oci/manifests/multi", oci.ACCEPT)
        assert index.headers["Content-Type"] == oci.OCI_INDEX

        assert get("ns/docker/manifests/v1", None).status_code == 400
        schema2 = get("ns/docker/manifests/v1", oci.DOCKER_MANIFEST)
        assert schema2.headers["Docker-Content-Digest"] == docker.manifest_digest
        assert get("ns/oci/manifests/v2", oci.ACCEPT).json()["errors"][0]["code"] == (
            "MANIFEST_UNKNOWN"
        )
        tags = http.get(f"{reg.url}/v2/ns/oci/tags/list").json()
        assert tags == {"name": "ns/oci", "tags": ["multi", "v1"]}
        page = http.get(f"{reg.url}/v2/ns/oci/tags/list", params={"n": 1})
        assert page.json()["tags"] == ["multi"] and 'rel="next"' in page.headers["Link"]
        unknown = http.get(f"{reg.url}/v2/nope/tags/list")
        assert unknown.status_code == 404 and unknown.json()["errors"][0]["code"] == "NAME_UNKNOWN"
        assert http.get(f"{reg.url}/v2/Bad_Name/tags/list").status_code == 400


def test_multi_platform_index_pull(tmp_path: Path, client: RegistryClient) -> None:
    directory = tmp_path / "layout"
    amd = build_image(directory, "amd", files={"a": b"a"})
    arm = build_image(directory, "arm", files={"b": b"b"}, platform=Platform("linux", "arm64"))
    index_digest = build_index(directory, "multi", [amd, arm])
    with DevRegistry() as reg:
        assert reg.add_image("ns/multi", "v1", directory, "multi") == index_digest
        resolved = client.get_manifest(
            f"{reg.host}/ns/multi:v1", platform=Platform("linux", "arm64")
        )
        assert resolved.digest == index_digest
        assert resolved.manifest_digest == arm.manifest_digest
        with pytest.raises(NotFoundError):
            client.get_manifest(f"{reg.host}/ns/other:v1")


def test_push_protocol_details(layout: tuple[Path, BuiltImage]) -> None:
    directory, image = layout
    payload = b"chunk-one|" * 1000 + b"chunk-two"
    digest = oci.digest_of(payload)
    with (
        DevRegistry(users=USERS, auth="basic", rules=RULES) as reg,
        httpx.Client(auth=("alice", "alice-secret-pw")) as http,
    ):
        uploads = f"{reg.url}/v2/ns/app/blobs/uploads/"
        started = http.post(uploads)
        assert started.status_code == 202 and "_state=" in started.headers["Location"]
        location = started.url.join(started.headers["Location"])
        # chunk 1 with Content-Range, chunk 2 as a chunked transfer-encoded body
        first = http.patch(location, content=payload[:5000], headers={"Content-Range": "0-4999"})
        assert first.status_code == 202 and first.headers["Range"] == "0-4999"
        location = first.url.join(first.headers["Location"])
        bad_range = http.patch(location, content=b"x", headers={"Content-Range": "10-10"})
        assert bad_range.status_code == 416
        second = http.patch(location, content=iter([payload[5000:7000], payload[7000:]]))
        assert second.status_code == 202
        done = http.put(location.copy_merge_params({"digest": digest}))
        assert done.status_code == 201 and done.headers["Docker-Content-Digest"] == digest
        fetched = http.get(f"{reg.url}/v2/ns/app/blobs/{digest}")
        assert fetched.content == payload

        # a monolithic PUT whose bytes do not match the digest
        session = http.post(uploads)
        wrong = http.put(
            session.url.join(session.headers["Location"]).copy_merge_params(
                {"digest": "sha256:" + "0" * 64}
            ),
            content=b"something else",
        )
        assert wrong.status_code == 400
        assert wrong.json()["errors"][0]["code"] == "DIGEST_INVALID"
        assert http.head(f"{reg.url}/v2/ns/app/blobs/sha256:{'0' * 64}").status_code == 404

        # cross-repository mount: from a repository alice may pull; not from one she may not
        mounted = http.post(
            uploads.replace("ns/app", "ns/copy"), params={"mount": digest, "from": "ns/app"}
        )
        assert mounted.status_code == 201 and mounted.headers["Docker-Content-Digest"] == digest
        reg.add_image("hidden/repo", "v1", directory, "v1")
        layer = image.layer_digests[0]
        not_mounted = http.post(uploads, params={"mount": layer, "from": "hidden/repo"})
        assert not_mounted.status_code == 202
        # blobs are per repository: the layer is stored, but not linked into ns/app
        assert http.get(f"{reg.url}/v2/ns/app/blobs/{layer}").json()["errors"][0]["code"] == (
            "BLOB_UNKNOWN"
        )

        # a manifest whose blobs are not in the repository is refused
        manifest = (directory / "blobs" / "sha256" / image.manifest_digest[7:]).read_bytes()
        put = http.put(
            f"{reg.url}/v2/ns/app/manifests/v1",
            content=manifest,
            headers={"Content-Type": oci.OCI_MANIFEST},
        )
        assert put.status_code == 400
        assert put.json()["errors"][0]["code"] == "MANIFEST_BLOB_UNKNOWN"
        reg.add_image("ns/full", "v1", directory, "v1")
        by_wrong_digest = http.put(
            f"{reg.url}/v2/ns/full/manifests/sha256:{'1' * 64}",
            content=manifest,
            headers={"Content-Type": oci.OCI_MANIFEST},
        )
        assert by_wrong_digest.json()["errors"][0]["code"] == "DIGEST_INVALID"
        by_digest = http.put(
            f"{reg.url}/v2/ns/full/manifests/{image.manifest_digest}",
            content=manifest,
            headers={"Content-Type": oci.OCI_MANIFEST},
        )
        assert by_digest.status_code == 201
        assert http.delete(f"{reg.url}/v2/ns/app/manifests/v1").json()["errors"][0]["code"] == (
            "UNSUPPORTED"
        )
        assert reg.server_errors == []


def test_directory_storage_survives_a_restart(
    layout: tuple[Path, BuiltImage], client: RegistryClient, tmp_path: Path
) -> None:
    directory, image = layout
    storage = tmp_path / "registry-data"
    first = DevRegistry(storage_dir=storage, users=USERS, auth="token")
    with first:
        push_layout(client, directory, "v1", f"{first.host}/ns/app:v1", ALICE)
        port = first.port
    # the same object again listens on the same port and still has the image
    with first:
        assert first.port == port
        assert client.head_manifest(f"{first.host}/ns/app:v1", ALICE) == image.manifest_digest
    # a new server over the same directory serves it too
    with DevRegistry(storage_dir=storage, users=USERS, auth="token") as second:
        with LocalImageService(tmp_path / "store", client=client) as store:
            assert store.pull_image(f"{second.host}/ns/app:v1", ALICE) == image.config_digest
        tags = json.loads(
            httpx.get(
                f"{second.url}/v2/ns/app/tags/list",
                headers={"Authorization": "Bearer " + httpx.get(
                    f"{second.url}/token",
                    params={"scope": "repository:ns/app:pull"},
                    auth=("alice", "alice-secret-pw"),
                ).json()["token"]},
            ).content
        )  # fmt: skip
        assert tags["tags"] == ["v1"]
    assert not list((storage / "_uploads").iterdir())


def test_memory_storage_does_not_survive(
    layout: tuple[Path, BuiltImage], client: RegistryClient
) -> None:
    directory, _ = layout
    with DevRegistry() as reg:
        push_layout(client, directory, "v1", f"{reg.host}/ns/app:v1")
    with DevRegistry() as fresh, pytest.raises(NotFoundError):
        client.get_manifest(f"{fresh.host}/ns/app:v1")


def test_stop_closes_kept_alive_connections(
    layout: tuple[Path, BuiltImage], client: RegistryClient
) -> None:
    directory, image = layout
    reg = DevRegistry()
    reg.add_image("ns/app", "v1", directory, "v1")
    with reg:
        assert client.head_manifest(f"{reg.host}/ns/app:v1") == image.manifest_digest
    from pullwarden.errors import RegistryUnavailableError

    with pytest.raises(RegistryUnavailableError):
        client.head_manifest(f"{reg.host}/ns/app:v1")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"host": "0.0.0.0"}, "loopback only"),
        ({"host": "192.168.1.10"}, "loopback only"),
        ({"users": USERS}, "need auth"),
        ({"auth": "basic", "rules": ["alice=ns/*"]}, "AccessRule"),
        ({"auth": "ldap"}, "auth must be one of"),
        ({"port": 70000}, "port"),
    ],
)
def test_constructor_rejects_bad_settings(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises((ValueError, TypeError), match=message):
        DevRegistry(**kwargs)  # type: ignore[arg-type]


def test_access_rules_and_faults_validate() -> None:
    with pytest.raises(ValueError):
        AccessRule("alice", "ns/*", frozenset({"delete"}))
    with pytest.raises(ValueError):
        AccessRule("", "ns/*")
    assert AccessRule("*", "ns/*").actions == frozenset({"pull"})
    faults = Faults()
    for name, value in (
        ("latency", -1.0),
        ("fail_5xx", -1),
        ("drop_connection", True),
        ("wrong_digest", 1),
        ("redirect_blobs_to", "http://example.com:5000"),
        ("redirect_blobs_to", "ftp://127.0.0.1:21"),
    ):
        with pytest.raises(ValueError):
            setattr(faults, name, value)
    faults.redirect_blobs_to = "http://localhost:5000"
    faults.fail_5xx = 2
    faults.reset()
    assert faults == Faults()


def test_ipv6_loopback(layout: tuple[Path, BuiltImage], client: RegistryClient) -> None:
    directory, image = layout
    try:
        reg = DevRegistry(host="::1")
        reg.start()
    except OSError:
        pytest.skip("no IPv6 loopback here")
    try:
        assert reg.url.startswith("http://[::1]:")
        reg.add_image("ns/app", "v1", directory, "v1")
        assert client.head_manifest(f"{reg.host}/ns/app:v1") == image.manifest_digest
    finally:
        reg.stop()
