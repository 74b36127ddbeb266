"""The embedded image store (pullwarden.runtime._store) against an in-memory stub registry."""

from __future__ import annotations

import hashlib
import json
import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from pullwarden.errors import (
    DeniedError,
    ImageStoreError,
    InvalidReferenceError,
    NotFoundError,
    RegistryUnavailableError,
    UnauthorizedError,
)
from pullwarden.runtime import (
    INDEX_VERSION,
    AuthConfig,
    FsUsage,
    Image,
    ImageService,
    LocalImageService,
    PullProgress,
)
from pullwarden.testing import FakeClock
from tests.runtime.stub_registry import AMD64, ARM64, StubImage, StubRegistry, random_layer

REG = "127.0.0.1:5000"
HELLO = f"{REG}/ns/hello"
ALICE = AuthConfig("alice", "alice-pw")
BOB = AuthConfig("bob", "bob-pw")


def layers(seed: int, count: int = 2, size: int = 3000) -> list[bytes]:
    rng = random.Random(seed)
    return [random_layer(rng, size) for _ in range(count)]


@pytest.fixture
def stub() -> StubRegistry:
    return StubRegistry(passwords={"alice": "alice-pw", "bob": "bob-pw"})


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path / "store"


@pytest.fixture
def store(root: Path, stub: StubRegistry, clock: FakeClock) -> Iterator[LocalImageService]:
    service = LocalImageService(root, client=stub, clock=clock)
    yield service
    service.close()


@pytest.fixture
def hello(stub: StubRegistry) -> StubImage:
    return stub.add_image(f"{HELLO}:v1", layers(1))


def blob_file(root: Path, digest: str) -> Path:
    return root / "blobs" / "sha256" / digest.removeprefix("sha256:")


def blob_digests(root: Path) -> set[str]:
    return {"sha256:" + p.name for p in (root / "blobs" / "sha256").iterdir()}


def image_digests(image: StubImage) -> set[str]:
    return {image.manifest_digest, image.config.digest, *(d.digest for d in image.layers)}


def tmp_entries(root: Path) -> list[str]:
    return sorted(os.listdir(root / "tmp"))


# --- pulling and identity ----------------------------------------------------------------------


def test_pull_registers_image_as_containerd_reports_it(
    store: LocalImageService, stub: StubRegistry, hello: StubImage, root: Path
) -> None:
    image_id = store.pull_image(f"{HELLO}:v1")

    assert image_id == hello.id
    assert store.image_status(f"{HELLO}:v1") == Image(
        id=hello.id,
        repo_tags=(f"{HELLO}:v1",),
        repo_digests=(f"{HELLO}@{hello.manifest_digest}",),
        size=hello.size,
    )
    assert store.list_images() == [store.image_status(hello.id)]
    for digest in image_digests(hello):
        assert hashlib.sha256(blob_file(root, digest).read_bytes()).hexdigest() == digest[7:]
    assert blob_file(root, hello.manifest_digest).read_bytes() == hello.manifest
    assert (stub.heads, stub.gets, stub.blob_requests) == (0, 1, 3)
    assert tmp_entries(root) == []


def test_holds_images_reads_the_index_without_creating_the_store(
    root: Path, stub: StubRegistry, hello: StubImage, clock: FakeClock
) -> None:
    assert not LocalImageService.holds_images(root) and not root.exists()
    with LocalImageService(root, client=stub, clock=clock) as service:
        assert not LocalImageService.holds_images(root)  # opened, nothing committed yet
        service.pull_image(f"{HELLO}:v1")
        assert LocalImageService.holds_images(root)
        service.remove_image(hello.id)
        assert not LocalImageService.holds_images(root)  # the index stays, empty
    for damaged in (b"{not json", b'{"version": 9, "refs": {}, "targets": {}}'):
        (root / "index.json").write_bytes(damaged)
        assert LocalImageService.holds_images(root)  # doubt counts as holding some
    (root / "index.json").unlink()
    (root / "index.json").mkdir()
    assert LocalImageService.holds_images(root)


def test_store_satisfies_the_image_service_protocol(store: LocalImageService) -> None:
    service: ImageService = store
    assert service.list_images() == []


