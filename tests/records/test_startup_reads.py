"""A node's start-up reads every record file once, and an authoritative cache lists from memory.

The start-up path is the one a :class:`~pullwarden.node.Node` takes: ``FileRecordStore(root)``
(whose migration scan reads every file), ``CachedRecordStore`` over it (whose warm-up takes what
the scan read) and a :class:`~pullwarden.pullmanager.PullManager` whose housekeeping lists the
intents.  File opens are counted at ``os.open`` and decodes at the store's decoder.
"""

from __future__ import annotations

import os
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from pullwarden.errors import RecordError
from pullwarden.metrics import Metrics
from pullwarden.policy import PolicyEnforcer
from pullwarden.pullmanager import PullManager
from pullwarden.records import _fs
from pullwarden.records._cache import CachedRecordStore
from pullwarden.records._codec import V1ALPHA1, V1BETA1, decode_versioned, encode
from pullwarden.records._fs import FileRecordStore, file_name_for
from pullwarden.records._model import (
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
)
from tests.support import FakeImageLister

T1 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
N = 40


def rec(i: int) -> ImagePulledRecord:
    creds = ImagePullCredentials((ImagePullSecret(f"uid-{i}", "ns", "regcred", f"hash-{i}"),))
    return ImagePulledRecord(f"sha256:{i:064x}", T1, {f"registry.example/app-{i}": creds})


def intent(i: int) -> ImagePullIntent:
    return ImagePullIntent(f"registry.example/app-{i}:v1")


def plant(root: Path, obj: ImagePullIntent | ImagePulledRecord, version: str = V1BETA1) -> Path:
    if isinstance(obj, ImagePullIntent):
        path = root / "image_manager" / "pulling" / file_name_for(obj.image)
    else:
        path = root / "image_manager" / "pulled" / file_name_for(obj.image_ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(obj, version))
    return path


@pytest.fixture
def root(tmp_path: Path) -> Path:
    for i in range(N):
        plant(tmp_path, rec(i))
    for i in range(5):
        plant(tmp_path, intent(i))
    return tmp_path


