"""Image GC on the kubelet's thresholds, then record pruning (the node's ``collect_garbage``)."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from pullwarden.cli import main
from pullwarden.config import KubeletConfig
from pullwarden.devregistry import DevRegistry
from pullwarden.events import ListRecorder
from pullwarden.node import LOST_SERVICES, DiskStats, GCPlan, Node, prune_withheld_message
from pullwarden.objects import Container, Objects, Pod
from pullwarden.records import FileRecordStore
from pullwarden.runtime import LocalImageService, build_image
from pullwarden.testing import FakeClock
from tests.runtime.cri_fake import ID, NAME, fake_cri, image
from tests.support import T0

MB = 1_000_000


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DevRegistry]:
    layout = tmp_path / "layout"
    with DevRegistry() as reg:
        for i in range(4):
            build_image(layout, f"img{i}", files={f"f{i}.txt": f"image {i}\n".encode() * (i + 1)})
            reg.add_image(f"ns/img{i}", "v1", layout, f"img{i}")
        yield reg


def pods(registry: DevRegistry, *indexes: int) -> Objects:
    return Objects(
        pods=[
            Pod(
                uid=f"uid-{i}",
                namespace="default",
                name=f"p{i}",
                containers=(Container("c", f"{registry.host}/ns/img{i}:v1", "IfNotPresent"),),
            )
            for i in indexes
        ]
    )


class Disk:
    """The image filesystem's fill level, set by the test."""

    def __init__(self, stats: DiskStats) -> None:
        self.stats = stats

    def __call__(self) -> DiskStats:
        return self.stats


def make_node(root: Path, clock: FakeClock, disk: Disk | DiskStats, **config: object) -> Node:
    cfg = KubeletConfig(**config)  # type: ignore[arg-type]
    stats = disk if isinstance(disk, Disk) else Disk(disk)
    return Node(root, cfg, clock=clock, node_credentials=False, disk_stats=stats)


QUIET_DISK = DiskStats(capacity=100 * MB, available=90 * MB)  # 10 % used
FULL_DISK = DiskStats(capacity=100 * MB, available=10 * MB)  # 90 % used


def image_ids(node: Node) -> set[str]:
    return {i.id for i in node.images.list_images()}