def test_image_status_by_every_kind_of_name(
    store: LocalImageService, stub: StubRegistry, hello: StubImage
) -> None:
    store.pull_image(f"{HELLO}:v1")
    for name in (
        f"{HELLO}:v1",
        f"{HELLO}@{hello.manifest_digest}",
        hello.id,
        hello.id.removeprefix("sha256:"),
    ):
        status = store.image_status(name)
        assert status is not None and status.id == hello.id, name
    for absent in (
        f"{HELLO}:v2",
        f"{HELLO}",  # means :latest
        f"{REG}/ns/other:v1",
        f"{HELLO}@sha256:{'0' * 64}",
        f"sha256:{'0' * 64}",
        "0" * 64,
    ):
        assert store.image_status(absent) is None, absent
    with pytest.raises(InvalidReferenceError):
        store.image_status("Not A Reference")


def test_familiar_names_are_normalised(store: LocalImageService, stub: StubRegistry) -> None:
    nginx = stub.add_image("docker.io/library/nginx:latest", layers(2))
    assert store.pull_image("nginx") == nginx.id

    status = store.image_status("nginx")
    assert status is not None
    assert status.repo_tags == ("docker.io/library/nginx:latest",)
    assert status.repo_digests == (f"docker.io/library/nginx@{nginx.manifest_digest}",)
    for name in (
        "nginx:latest",
        "library/nginx",
        "docker.io/library/nginx:latest",
        "index.docker.io/library/nginx",
        f"nginx@{nginx.manifest_digest}",
    ):
        assert store.image_status(name) == status, name


def test_invalid_reference_is_refused_before_any_request(
    store: LocalImageService, stub: StubRegistry
) -> None:
    with pytest.raises(InvalidReferenceError):
        store.pull_image("UPPER/Case:v1")
    with pytest.raises(InvalidReferenceError):
        store.pull_image("a" * 64)
    assert stub.heads == stub.gets == 0


def test_registry_errors_propagate_and_register_nothing(
    store: LocalImageService, stub: StubRegistry
) -> None:
    with pytest.raises(NotFoundError):
        store.pull_image(f"{HELLO}:missing")
    stub.unavailable = True
    with pytest.raises(RegistryUnavailableError):
        store.pull_image(f"{HELLO}:v1")
    assert store.list_images() == []


def test_pull_by_digest_records_only_the_digest_name(
    store: LocalImageService, stub: StubRegistry, hello: StubImage
) -> None:
    ref = f"{HELLO}@{hello.manifest_digest}"
    assert store.pull_image(ref) == hello.id
    status = store.image_status(ref)
    assert status is not None
    assert status.repo_tags == () and status.repo_digests == (ref,)

    stub.reset_counters()
    assert store.pull_image(ref) == hello.id
    assert (stub.heads, stub.gets, stub.blob_bytes) == (1, 0, 0)


# --- re-verification ---------------------------------------------------------------------------


def test_second_pull_costs_one_head_and_no_blob_bytes(
    store: LocalImageService, stub: StubRegistry, hello: StubImage
) -> None:
    store.pull_image(f"{HELLO}:v1")
    stub.reset_counters()
    events: list[PullProgress] = []

    assert store.pull_image(f"{HELLO}:v1", on_progress=events.append) == hello.id

    assert (stub.heads, stub.gets, stub.blob_requests, stub.blob_bytes) == (1, 0, 0, 0)
    assert events and all(e.cached and e.done == e.total for e in events)
    assert {e.digest for e in events} == {hello.config.digest, *(d.digest for d in hello.layers)}


def test_head_without_digest_falls_back_to_get_without_blob_bytes(
    store: LocalImageService, stub: StubRegistry, hello: StubImage
) -> None:
    store.pull_image(f"{HELLO}:v1")
    stub.reset_counters()
    stub.head_without_digest = True

    assert store.pull_image(f"{HELLO}:v1") == hello.id
    assert (stub.heads, stub.gets, stub.blob_requests, stub.blob_bytes) == (1, 1, 0, 0)