class Counts:
    """Opens of record files (by name, with or without a directory descriptor) and decodes."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.opens: dict[str, int] = {}
        self.decodes = 0
        self.listings = 0
        real_open, real_decode = os.open, decode_versioned
        real_listdir, real_scandir = os.listdir, os.scandir

        def counting_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            name = os.path.basename(os.fsdecode(path))
            if name.startswith("sha256-"):
                self.opens[name] = self.opens.get(name, 0) + 1
            return real_open(path, flags, *args, **kwargs)

        def counting_decode(data: bytes) -> Any:
            self.decodes += 1
            return real_decode(data)

        def counting_listdir(*args: Any) -> Any:
            self.listings += 1
            return real_listdir(*args)

        def counting_scandir(*args: Any) -> Any:
            self.listings += 1
            return real_scandir(*args)

        monkeypatch.setattr(os, "open", counting_open)
        monkeypatch.setattr(os, "listdir", counting_listdir)
        monkeypatch.setattr(os, "scandir", counting_scandir)
        monkeypatch.setattr(_fs, "decode_versioned", counting_decode)

    def reset(self) -> None:
        self.opens.clear()
        self.decodes = 0
        self.listings = 0


@pytest.fixture
def counts(monkeypatch: pytest.MonkeyPatch) -> Iterator[Counts]:
    yield Counts(monkeypatch)


def start(root: Path) -> tuple[FileRecordStore, CachedRecordStore, PullManager]:
    """What a Node does with its records at start-up."""
    files = FileRecordStore(root, lookups_only=True)
    files.sweep_drafts()
    cache = CachedRecordStore(files)
    manager = PullManager(cache, PolicyEnforcer(), FakeImageLister(), metrics=Metrics())
    return files, cache, manager


def test_start_up_reads_each_file_once_and_builds_no_record(root: Path, counts: Counts) -> None:
    _, cache, _ = start(root)
    assert len(counts.opens) == N + 5
    assert set(counts.opens.values()) == {1}
    assert counts.decodes == 5  # the intents; the records are checked, built when used
    assert cache.records_authoritative and cache.intents_authoritative
    assert cache.cached_counts() == (5, N)
    assert cache.get_pulled_record(rec(7).image_ref) == rec(7)
    assert cache.get_pulled_record(rec(7).image_ref) is cache.get_pulled_record(rec(7).image_ref)
    assert counts.decodes == 6 and len(counts.opens) == N + 5
    assert cache.get_pulled_record("sha256:absent") is None


def test_an_alpha_file_is_still_migrated_and_a_broken_one_still_reported(
    root: Path, counts: Counts
) -> None:
    alpha = plant(root, rec(N), V1ALPHA1)
    broken = root / "image_manager" / "pulled" / ("sha256-" + "0" * 64)
    broken.write_bytes(b'{"kind":"ImagePulledRecord","apiVersion":"kubelet.config.k8s.io/v1beta1"')
    files, cache, _ = start(root)
    assert decode_versioned(alpha.read_bytes())[1] == V1BETA1
    report = files.migration_report
    assert report is not None
    assert [i.source for i in report.items] == [str(alpha)]
    assert [e.path for e in report.errors] == [str(broken)]
    # The rewrite kept the file name: the scan's reading still stands, one read per file.
    assert set(counts.opens.values()) == {1}
    assert cache.get_pulled_record(rec(N).image_ref) == rec(N)
    # A file that does not decode keeps the cache from claiming to know everything.
    assert not cache.records_authoritative


def test_a_file_rewritten_under_a_new_name_is_read_again(root: Path, counts: Counts) -> None:
    wrong = root / "image_manager" / "pulled" / "sha256-misnamed"
    wrong.write_bytes(encode(rec(N), V1ALPHA1))
    _, cache, _ = start(root)
    right = root / "image_manager" / "pulled" / file_name_for(rec(N).image_ref)
    assert right.exists() and wrong.exists()
    assert counts.opens[right.name] == 1  # seen by the warm-up, which read the disk again
    assert counts.opens[file_name_for(rec(0).image_ref)] == 2
    assert cache.get_pulled_record(rec(N).image_ref) == rec(N)


def test_the_authoritative_cache_lists_without_touching_the_disk(
    root: Path, counts: Counts
) -> None:
    files, cache, _ = start(root)
    expected_records = FileRecordStore(root, migrate=False).list_pulled_records()
    expected_intents = FileRecordStore(root, migrate=False).list_intents()
    cache.write_pulled_record(rec(N))  # recency order is not listing order
    cache.get_pulled_record(rec(3).image_ref)
    counts.reset()
    records = cache.list_pulled_records()
    intents = cache.list_intents()
    assert counts.opens == {} and counts.listings == 0  # records are built in memory
    on_disk = FileRecordStore(root, migrate=False).list_pulled_records().items
    assert records.items == on_disk  # file name order
    assert records.ok and intents.ok
    assert intents.items == expected_intents.items
    assert [r for r in records.items if r != rec(N)] == expected_records.items
    del files


def test_a_store_written_before_the_cache_warms_up_is_listed_again(
    root: Path, counts: Counts
) -> None:
    files = FileRecordStore(root)
    files.write_pulled_record(rec(N))
    counts.reset()
    cache = CachedRecordStore(files)
    assert counts.opens  # the scan's reading was dropped: the warm-up read the files
    assert cache.get_pulled_record(rec(N).image_ref) == rec(N)


def test_the_scan_is_handed_out_once_and_only_after_a_migrating_open(root: Path) -> None:
    files = FileRecordStore(root)
    listings = files.take_startup_listings()
    assert listings is not None
    assert listings.intents.items == FileRecordStore(root, migrate=False).list_intents().items
    # Every record is there once, as its bytes (each is in the exact form, under its name).
    assert listings.records.items == [] and listings.record_count == N
    built = [listings.decode_raw(key, data) for key, data in listings.raw_records]
    assert built == FileRecordStore(root, migrate=False).list_pulled_records().items
    assert files.take_startup_listings() is None
    assert FileRecordStore(root, migrate=False).take_startup_listings() is None
    listed = FileRecordStore(root)
    listed.list_intents()
    assert listed.take_startup_listings() is None
    deleted = FileRecordStore(root)
    deleted.delete_intent("nothing")
    assert deleted.take_startup_listings() is None


# -- batched deletes ---------------------------------------------------------------------------


def test_batched_delete_removes_exactly_the_named_records(root: Path, counts: Counts) -> None:
    files = FileRecordStore(root, migrate=False)
    pulled = root / "image_manager" / "pulled"
    foreign = pulled / "notes.txt"
    foreign.write_text("keep me")
    draft = pulled / (file_name_for(rec(1).image_ref) + ".tmp")
    draft.write_bytes(b"{")
    doomed = [rec(i).image_ref for i in range(0, N, 3)] + ["sha256:absent"]
    counts.reset()
    failed = files.delete_pulled_records(doomed)
    assert failed == {}
    assert counts.listings == 0  # no re-listing
    assert counts.opens == {}  # unlinked by name, nothing opened
    left = {r.image_ref for r in files.list_pulled_records().items}
    assert left == {rec(i).image_ref for i in range(N) if i % 3}
    assert foreign.exists() and draft.exists()
    assert len(files.list_intents().items) == 5


def test_batched_delete_opens_the_directory_once(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = FileRecordStore(root, migrate=False)
    opened: list[str] = []
    real_open = os.open

    def watch(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        opened.append(os.fsdecode(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", watch)
    files.delete_pulled_records([rec(i).image_ref for i in range(N)])
    assert opened == [files.pulled_dir]
    monkeypatch.undo()
    assert files.list_pulled_records().items == []


def test_batched_delete_reports_what_it_could_not_delete(root: Path) -> None:
    files = FileRecordStore(root, migrate=False)
    stuck = root / "image_manager" / "pulled" / file_name_for(rec(2).image_ref)
    stuck.unlink()
    stuck.mkdir()
    (stuck / "x").write_text("a directory holding a file cannot be unlinked")
    failed = files.delete_pulled_records([rec(1).image_ref, rec(2).image_ref, rec(3).image_ref])
    assert list(failed) == [rec(2).image_ref]
    assert failed[rec(2).image_ref].path == str(stuck)
    left = {r.image_ref for r in files.list_pulled_records().items}
    assert rec(1).image_ref not in left and rec(3).image_ref not in left
    assert stuck.is_dir()


def test_batched_delete_without_a_directory_is_no_error(tmp_path: Path) -> None:
    files = FileRecordStore(tmp_path, migrate=False, create=False)
    assert files.delete_pulled_records(["sha256:x"]) == {}
    assert files.delete_pulled_records([]) == {}


def test_cache_batched_delete_keeps_authority_and_the_failures(root: Path) -> None:
    _, cache, _ = start(root)
    stuck = root / "image_manager" / "pulled" / file_name_for(rec(2).image_ref)
    stuck.unlink()
    stuck.mkdir()
    (stuck / "x").write_text("")
    failed = cache.delete_pulled_records([rec(1).image_ref, rec(2).image_ref])
    assert list(failed) == [rec(2).image_ref]
    assert cache.records_authoritative
    assert cache.get_pulled_record(rec(1).image_ref) is None
    assert cache.get_pulled_record(rec(2).image_ref) == rec(2)  # still cached: still on disk
    assert len(cache.list_pulled_records().items) == N - 1


def test_only_files_in_the_exact_form_are_kept_as_bytes(root: Path) -> None:
    pulled = root / "image_manager" / "pulled"
    escaped = ImagePulledRecord("sha256:esc", T1, {"registry.example/a&b": ImagePullCredentials()})
    plant(root, escaped)  # Go writes "&" as \u0026: not the exact form
    misnamed = pulled / ("sha256-" + "e" * 64)
    misnamed.write_bytes(encode(rec(N)))
    # In the exact form up to its body, which holds an unknown field.
    bad_body = pulled / file_name_for("sha256:bad")
    bad_body.write_bytes(
        encode(ImagePulledRecord("sha256:bad", T1, {"x/y": ImagePullCredentials()})).replace(
            b'"x/y":{}', b'"x/y":{"preloaded":true}'
        )
    )
    files = FileRecordStore(root)
    report = files.migration_report
    assert report is not None and [e.path for e in report.errors] == [str(bad_body)]
    listings = files.take_startup_listings()
    assert listings is not None
    assert [r.image_ref for r in listings.records.items] == ["sha256:esc"]
    # Kept by the imageRef it holds, as the cache always kept a record (whatever its name).
    assert {key for key, _ in listings.raw_records} == {rec(i).image_ref for i in range(N + 1)}
    assert not listings.records.ok
    cache = CachedRecordStore(FileRecordStore(root))
    assert not cache.records_authoritative  # a file that does not decode: as before
    assert cache.get_pulled_record("sha256:esc") == escaped


def test_record_times_for_pruning_build_no_record(root: Path, counts: Counts) -> None:
    escaped = ImagePulledRecord("sha256:esc", T1, {"registry.example/a&b": ImagePullCredentials()})
    plant(root, escaped)  # decoded in full: not the exact form
    plant(root, rec(N), V1ALPHA1)  # migrated at start-up
    broken = root / "image_manager" / "pulled" / ("sha256-" + "0" * 64)
    broken.write_bytes(b"{")
    files = FileRecordStore(root, migrate=False)
    expected = [(r.image_ref, r.last_updated_time) for r in files.list_pulled_records().items]
    counts.reset()
    listing = files.pulled_record_times()
    assert listing.items == expected  # file name order
    assert [e.path for e in listing.errors] == [str(broken)]
    assert counts.decodes == 2  # the escaped record and the broken file; v1alpha1 is exact too
    broken.unlink()
    _, cache, _ = start(root)
    cache.write_pulled_record(rec(N + 1))
    expected = [(r.image_ref, r.last_updated_time) for r in cache.list_pulled_records().items]
    counts.reset()
    stamps = cache.pulled_record_times()
    assert stamps.items == expected and stamps.ok
    assert counts.decodes == 0 and counts.opens == {} and counts.listings == 0


def test_records_one_at_a_time_as_the_listing_gives_them(root: Path) -> None:
    files = FileRecordStore(root, migrate=False)
    broken = root / "image_manager" / "pulled" / ("sha256-" + "0" * 64)
    broken.write_bytes(b"{")
    items = list(files.iter_pulled_records())
    listing = files.list_pulled_records()
    assert [i for i in items if isinstance(i, ImagePulledRecord)] == listing.items
    assert [str(i) for i in items if not isinstance(i, ImagePulledRecord)] == [
        str(e) for e in listing.errors
    ]
    fds = len(os.listdir("/proc/self/fd"))
    it = files.iter_pulled_records()
    assert isinstance(it, types.GeneratorType)
    next(it)
    it.close()  # a reader that stops early leaves no descriptor open
    assert len(os.listdir("/proc/self/fd")) == fds


def test_summaries_are_those_of_the_listed_records(root: Path, counts: Counts) -> None:
    from pullwarden.records import summarize

    escaped = ImagePulledRecord("sha256:esc", T1, {"registry.example/a&b": ImagePullCredentials()})
    plant(root, escaped)
    broken = root / "image_manager" / "pulled" / ("sha256-" + "0" * 64)
    broken.write_bytes(b"{")
    files = FileRecordStore(root, migrate=False)
    listing = files.list_pulled_records()
    counts.reset()
    items = list(files.iter_pulled_summaries())
    assert counts.decodes == 2  # the escaped record and the broken file
    assert [i for i in items if not isinstance(i, RecordError)] == [
        summarize(r) for r in listing.items
    ]
    assert [str(i) for i in items if isinstance(i, RecordError)] == [str(e) for e in listing.errors]


def stray(root: Path, real: ImagePulledRecord) -> ImagePulledRecord:
    """A record for ``real``'s imageRef, node-wide, in a file not named for it (after it)."""
    forged = ImagePulledRecord(
        real.image_ref,
        T1,
        {name: ImagePullCredentials(node_pods_accessible=True) for name in real.credential_mapping},
    )
    (root / "image_manager" / "pulled" / ("sha256-" + "f" * 64)).write_bytes(encode(forged))
    return forged


