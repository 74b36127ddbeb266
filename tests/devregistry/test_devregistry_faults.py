"""Every DevRegistry fault knob produces the typed error pullwarden's client should raise."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pullwarden.devregistry import DevRegistry, Faults
from pullwarden.errors import (
    DigestMismatchError,
    RegistryUnavailableError,
    TooLargeError,
    UnauthorizedError,
)
from pullwarden.runtime import (
    AuthConfig,
    BuiltImage,
    LocalImageService,
    RegistryClient,
    build_image,
    oci,
    random_layer,
)

RETRIES = 3
ALICE = AuthConfig("alice", "alice-secret-pw")
USERS = {"alice": "alice-secret-pw"}


@pytest.fixture
def layout(tmp_path: Path) -> tuple[Path, BuiltImage]:
    directory = tmp_path / "layout"
    layers = [random_layer(200_000, seed=1), random_layer(1000, seed=2)]
    return directory, build_image(directory, "v1", layers, gzip_level=1)


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def client(sleeps: list[float]) -> Iterator[RegistryClient]:
    with RegistryClient(retries=RETRIES, sleep=sleeps.append) as c:
        yield c


@pytest.fixture
def registry(layout: tuple[Path, BuiltImage]) -> Iterator[DevRegistry]:
    directory, _ = layout
    with DevRegistry() as reg:
        reg.add_image("ns/app", "v1", directory, "v1")
        yield reg


def pull(client: RegistryClient, tmp_path: Path, ref: str, auth: AuthConfig | None = None) -> str:
    with LocalImageService(tmp_path / "store", client=client) as store:
        return store.pull_image(ref, auth)


def held(client: RegistryClient, tmp_path: Path) -> int:
    with LocalImageService(tmp_path / "store", client=client) as store:
        return len(store.list_images())


def test_a_few_5xx_answers_are_retried(
    registry: DevRegistry,
    layout: tuple[Path, BuiltImage],
    client: RegistryClient,
    tmp_path: Path,
    sleeps: list[float],
) -> None:
    registry.faults.fail_5xx = RETRIES - 1
    assert pull(client, tmp_path, f"{registry.host}/ns/app:v1") == layout[1].config_digest
    assert registry.count(status=503) == RETRIES - 1
    assert registry.faults.fail_5xx == 0
    assert len(sleeps) == RETRIES - 1


def test_persistent_5xx_gives_registry_unavailable(
    registry: DevRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    registry.faults.fail_5xx = 10
    with pytest.raises(RegistryUnavailableError, match="503"):
        pull(client, tmp_path, f"{registry.host}/ns/app:v1")
    assert registry.count(status=503) == RETRIES + 1
    assert registry.faults.fail_5xx == 10 - (RETRIES + 1)
    assert held(client, tmp_path) == 0


def test_unavailable_registry_and_recovery(
    registry: DevRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    registry.faults.available = False
    with pytest.raises(RegistryUnavailableError):
        pull(client, tmp_path, f"{registry.host}/ns/app:v1")
    assert registry.count() == registry.count(status=503) == RETRIES + 1
    registry.faults.available = True
    pull(client, tmp_path, f"{registry.host}/ns/app:v1")
    assert held(client, tmp_path) == 1


def test_dropped_connection_is_retried_and_the_blob_comes_out_right(
    registry: DevRegistry, layout: tuple[Path, BuiltImage], client: RegistryClient, tmp_path: Path
) -> None:
    image = layout[1]
    registry.faults.drop_connection = 1
    assert pull(client, tmp_path, f"{registry.host}/ns/app:v1") == image.config_digest
    blob_gets = [r for r in registry.requests if r.method == "GET" and "/blobs/" in r.path]
    assert len(blob_gets) == 1 + len(image.layer_digests) + 1  # one blob was fetched twice
    sizes = {image.config_digest: image.config_size}
    sizes.update(zip(image.layer_digests, image.layer_sizes, strict=True))
    cut = [r for r in blob_gets if r.bytes_sent < sizes[r.path.rsplit("/", 1)[1]]]
    assert len(cut) == 1 and cut[0].bytes_sent == sizes[cut[0].path.rsplit("/", 1)[1]] // 2
    with LocalImageService(tmp_path / "store", client=client) as store:
        status = store.image_status(f"{registry.host}/ns/app:v1")
        assert status is not None and status.size == image.total_size


def test_connections_that_keep_dropping_give_registry_unavailable(
    registry: DevRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    registry.faults.drop_connection = 100
    with pytest.raises(RegistryUnavailableError):
        pull(client, tmp_path, f"{registry.host}/ns/app:v1")
    assert held(client, tmp_path) == 0


def test_wrong_digest_is_detected_and_nothing_is_kept(
    registry: DevRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    registry.faults.wrong_digest = True
    with pytest.raises(DigestMismatchError):
        pull(client, tmp_path, f"{registry.host}/ns/app:v1")
    assert held(client, tmp_path) == 0
    registry.faults = Faults()  # replacing the knobs wholesale works too
    pull(client, tmp_path, f"{registry.host}/ns/app:v1")
    assert held(client, tmp_path) == 1


def test_oversized_manifest_is_refused(
    registry: DevRegistry, client: RegistryClient, tmp_path: Path
) -> None:
    registry.faults.oversized_manifest = True
    with pytest.raises(TooLargeError):
        pull(client, tmp_path, f"{registry.host}/ns/app:v1")
    head = httpx.head(f"{registry.url}/v2/ns/app/manifests/v1", headers={"Accept": oci.ACCEPT})
    assert int(head.headers["Content-Length"]) > oci.MAX_MANIFEST_BYTES
    assert registry.blob_bytes_served() == 0


def test_latency_is_added_to_every_request(layout: tuple[Path, BuiltImage]) -> None:
    directory, _ = layout
    waits: list[float] = []
    with DevRegistry(faults=Faults(latency=0.25), sleep=waits.append) as reg:
        reg.add_image("ns/app", "v1", directory, "v1")
        httpx.get(f"{reg.url}/v2/")
        httpx.head(f"{reg.url}/v2/ns/app/manifests/v1", headers={"Accept": oci.ACCEPT})
        assert waits == [0.25, 0.25]
        reg.faults.latency = 0
        httpx.get(f"{reg.url}/v2/")
        assert waits == [0.25, 0.25]


@pytest.mark.parametrize("mode", ["basic", "token"])
def test_redirected_blobs_never_carry_credentials(
    mode: str, layout: tuple[Path, BuiltImage], client: RegistryClient, tmp_path: Path
) -> None:
    directory, image = layout
    with DevRegistry() as mirror, DevRegistry(users=USERS, auth=mode) as origin:  # type: ignore[arg-type]
        origin.add_image("private/app", "v1", directory, "v1")
        mirror.add_image("private/app", "v1", directory, "v1")
        origin.faults.redirect_blobs_to = mirror.url
        assert pull(client, tmp_path, f"{origin.host}/private/app:v1", ALICE) == image.config_digest
    assert origin.count("GET", "/blobs/", status=307) == 1 + len(image.layer_digests)
    assert origin.blob_bytes_served() == 0
    assert mirror.blob_bytes_served() == image.config_size + sum(image.layer_sizes)
    assert mirror.requests and all(r.auth_scheme == "" and r.user is None for r in mirror.requests)


def test_a_redirect_target_that_asks_for_credentials_gets_none(
    layout: tuple[Path, BuiltImage], client: RegistryClient, tmp_path: Path
) -> None:
    directory, _ = layout
    with (
        DevRegistry(users=USERS, auth="basic") as other,
        DevRegistry(users=USERS, auth="basic") as origin,
    ):
        origin.add_image("private/app", "v1", directory, "v1")
        other.add_image("private/app", "v1", directory, "v1")
        origin.faults.redirect_blobs_to = other.url
        with pytest.raises(UnauthorizedError, match="never sent to another host"):
            pull(client, tmp_path, f"{origin.host}/private/app:v1", ALICE)
    assert other.requests and all(r.auth_scheme == "" for r in other.requests)


def test_counted_faults_are_consumed_exactly_once_across_threads() -> None:
    faults = Faults(fail_5xx=500, drop_connection=500)
    taken: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = [faults.take_5xx() for _ in range(100)] + [faults.take_drop() for _ in range(100)]
        with lock:
            taken.extend(mine)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(taken) == 1000
    assert faults.fail_5xx == 0 and faults.drop_connection == 0