def test_missing_blob_skips_head_and_downloads_only_it(
    store: LocalImageService, stub: StubRegistry, hello: StubImage, root: Path
) -> None:
    store.pull_image(f"{HELLO}:v1")
    lost = hello.layers[1]
    blob_file(root, lost.digest).unlink()
    stub.reset_counters()

    assert store.pull_image(f"{HELLO}:v1") == hello.id
    assert (stub.heads, stub.gets, stub.blob_requests, stub.blob_bytes) == (0, 1, 1, lost.size)
    assert blob_file(root, lost.digest).stat().st_size == lost.size


def test_reverification_with_refused_credentials_fails_but_keeps_the_image(
    store: LocalImageService, stub: StubRegistry, root: Path
) -> None:
    stub.acl[f"{REG}/private/alice"] = {"alice"}
    secret = stub.add_image(f"{REG}/private/alice:v1", layers(3))
    ref = f"{REG}/private/alice:v1"
    assert store.pull_image(ref, ALICE) == secret.id
    stub.reset_counters()

    with pytest.raises(DeniedError) as denied:
        store.pull_image(ref, BOB)
    assert "private/alice" in str(denied.value) and "bob-pw" not in str(denied.value)
    with pytest.raises(UnauthorizedError):
        store.pull_image(ref)
    with pytest.raises(UnauthorizedError):
        store.pull_image(ref, AuthConfig("alice", "wrong"))
    with pytest.raises(DeniedError):
        store.pull_image(f"{REG}/private/alice@{secret.manifest_digest}", BOB)

    assert stub.heads == 4 and stub.gets == 0 and stub.blob_bytes == 0
    assert store.image_status(ref) is not None
    assert image_digests(secret) <= blob_digests(root)
    assert store.pull_image(ref, ALICE) == secret.id


# --- sharing, tags, removal --------------------------------------------------------------------


def test_second_image_downloads_only_layers_it_does_not_share(
    store: LocalImageService, stub: StubRegistry, hello: StubImage
) -> None:
    store.pull_image(f"{HELLO}:v1")
    extra = layers(9, count=1)
    second = stub.add_image(
        f"{REG}/ns/second:v1", [*[stub.blob(d.digest) for d in hello.layers], *extra]
    )
    stub.reset_counters()
    events: list[PullProgress] = []

    assert store.pull_image(f"{REG}/ns/second:v1", on_progress=events.append) == second.id

    new_layer = second.layers[-1]
    assert stub.blob_requests == 2
    assert stub.blob_bytes == second.config.size + new_layer.size
    cached = {e.digest for e in events if e.cached}
    assert cached == {d.digest for d in hello.layers}
    finished = {e.digest for e in events if not e.cached and e.done == e.total}
    assert {second.config.digest, new_layer.digest, second.manifest_digest} <= finished


def test_one_config_under_several_names_is_one_image(
    store: LocalImageService, stub: StubRegistry, hello: StubImage
) -> None:
    copy = stub.add_image(f"{REG}/other/copy:v9", [stub.blob(d.digest) for d in hello.layers])
    assert copy.id == hello.id and copy.manifest_digest == hello.manifest_digest

    store.pull_image(f"{HELLO}:v1")
    store.pull_image(f"{REG}/other/copy:v9")

    (image,) = store.list_images()
    assert image.repo_tags == (f"{REG}/ns/hello:v1", f"{REG}/other/copy:v9")
    assert image.repo_digests == (
        f"{HELLO}@{hello.manifest_digest}",
        f"{REG}/other/copy@{hello.manifest_digest}",
    )


def test_moved_tag_leaves_old_image_with_its_digest_name(
    store: LocalImageService, stub: StubRegistry, hello: StubImage
) -> None:
    store.pull_image(f"{HELLO}:v1")
    newer = stub.add_image(f"{HELLO}:v1", layers(4), label="newer")
    stub.reset_counters()

    assert store.pull_image(f"{HELLO}:v1") == newer.id
    assert (stub.heads, stub.gets) == (1, 1)

    old = store.image_status(hello.id)
    assert old is not None
    assert old.repo_tags == () and old.repo_digests == (f"{HELLO}@{hello.manifest_digest}",)
    current = store.image_status(f"{HELLO}:v1")
    assert current is not None and current.id == newer.id
    assert current.repo_tags == (f"{HELLO}:v1",)
    assert [i.id for i in store.list_images()] == sorted([hello.id, newer.id])