def test_below_threshold_nothing_is_removed(registry: DevRegistry, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with make_node(tmp_path / "n", clock, QUIET_DISK) as node:
        node.run(pods(registry, 0, 1))
        clock.advance(3600)
        report = node.collect_garbage()
        assert report.removed == [] and len(image_ids(node)) == 2


def test_above_threshold_oldest_unused_first_then_records_pruned(
    registry: DevRegistry, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    root = tmp_path / "n"
    # high 85 %, low 80 %: at 90 % used, 10 MB must be freed; each test image is tiny, so every
    # eligible unused image goes, oldest use first, and the in-use one stays.
    disk = Disk(QUIET_DISK)
    with make_node(root, clock, disk) as node:
        node.run(pods(registry, 0))
        clock.advance(600)
        node.run(pods(registry, 1))
        clock.advance(600)
        node.run(pods(registry, 2))
        by_name = {i.repo_tags[0].rsplit("/", 1)[1]: i.id for i in node.images.list_images()}
        clock.advance(60)  # img2 was used 60 s ago: younger than imageMinimumGCAge (2 min)
        disk.stats = FULL_DISK
        report = node.collect_garbage(in_use=[by_name["img1:v1"]])
        removed = [i.repo_tags[0].rsplit("/", 1)[1] for i in report.removed]
        assert removed == ["img0:v1"]
        assert image_ids(node) == {by_name["img1:v1"], by_name["img2:v1"]}
        assert report.pruned_records == [by_name["img0:v1"]]
        store = FileRecordStore(root, migrate=False)
        assert store.get_pulled_record(by_name["img0:v1"]) is None
        assert store.get_pulled_record(by_name["img1:v1"]) is not None


def test_maximum_age(registry: DevRegistry, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    with make_node(
        tmp_path / "n", clock, QUIET_DISK, image_maximum_gc_age=timedelta(hours=1)
    ) as node:
        node.run(pods(registry, 0))
        clock.advance(1800)
        node.run(pods(registry, 1))
        clock.advance(1900)  # img0 idle 62 min, img1 idle 32 min
        report = node.collect_garbage()
        assert [i.repo_tags[0].rsplit("/", 1)[1] for i in report.removed] == ["img0:v1"]
        assert "imageMaximumGCAge" in report.reasons[report.removed[0].id]


def test_usage_survives_restart(registry: DevRegistry, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    root = tmp_path / "n"
    with make_node(root, clock, QUIET_DISK) as node:
        node.run(pods(registry, 0))
    clock.advance(600)
    with make_node(root, clock, QUIET_DISK) as node:
        node.run(pods(registry, 1))
    clock.advance(300)
    with make_node(root, clock, FULL_DISK) as node:
        report = node.collect_garbage()
        assert [i.repo_tags[0].rsplit("/", 1)[1] for i in report.removed] == ["img0:v1", "img1:v1"]


def test_record_written_during_gc_survives_prune(registry: DevRegistry, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    root = tmp_path / "n"
    with make_node(root, clock, QUIET_DISK) as node:
        node.run(pods(registry, 0))
        assert node.pull_manager is not None
        # a record for an image the store does not hold, written "after" the GC started
        node.pull_manager.record_pull_intent("elsewhere/x:v1")
        clock.advance(10)
        node.pull_manager.record_image_pulled("elsewhere/x:v1", "sha256:" + "9" * 64, None)
        clock.advance(-20)
        report = node.collect_garbage()
        assert report.pruned_records == []
        clock.advance(30)
        report = node.collect_garbage()
        assert report.pruned_records == ["sha256:" + "9" * 64]


def test_gc_command_all(registry: DevRegistry, tmp_path: Path) -> None:
    root = tmp_path / "n"
    clock = FakeClock(T0)
    with make_node(root, clock, QUIET_DISK) as node:
        node.run(pods(registry, 0, 1))
    cfg = tmp_path / "kubelet.yaml"
    cfg.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "imageMinimumGCAge: 1ns\n"
    )
    result = CliRunner().invoke(main, ["gc", "--root", str(root), "--config", str(cfg), "--all"])
    assert result.exit_code == 0, result.output
    assert "2 image(s) removed" in result.output
    assert "pruned the pull record" in result.output


def test_plan_changes_nothing_and_apply_carries_it_out(
    registry: DevRegistry, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    root = tmp_path / "n"
    disk = Disk(QUIET_DISK)
    with make_node(root, clock, disk) as node:
        node.run(pods(registry, 0))
        clock.advance(600)
        node.run(pods(registry, 1))
        by_name = {i.repo_tags[0].rsplit("/", 1)[1]: i.id for i in node.images.list_images()}
        clock.advance(600)
        disk.stats = FULL_DISK
        state = (root / "image_gc_state.json").read_bytes()

        plan = node.gc.plan(in_use=[by_name["img1:v1"]])
        assert isinstance(plan, GCPlan)
        assert plan.started == T0 + timedelta(seconds=1200)
        assert plan.usage_percent == FULL_DISK.usage_percent
        assert plan.first_seen == ()  # both images were used through the node
        assert [(r.image.id, r.reason) for r in plan.removals] == [
            (by_name["img0:v1"], "disk 90% ≥ imageGCHighThresholdPercent 85%")
        ]
        assert node.gc.plan(in_use=[by_name["img1:v1"]]) == plan  # nothing moved
        assert image_ids(node) == set(by_name.values())
        assert (root / "image_gc_state.json").read_bytes() == state

        report = node.gc.apply(plan)
        assert [i.id for i in report.removed] == [by_name["img0:v1"]]
        assert report.reasons == {by_name["img0:v1"]: plan.removals[0].reason}
        assert report.started == plan.started
        assert report.usage_percent_before == plan.usage_percent
        assert report.pruned_records == [by_name["img0:v1"]]
        assert image_ids(node) == {by_name["img1:v1"]}
        assert by_name["img0:v1"] not in (root / "image_gc_state.json").read_text()


def test_plan_counts_a_first_sighting_as_a_use(registry: DevRegistry, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    root = tmp_path / "n"
    with make_node(root, clock, QUIET_DISK) as node:
        node.run(pods(registry, 0))
    (root / "image_gc_state.json").unlink()  # usage history lost: every image is new again
    clock.advance(3600)
    with make_node(root, clock, QUIET_DISK) as node:
        plan = node.gc.plan(force_all_unused=True)
        (image_id,) = image_ids(node)
        assert plan.first_seen == (image_id,)
        assert plan.removals == ()  # just seen: younger than imageMinimumGCAge
        node.gc.apply(plan)
        assert image_id in (root / "image_gc_state.json").read_text()
        clock.advance(121)
        (removal,) = node.gc.plan(force_all_unused=True).removals
        assert (removal.image.id, removal.reason) == (image_id, "unused (gc --all)")


ABSENT_REF = "sha256:" + "9" * 64


def _record_for_an_absent_image(node: Node) -> None:
    assert node.pull_manager is not None
    node.pull_manager.record_pull_intent("elsewhere/x:v1")
    node.pull_manager.record_image_pulled("elsewhere/x:v1", ABSENT_REF, None)


def test_a_pass_that_removes_nothing_prunes_only_when_asked(
    registry: DevRegistry, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    root = tmp_path / "n"
    with make_node(root, clock, QUIET_DISK) as node:
        node.run(pods(registry, 0))
        _record_for_an_absent_image(node)
        clock.advance(60)
        report = node.gc.collect(always_prune=False)  # the node's own pass after its pods
        assert report.removed == [] and report.pruned_records == []
        assert FileRecordStore(root, migrate=False).get_pulled_record(ABSENT_REF) is not None
        report = node.gc.collect()  # an explicit collection (pullwarden gc)
        assert report.pruned_records == [ABSENT_REF]
        assert FileRecordStore(root, migrate=False).get_pulled_record(ABSENT_REF) is None


def test_a_pass_that_removes_an_image_prunes_with_the_until_guard(
    registry: DevRegistry, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    root = tmp_path / "n"
    disk = Disk(QUIET_DISK)
    with make_node(root, clock, disk) as node:
        node.run(pods(registry, 0))
        img0 = next(iter(image_ids(node)))
        clock.advance(600)
        node.run(pods(registry, 1))
        _record_for_an_absent_image(node)
        assert node.pull_manager is not None
        # written "after" the pass below starts: the until guard keeps it
        node.pull_manager.record_pull_intent("elsewhere/y:v1")
        clock.advance(10)
        node.pull_manager.record_image_pulled("elsewhere/y:v1", "sha256:" + "8" * 64, None)
        clock.advance(-5)
        disk.stats = FULL_DISK
        report = node.gc.collect(always_prune=False)
        assert [i.id for i in report.removed] == [img0]
        assert sorted(report.pruned_records) == sorted([img0, ABSENT_REF])


def test_run_without_removals_does_not_prune(registry: DevRegistry, tmp_path: Path) -> None:
    clock = FakeClock(T0)
    root = tmp_path / "n"
    with make_node(root, clock, QUIET_DISK) as node:
        node.run(pods(registry, 0))
        _record_for_an_absent_image(node)
        clock.advance(600)
        node.run(pods(registry, 0))  # its GC pass removes nothing
        assert FileRecordStore(root, migrate=False).get_pulled_record(ABSENT_REF) is not None


def test_gc_without_the_nodes_image_store_keeps_every_record(
    registry: DevRegistry, tmp_path: Path
) -> None:
    """An empty list from a store that is not there (not mounted, or the node runs on another
    runtime) says nothing of what the node holds: pruning by it would make every image still
    there count as preloaded once the store is back.  A dry run first (which opens, so creates,
    an empty store) changes nothing of that."""
    root = tmp_path / "n"
    with make_node(root, FakeClock(T0), QUIET_DISK) as node:
        node.run(pods(registry, 0))
    kept = [r.image_ref for r in FileRecordStore(root).list_pulled_records().items]
    assert kept
    (root / "images").rename(tmp_path / "images.away")
    for args in (["--dry-run"], []):
        result = CliRunner().invoke(main, ["gc", "--root", str(root), *args])
        assert result.exit_code == 0, result.output
        assert "0 record(s)" in result.stdout and "pruned the pull record" not in result.stdout
        assert f"no image store at {root / 'images'}: every pull record is kept" in result.stderr
        assert [r.image_ref for r in FileRecordStore(root).list_pulled_records().items] == kept


def test_records_of_images_in_another_image_service_are_not_pruned_by_this_ones_list(
    registry: DevRegistry, tmp_path: Path
) -> None:
    """A root whose records stand for images of two services (the embedded store, then a
    runtime): the one gc lists cannot tell which records are stale, and a record it pruned
    would make its image count as preloaded for any pod once the node is back on the other."""
    root = tmp_path / "n"
    with make_node(root, FakeClock(T0), QUIET_DISK) as node:
        node.run(pods(registry, 0))  # img0 in the embedded store, with its record
    [embedded_ref] = [r.image_ref for r in FileRecordStore(root).list_pulled_records().items]
    socket_dir = Path(tempfile.mkdtemp(prefix="pwgc.", dir="/tmp"))
    try:
        with fake_cri(socket_dir) as fake:
            fake.script.status[NAME] = fake.script.status[ID] = image()
            fake.script.images = [image()]
            runtime_pod = Pod("uid-r", "default", "r", containers=(Container("c", NAME, "Always"),))
            with Node(
                root,
                KubeletConfig(),
                runtime_endpoint=fake.endpoint,
                node_credentials=False,
                clock=FakeClock(T0),
                disk_stats=Disk(QUIET_DISK),
            ) as node:
                [outcome] = node.run(Objects(pods=[runtime_pod]))
            assert outcome.ready and outcome.containers[0].pulled
            both = sorted([embedded_ref, ID])

            def records() -> list[str]:
                return sorted(
                    r.image_ref for r in FileRecordStore(root).list_pulled_records().items
                )

            assert records() == both
            gc = ["gc", "--root", str(root)]
            on_runtime = [*gc, "--runtime-endpoint", fake.endpoint]
            for argv, other in ((gc, str(fake.socket)), (on_runtime, "the embedded store")):
                for dry in (["--dry-run"], []):
                    result = CliRunner().invoke(main, [*argv, *dry])
                    assert result.exit_code == 0, result.output
                    assert "pruned the pull record" not in result.stdout
                    assert "would prune" not in result.stdout
                    assert f"this root's images are also in {other}" in result.stderr
                    assert records() == both
            # Emptied, the embedded store stands for no image: the runtime's list decides.
            with LocalImageService(root / "images") as store:
                store.remove_image(store.list_images()[0].id)
            result = CliRunner().invoke(main, on_runtime)
            assert result.exit_code == 0, result.output
            assert f"pruned the pull record of {embedded_ref}" in result.stdout
            assert result.stderr == ""
            assert records() == [ID]
            # ... and gc on the embedded store still keeps the runtime's record.
            result = CliRunner().invoke(main, gc)
            assert result.exit_code == 0, result.output
            assert f"this root's images are also in {fake.socket}" in result.stderr
            assert records() == [ID]
    finally:
        shutil.rmtree(socket_dir, ignore_errors=True)


def test_the_nodes_own_pass_keeps_the_records_when_another_service_holds_images(
    registry: DevRegistry, tmp_path: Path
) -> None:
    clock = FakeClock(T0)
    root = tmp_path / "n"
    disk = Disk(QUIET_DISK)
    with make_node(root, clock, disk) as node:
        node.run(pods(registry, 0))
        img0 = next(iter(image_ids(node)))
    state_file = root / "image_gc_state.json"
    state = json.loads(state_file.read_text())
    assert state["imageServices"] == [""]  # the embedded store, seen holding an image
    state["imageServices"] = ["", "/run/elsewhere.sock"]  # as if it had run on a runtime too
    state_file.write_text(json.dumps(state))
    clock.advance(600)
    with make_node(root, clock, disk) as node:
        node.run(pods(registry, 1))
        _record_for_an_absent_image(node)
        disk.stats = FULL_DISK
        node.run(pods(registry, 1))  # its GC pass removes img0, and prunes nothing
        assert img0 not in image_ids(node)
        assert isinstance(node.events, ListRecorder)
        [kept] = [e for e in node.events.events if e.reason == "PullRecordsKept"]
    assert kept.type == "Warning" and "also in /run/elsewhere.sock" in kept.message
    for ref in (img0, ABSENT_REF):
        assert FileRecordStore(root, migrate=False).get_pulled_record(ref) is not None
    assert json.loads(state_file.read_text())["imageServices"] == ["", "/run/elsewhere.sock"]


@pytest.mark.parametrize("damage", ["{not json", '{"imageServices": "/run/x.sock"}', "[]"])
def test_a_damaged_state_file_keeps_every_record_until_it_is_deleted(
    registry: DevRegistry, tmp_path: Path, damage: str
) -> None:
    """The state file is the only memory of which image services held this root's images: once
    it cannot be read, an image's absence from the store at hand proves nothing (it may be in a
    runtime the node ran on), and a record pruned by it would make its image count as preloaded
    there.  Pruning waits until the operator deletes the file; rewriting usage times keeps the
    fact that the history was lost."""
    clock = FakeClock(T0)
    root = tmp_path / "n"
    disk = Disk(QUIET_DISK)
    with make_node(root, clock, disk) as node:
        node.run(pods(registry, 0))
        img0 = next(iter(image_ids(node)))
        _record_for_an_absent_image(node)
    state_file = root / "image_gc_state.json"
    state_file.write_text(damage)
    with make_node(root, clock, disk) as node:
        node.run(pods(registry, 1))  # every image counts as first seen now
        clock.advance(600)
        disk.stats = FULL_DISK
        report = node.gc.collect(always_prune=False)  # the node's own pass
        assert img0 in {i.id for i in report.removed} and report.pruned_records == []
        assert report.prune_withheld == (LOST_SERVICES,)
        assert "image_gc_state.json could not be read" in prune_withheld_message(
            report.prune_withheld
        )
    assert json.loads(state_file.read_text())["imageServicesLost"] is True
    gc = ["gc", "--root", str(root)]
    for dry in (["--dry-run"], []):
        result = CliRunner().invoke(main, [*gc, *dry])
        assert result.exit_code == 0, result.output
        assert "pruned the pull record" not in result.stdout and "would prune" not in result.stdout
        assert "image_gc_state.json could not be read" in result.stderr
    for ref in (img0, ABSENT_REF):
        assert FileRecordStore(root, migrate=False).get_pulled_record(ref) is not None
    state_file.unlink()
    result = CliRunner().invoke(main, gc)
    assert result.exit_code == 0, result.output
    assert result.stderr == ""
    for ref in (img0, ABSENT_REF):
        assert f"pruned the pull record of {ref}" in result.stdout
