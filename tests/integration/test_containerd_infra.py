"""Smoke tests of the containerd fixture itself (containerd.py), against the real daemon.

They talk CRI through the ``cri_api`` stubs directly, never through pullwarden, so that later
tests can trust what the fixture reports.
"""

from __future__ import annotations

import gc
import os
import signal
import time
from pathlib import Path

import pytest

from tests.integration.conftest import ContainerdFactory
from tests.integration.containerd import Containerd, grpc_module
from tests.integration.infra import ALICE, BOB, Registry, Seeded, TestImages


def _pull(containerd: Containerd, ref: str, creds: tuple[str, str] | None = None) -> str:
    """CRI PullImage of ``ref`` with username/password ``creds``; the image ref it returns."""
    from cri_api.v1 import api_pb2

    auth = api_pb2.AuthConfig(username=creds[0], password=creds[1]) if creds is not None else None
    request = api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=ref), auth=auth)
    response = containerd.image_service.PullImage(request, timeout=60)
    return str(response.image_ref)


def test_version_rpc_names_containerd_and_cri_v1(containerd: Containerd) -> None:
    version = containerd.version()
    assert version.runtime_name == "containerd"
    assert version.runtime_api_version == "v1"
    assert version.runtime_version.startswith("1.6.")
    assert containerd.endpoint == f"unix://{containerd.socket}"
    assert containerd.socket.is_socket()


def test_cri_pull_with_alice_credentials_from_the_token_registry(
    containerd: Containerd, seeded: Seeded
) -> None:
    ref = seeded.ref("token", "private/alice:v1")
    image_id = _pull(containerd, ref, ALICE)

    assert image_id == seeded.images.alice.config_digest
    assert ref in containerd.image_names()
    status = containerd.cri_status(ref)
    assert status is not None
    assert status.id == image_id
    assert status.repo_tags == [ref]
    repository = ref.rsplit(":", 1)[0]
    assert status.repo_digests == [f"{repository}@{seeded.digest('token', 'private/alice:v1')}"]


def test_cri_pull_is_really_authorized(containerd: Containerd, seeded: Seeded) -> None:
    grpc = grpc_module()
    ref = seeded.ref("token", "private/alice:v1")
    with pytest.raises(grpc.RpcError) as denied:
        _pull(containerd, ref, BOB)
    assert denied.value.code() == grpc.StatusCode.UNKNOWN
    assert "insufficient_scope" in denied.value.details()
    assert containerd.cri_status(ref) is None


@pytest.mark.parametrize(
    ("layout_ref", "expected_config"),
    [
        ("alice", "alice"),
        ("docker", "docker"),
        ("multi", "multi_amd64"),  # an index: the host's platform
        ("multi-arm64", "multi_arm64"),  # another platform only
    ],
)
def test_import_image_is_visible_to_cri_under_the_given_name(
    containerd: Containerd,
    test_images: TestImages,
    seeded: Seeded,
    registry_token: Registry,
    layout_ref: str,
    expected_config: str,
) -> None:
    name = f"{registry_token.host}/private/imported-{layout_ref}:v1"
    mark = registry_token.mark()

    image_id = containerd.import_image(test_images.layout_dir, layout_ref, name)

    assert image_id == getattr(test_images, expected_config).config_digest
    status = containerd.cri_status(name)
    assert status is not None
    assert status.id == image_id
    assert status.repo_tags == [name]
    top_digest = seeded.layout_digest(layout_ref)
    assert status.repo_digests == [f"{name.rsplit(':', 1)[0]}@{top_digest}"]
    assert containerd.cri_status(image_id) == status
    assert any(image.id == image_id for image in containerd.cri_images())
    assert registry_token.access_log(mark) == []  # an import contacts no registry


def test_import_without_a_digest_ref(containerd: Containerd, test_images: TestImages) -> None:
    name = "127.0.0.1:9/ns/plain:v1"
    image_id = containerd.import_image(test_images.layout_dir, "hello", name, digest_ref=False)
    assert containerd.cri_status(name) == (image_id, [name], [])
    assert containerd.image_names() == {name, image_id}