def test_remove_image_drops_every_name_and_frees_only_unshared_blobs(
    store: LocalImageService, stub: StubRegistry, hello: StubImage, root: Path
) -> None:
    other = stub.add_image(
        f"{REG}/ns/other:v1", [stub.blob(hello.layers[0].digest), *layers(5, count=1)]
    )
    stub.add_image(f"{REG}/ns/alias:v1", [stub.blob(d.digest) for d in hello.layers])
    store.pull_image(f"{HELLO}:v1")
    store.pull_image(f"{REG}/ns/alias:v1")
    store.pull_image(f"{REG}/ns/other:v1")
    before = blob_digests(root)

    store.remove_image(f"{REG}/ns/alias:v1")  # one of hello's two tags

    assert store.image_status(f"{HELLO}:v1") is None
    assert store.image_status(f"{HELLO}@{hello.manifest_digest}") is None
    assert store.image_status(hello.id) is None
    assert [i.id for i in store.list_images()] == [other.id]
    gone = before - blob_digests(root)
    assert gone == {hello.manifest_digest, hello.config.digest, hello.layers[1].digest}
    assert image_digests(other) <= blob_digests(root)

    store.remove_image(f"{HELLO}:v1")  # absent: no error
    store.remove_image(f"sha256:{'0' * 64}")
    store.remove_image(other.id.removeprefix("sha256:"))
    assert store.list_images() == []
    assert blob_digests(root) == set()


def test_gc_returns_bytes_freed_and_keeps_referenced_blobs(
    store: LocalImageService, stub: StubRegistry, hello: StubImage, root: Path
) -> None:
    store.pull_image(f"{HELLO}:v1")
    stray = b"nobody references me"
    stray_digest = "sha256:" + hashlib.sha256(stray).hexdigest()
    blob_file(root, stray_digest).write_bytes(stray)

    assert store.gc() == len(stray)
    assert blob_digests(root) == image_digests(hello)
    assert store.gc() == 0


def test_fs_usage_counts_blobs_and_index(
    store: LocalImageService, stub: StubRegistry, hello: StubImage, root: Path
) -> None:
    empty = store.fs_usage()
    store.pull_image(f"{HELLO}:v1")
    usage = store.fs_usage()

    assert isinstance(usage, FsUsage)
    index_size = (root / "index.json").stat().st_size
    assert usage.used_bytes - empty.used_bytes == hello.size + index_size
    # 3 layer/config blobs + manifest + index.json
    assert usage.inodes_used - empty.inodes_used == 5


# --- multi-platform ----------------------------------------------------------------------------


@pytest.fixture
def multi(stub: StubRegistry) -> tuple[str, StubImage, StubImage]:
    repo = f"{REG}/ns/multi"
    amd = stub.add_image(None, layers(6), platform=AMD64, repository=repo)
    arm = stub.add_image(None, layers(7), platform=ARM64, repository=repo)
    return stub.add_index(f"{repo}:v1", [amd, arm]), amd, arm


def test_index_pull_picks_the_configured_platform(
    root: Path, stub: StubRegistry, multi: tuple[str, StubImage, StubImage]
) -> None:
    index_digest, amd, arm = multi
    with LocalImageService(root, client=stub, platform=ARM64) as store:
        assert store.pull_image(f"{REG}/ns/multi:v1") == arm.id
        status = store.image_status(f"{REG}/ns/multi:v1")
        assert status is not None
        assert status.repo_digests == (f"{REG}/ns/multi@{index_digest}",)
        index_size = len(stub._manifests[f"{REG}/ns/multi"][index_digest][0])
        assert status.size == arm.size + index_size
        assert image_digests(arm) | {index_digest} == blob_digests(root)
        assert not image_digests(amd) & blob_digests(root)

        stub.reset_counters()
        assert store.pull_image(f"{REG}/ns/multi:v1") == arm.id
        assert (stub.heads, stub.gets, stub.blob_bytes) == (1, 0, 0)
        assert store.pull_image(f"{REG}/ns/multi@{index_digest}") == arm.id


