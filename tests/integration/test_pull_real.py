"""Real pulls: pullwarden's registry client and embedded store against the real docker-registry."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from pullwarden.errors import (
    DeniedError,
    NotFoundError,
    RegistryUnavailableError,
    UnauthorizedError,
)
from pullwarden.runtime import AuthConfig, HostOptions, LocalImageService, Platform, RegistryClient
from tests.integration.infra import ALICE, BOB, Registry, Seeded

ALICE_AUTH = AuthConfig(*ALICE)
BOB_AUTH = AuthConfig(*BOB)


def store(tmp_path: Path, **client_args: object) -> LocalImageService:
    client = RegistryClient(**client_args)  # type: ignore[arg-type]
    return LocalImageService(tmp_path / "store", client=client)


def test_alice_pulls_her_private_image(seeded: Seeded, tmp_path: Path) -> None:
    ref = seeded.ref("token", "private/alice:v1")
    with store(tmp_path) as svc:
        image_ref = svc.pull_image(ref, ALICE_AUTH)
        image = svc.image_status(ref)
    assert image is not None and image.id == image_ref
    assert image.repo_tags == (ref,)
    digest = seeded.digest("token", "private/alice:v1")
    assert image.repo_digests == (f"{ref.rsplit(':', 1)[0]}@{digest}",)
    assert image_ref == seeded.images.alice.config_digest


@pytest.mark.parametrize(
    ("auth", "error"),
    [
        (BOB_AUTH, DeniedError),
        (None, DeniedError),
        (AuthConfig(ALICE[0], "wrong-password"), UnauthorizedError),
    ],
    ids=["bob-denied", "anonymous-denied", "wrong-password"],
)
def test_others_cannot_pull_alices_image(
    seeded: Seeded, tmp_path: Path, auth: AuthConfig | None, error: type[Exception]
) -> None:
    ref = seeded.ref("token", "private/alice:v1")
    with store(tmp_path) as svc, pytest.raises(error) as info:
        svc.pull_image(ref, auth)
    assert "private/alice" in str(info.value)
    assert "wrong-password" not in str(info.value) and ALICE[1] not in str(info.value)
    with store(tmp_path) as svc:
        assert svc.list_images() == []


def test_repull_costs_one_manifest_request_and_bob_stays_denied(
    seeded: Seeded, tmp_path: Path
) -> None:
    registry = seeded.registries["token"]
    ref = seeded.ref("token", "private/alice:v1")
    with store(tmp_path) as svc:
        svc.pull_image(ref, ALICE_AUTH)
        mark = registry.mark()
        svc.pull_image(ref, ALICE_AUTH)
        assert registry.blob_bytes_served(since=mark) == 0
        manifest_requests = registry.count_requests("HEAD", "/manifests/", since=mark, status=200)
        manifest_requests += registry.count_requests("GET", "/manifests/", since=mark, status=200)
        assert manifest_requests == 1
        assert registry.count_requests("GET", "/blobs/", since=mark) == 0
        # every blob is local, yet bob's re-verification is refused by the registry
        mark = registry.mark()
        with pytest.raises(DeniedError):
            svc.pull_image(ref, BOB_AUTH)
        assert registry.blob_bytes_served(since=mark) == 0
        assert svc.image_status(ref) is not None


def test_basic_auth_registry(seeded: Seeded, tmp_path: Path) -> None:
    ref = seeded.ref("basic", "ns/hello:v1")
    with store(tmp_path) as svc:
        with pytest.raises(UnauthorizedError):
            svc.pull_image(ref, None)
        assert svc.pull_image(ref, BOB_AUTH) == seeded.images.hello.config_digest
        with pytest.raises(UnauthorizedError):
            svc.pull_image(ref, AuthConfig(BOB[0], "nope"))


def test_missing_tag_is_not_found(seeded: Seeded, tmp_path: Path) -> None:
    with store(tmp_path) as svc, pytest.raises(NotFoundError):
        svc.pull_image(seeded.ref("noauth", "ns/hello:no-such-tag"))


def test_stopped_registry_is_unavailable(fresh_registry: Registry, tmp_path: Path) -> None:
    ref = fresh_registry.ref("ns/hello:v1")
    fresh_registry.stop()
    with (
        store(tmp_path, retries=1, retry_backoff=0.01) as svc,
        pytest.raises(RegistryUnavailableError) as info,
    ):
        svc.pull_image(ref)
    assert fresh_registry.host in str(info.value)


def test_docker_schema2_and_multi_platform(seeded: Seeded, tmp_path: Path) -> None:
    with store(tmp_path) as svc:
        docker_id = svc.pull_image(seeded.ref("noauth", "ns/docker:v1"))
        assert docker_id == seeded.images.docker.config_digest
    arm = LocalImageService(
        tmp_path / "arm",
        client=RegistryClient(platform=Platform("linux", "arm64", "v8")),
        platform=Platform("linux", "arm64", "v8"),
    )
    with arm:
        ref = seeded.ref("noauth", "ns/multi:v1")
        assert arm.pull_image(ref) == seeded.images.multi_arm64.config_digest
        image = arm.image_status(ref)
        assert image is not None
        assert image.repo_digests[0].endswith("@" + seeded.images.multi_index)


def test_tls_registry_needs_its_ca(seeded: Seeded, tmp_path: Path) -> None:
    registry = seeded.registries["tls"]
    ref = seeded.ref("tls", "ns/hello:v1")
    no_ca = {registry.host: HostOptions(insecure=False)}
    with store(tmp_path / "no-ca", hosts=no_ca) as svc, pytest.raises(RegistryUnavailableError):
        svc.pull_image(ref)
    assert registry.ca_file is not None
    hosts = {registry.host: HostOptions(insecure=False, ca_file=registry.ca_file)}
    with store(tmp_path / "ca", hosts=hosts) as svc:
        assert svc.pull_image(ref) == seeded.images.hello.config_digest


def test_blobs_on_disk_match_their_digests(seeded: Seeded, tmp_path: Path) -> None:
    with store(tmp_path) as svc:
        svc.pull_image(seeded.ref("noauth", "ns/hello:v1"))
    blobs = list((tmp_path / "store" / "blobs" / "sha256").iterdir())
    assert blobs
    for blob in blobs:
        assert hashlib.sha256(blob.read_bytes()).hexdigest() == blob.name