def test_remove_all_images_leaves_nothing_and_the_next_pull_downloads_again(
    containerd: Containerd, seeded: Seeded, test_images: TestImages, registry_noauth: Registry
) -> None:
    ref = seeded.ref("noauth", "ns/hello:v1")
    _pull(containerd, ref)
    containerd.import_image(test_images.layout_dir, "alice", "127.0.0.1:9/ns/alice:v1")
    assert containerd.content_digests()

    started = time.monotonic()
    containerd.remove_all_images()
    elapsed = time.monotonic() - started

    assert containerd.image_names() == set()
    assert containerd.cri_images() == []
    assert containerd.content_digests() == set()
    mark = registry_noauth.mark()
    _pull(containerd, ref)
    served = registry_noauth.blob_bytes_served(since=mark)
    assert served == test_images.hello.config_size + sum(test_images.hello.layer_sizes)
    print(f"remove_all_images took {elapsed * 1000:.0f} ms")


@pytest.mark.parametrize("mode", ["noauth", "tls"])
def test_a_missing_tag_is_not_found_after_one_attempt(
    containerd: Containerd, seeded: Seeded, mode: str
) -> None:
    grpc = grpc_module()
    registry = seeded.registries[mode]
    assert _pull(containerd, seeded.ref(mode, "ns/hello:v1")) == seeded.images.hello.config_digest
    mark = registry.mark()
    with pytest.raises(grpc.RpcError) as missing:
        _pull(containerd, seeded.ref(mode, "ns/hello:nope"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND, missing.value.details()
    # hosts.toml names one endpoint for pulls, so containerd does not retry elsewhere.
    assert [(entry.method, entry.status) for entry in registry.access_log(mark)] == [("HEAD", 404)]


def test_tls_needs_the_hosts_toml_ca(
    containerd: Containerd, seeded: Seeded, registry_tls: Registry
) -> None:
    grpc = grpc_module()
    containerd.untrust(registry_tls)
    try:
        with pytest.raises(grpc.RpcError) as untrusted:
            _pull(containerd, seeded.ref("tls", "ns/hello:v1"))
        assert untrusted.value.code() == grpc.StatusCode.UNKNOWN
    finally:
        containerd.trust(registry_tls)
    assert _pull(containerd, seeded.ref("tls", "ns/hello:v1")) == seeded.images.hello.config_digest


def test_stop_leaves_no_process_and_images_survive_a_restart(
    containerd: Containerd, test_images: TestImages
) -> None:
    name = "127.0.0.1:9/ns/kept:v1"
    image_id = containerd.import_image(test_images.layout_dir, "hello", name)
    pid = containerd.pid
    assert pid is not None

    containerd.stop()
    containerd.stop()  # idempotent

    assert not containerd.running
    assert containerd.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    started = time.monotonic()
    containerd.start()
    print(f"containerd start took {(time.monotonic() - started) * 1000:.0f} ms")
    assert containerd.pid not in (None, pid)
    status = containerd.cri_status(name)
    assert status is not None
    assert status.id == image_id


def test_factory_daemon_is_private_and_survives_sigkill(
    containerd_factory: ContainerdFactory, containerd: Containerd, test_images: TestImages
) -> None:
    own = containerd_factory()
    assert own.socket != containerd.socket
    assert len(str(own.socket)) < 100
    own.import_image(test_images.layout_dir, "hello", "127.0.0.1:9/ns/own:v1")
    assert containerd.cri_status("127.0.0.1:9/ns/own:v1") is None

    pid = own.pid
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while own.running and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not own.running
    own.start()  # over the stale socket and the same root
    assert own.cri_status("127.0.0.1:9/ns/own:v1") is not None


def test_a_long_workdir_gets_a_short_socket_directory(
    containerd_components: None, tmp_path: Path
) -> None:
    workdir = tmp_path / ("long-" * 20)
    daemon = Containerd(workdir)
    socket_dir = daemon.socket.parent
    try:
        assert socket_dir.parent == Path("/tmp")
        assert socket_dir.name.startswith("pwctrd.")
        daemon.start()
        assert daemon.version().runtime_name == "containerd"
        assert str(socket_dir) in daemon.config_path.read_text()
        assert str(workdir / "root") in daemon.config_path.read_text()
    finally:
        daemon.stop()
    del daemon
    gc.collect()
    assert not socket_dir.exists()