def test_index_held_for_another_platform_is_not_reverified(
    root: Path, stub: StubRegistry, multi: tuple[str, StubImage, StubImage]
) -> None:
    _, amd, arm = multi
    with LocalImageService(root, client=stub, platform=AMD64) as store:
        assert store.pull_image(f"{REG}/ns/multi:v1") == amd.id
    stub.reset_counters()
    with LocalImageService(root, client=stub, platform=ARM64) as store:
        assert store.pull_image(f"{REG}/ns/multi:v1") == arm.id
        assert (stub.heads, stub.gets) == (0, 1)


# --- failure, restart, corruption ----------------------------------------------------------------


def test_failed_blob_registers_nothing_and_leaves_no_temp_files(
    root: Path, stub: StubRegistry, hello: StubImage, clock: FakeClock
) -> None:
    stub.fail_blobs.add(hello.layers[1].digest)
    stub.keep_partial = True  # even a client that leaves its half-written file behind
    with LocalImageService(root, client=stub, clock=clock) as store:
        with pytest.raises(RegistryUnavailableError):
            store.pull_image(f"{HELLO}:v1")
        assert store.list_images() == []
        assert store.image_status(f"{HELLO}:v1") is None
        assert tmp_entries(root) == []
        assert hello.layers[1].digest not in blob_digests(root)

    with LocalImageService(root, client=stub, clock=clock) as store:
        assert store.list_images() == []
        assert tmp_entries(root) == []
        store.gc()
        assert blob_digests(root) == set()
        stub.fail_blobs.clear()
        assert store.pull_image(f"{HELLO}:v1") == hello.id


def test_start_up_sweeps_what_dead_pulls_left(root: Path, stub: StubRegistry) -> None:
    LocalImageService(root, client=stub).close()
    tmp = root / "tmp"
    (tmp / "deadbeef.lease").write_text('["sha256:' + "1" * 64 + '"]')
    (tmp / "deadbeef").mkdir()
    (tmp / "deadbeef" / "partial").write_bytes(b"x" * 100)
    (tmp / "index.json.123.part").write_bytes(b"{")

    with LocalImageService(root, client=stub) as store:
        assert tmp_entries(root) == []
        assert store.list_images() == []


def test_gc_spares_blobs_a_running_pull_holds(
    store: LocalImageService, stub: StubRegistry, hello: StubImage, root: Path
) -> None:
    store.pull_image(f"{HELLO}:v1")
    second = stub.add_image(
        f"{REG}/ns/second:v1", [stub.blob(hello.layers[0].digest), *layers(8, count=1)]
    )
    paused, resume = threading.Event(), threading.Event()

    def hold(_: object) -> None:
        paused.set()
        assert resume.wait(10)

    stub.before_blob = hold
    result: list[str] = []
    puller = threading.Thread(target=lambda: result.append(store.pull_image(f"{REG}/ns/second:v1")))
    puller.start()
    assert paused.wait(10)
    # The shared layer is present, so the pull will not fetch it; removing hello must not
    # collect it while the pull runs.
    store.remove_image(hello.id)
    assert hello.layers[0].digest in blob_digests(root)
    stub.before_blob = None
    resume.set()
    puller.join(10)

    assert result == [second.id]
    assert image_digests(second) <= blob_digests(root)
    store.gc()
    assert blob_digests(root) == image_digests(second)


def test_corrupt_index_is_a_clear_store_error(root: Path, stub: StubRegistry) -> None:
    LocalImageService(root, client=stub).close()
    index = root / "index.json"
    cases = {
        b"{not json": "not valid JSON",
        b"[]": "not a JSON object",
        b'{"version": 7, "refs": {}, "targets": {}}': "newer pullwarden",
        b'{"version": 1, "refs": {"a:b": "sha256:' + b"1" * 64 + b'"}, "targets": {}}': (
            "unknown target"
        ),
        b'{"version": 1, "refs": {}, "targets": {"sha256:' + b"1" * 64 + b'": {}}}': "missing",
        b'{"version": 1, "refs": {}}': "'targets'",
    }
    for data, fragment in cases.items():
        index.write_bytes(data)
        with pytest.raises(ImageStoreError) as err:
            LocalImageService(root, client=stub)
        message = str(err.value)
        assert "corrupt" in message and str(index) in message and fragment in message, message