@pytest.mark.parametrize("lookups_only", [False, True], ids=["kubelet", "node"])
def test_a_stray_record_file_never_stands_in_for_the_one_a_lookup_reads(
    root: Path, lookups_only: bool
) -> None:
    forged = stray(root, rec(3))
    files = FileRecordStore(root, lookups_only=lookups_only)
    cache = CachedRecordStore(files)
    if not lookups_only:  # the kubelet's cache keys what it listed by content: the stray wins
        assert cache.get_pulled_record(rec(3).image_ref) == forged
        assert cache.records_authoritative
        return
    assert cache.get_pulled_record(rec(3).image_ref) == rec(3)  # what the lookup reads
    assert not cache.records_authoritative  # so every miss reads its own file
    assert cache.get_pulled_record(rec(N).image_ref) is None
    listing = files.list_pulled_records()
    assert [e.path for e in listing.errors] == [
        str(root / "image_manager" / "pulled" / ("sha256-" + "f" * 64))
    ]
    assert "which a lookup reads from another file" in str(listing.errors[0])


@pytest.mark.parametrize("lookups_only", [False, True], ids=["kubelet", "node"])
@pytest.mark.parametrize("where", ["pulled", "pulling"])
def test_a_directory_in_place_of_a_record_file_is_an_error_for_a_node(
    root: Path, lookups_only: bool, where: str
) -> None:
    victim = plant(root, rec(3)) if where == "pulled" else plant(root, intent(3))
    victim.unlink()
    victim.mkdir()
    cache = CachedRecordStore(FileRecordStore(root, lookups_only=lookups_only))
    if where == "pulled":
        assert cache.records_authoritative is not lookups_only
        if lookups_only:  # what the file store itself says of that file
            with pytest.raises(RecordError, match="not a regular file"):
                cache.get_pulled_record(rec(3).image_ref)
        else:  # the kubelet's listing skipped it: "absent", the image counts as preloaded
            assert cache.get_pulled_record(rec(3).image_ref) is None
    else:
        assert cache.intents_authoritative is not lookups_only
        if lookups_only:
            with pytest.raises(RecordError, match="not a regular file"):
                cache.intent_exists(intent(3).image)
        else:
            assert not cache.intent_exists(intent(3).image)