def test_index_damaged_while_open_is_reported_on_next_read(
    store: LocalImageService, stub: StubRegistry, hello: StubImage, root: Path
) -> None:
    store.pull_image(f"{HELLO}:v1")
    draft = root / "draft"
    draft.write_bytes(b'{"version": 1}')
    os.replace(draft, root / "index.json")
    with pytest.raises(ImageStoreError, match="corrupt"):
        store.list_images()


def test_index_file_is_the_documented_format(
    store: LocalImageService, stub: StubRegistry, hello: StubImage, root: Path, clock: FakeClock
) -> None:
    store.pull_image(f"{HELLO}:v1")
    doc = json.loads((root / "index.json").read_text())
    assert doc["version"] == INDEX_VERSION
    assert doc["refs"] == {
        f"{HELLO}:v1": hello.manifest_digest,
        f"{HELLO}@{hello.manifest_digest}": hello.manifest_digest,
    }
    target = doc["targets"][hello.manifest_digest]
    assert target["config"]["digest"] == hello.id
    assert [x["digest"] for x in target["layers"]] == [d.digest for d in hello.layers]
    assert target["manifest"]["digest"] == hello.manifest_digest
    assert target["pulledAt"] == clock.now().isoformat()


def test_closed_store_refuses_writes(root: Path, stub: StubRegistry, hello: StubImage) -> None:
    store = LocalImageService(root, client=stub)
    store.close()
    store.close()
    with pytest.raises(ImageStoreError, match="closed"):
        store.pull_image(f"{HELLO}:v1")


def test_default_client_is_the_registry_client(root: Path) -> None:
    from pullwarden.runtime import RegistryClient

    with LocalImageService(root) as store:
        assert isinstance(store._client, RegistryClient)
    assert (root.stat().st_mode & 0o777) == 0o700


# --- concurrency -------------------------------------------------------------------------------


def run_threads(count: int, work: object) -> list[object]:
    results: list[object] = [None] * count
    errors: list[BaseException] = []
    barrier = threading.Barrier(count)

    def body(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)  # type: ignore[operator]
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    return results


def test_concurrent_pulls_of_one_image_leave_one_consistent_image(
    store: LocalImageService, stub: StubRegistry, root: Path
) -> None:
    stub.chunk_size, stub.chunk_delay = 1024, 0.0005
    image = stub.add_image(f"{HELLO}:v1", layers(10, count=3, size=20000))

    results = run_threads(6, lambda _: store.pull_image(f"{HELLO}:v1"))

    assert results == [image.id] * 6
    (listed,) = store.list_images()
    assert listed.repo_tags == (f"{HELLO}:v1",)
    assert blob_digests(root) == image_digests(image)
    assert tmp_entries(root) == []


def test_concurrent_pulls_from_two_store_objects_on_one_root_lose_nothing(
    root: Path, stub: StubRegistry
) -> None:
    stub.chunk_size, stub.chunk_delay = 2048, 0.0002
    images = [stub.add_image(f"{REG}/ns/img{i}:v1", layers(20 + i)) for i in range(8)]
    first = LocalImageService(root, client=stub)
    second = LocalImageService(root, client=stub)
    try:

        def work(i: int) -> str:
            service = first if i % 2 else second
            if i % 3 == 0:
                service.gc()
            return service.pull_image(f"{REG}/ns/img{i}:v1")

        assert run_threads(8, work) == [image.id for image in images]
        for service in (first, second):
            assert [i.id for i in service.list_images()] == sorted(im.id for im in images)
        assert blob_digests(root) == set().union(*(image_digests(im) for im in images))
        assert first.gc() == 0
    finally:
        first.close()
        second.close()
