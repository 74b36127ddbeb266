"""The write-through cache (spec §7.1) in front of the real file store."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pullwarden.errors import RecordError
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
)
from pullwarden.records._cache import _LRU, CachedRecordStore

T = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def rec(ref: str, name: str = "r.io/app") -> ImagePulledRecord:
    return ImagePulledRecord(ref, T, {name: ImagePullCredentials(node_pods_accessible=True)})


class CountingStore(FileRecordStore):
    """The real file store, counting the reads that reach the disk."""

    reads = 0

    def get_pulled_record(self, image_ref: str) -> ImagePulledRecord | None:
        self.reads += 1
        return super().get_pulled_record(image_ref)

    def intent_exists(self, image: str) -> bool:
        self.reads += 1
        return super().intent_exists(image)


def test_warm_cache_is_authoritative_and_never_reads_disk(tmp_path: Path) -> None:
    disk = CountingStore(tmp_path)
    for i in range(5):
        disk.write_pulled_record(rec(f"ref-{i}"))
    disk.write_intent(ImagePullIntent("nginx"))
    cache = CachedRecordStore(disk, records_size=10, intents_size=10)
    assert cache.records_authoritative and cache.intents_authoritative
    assert cache.get_pulled_record("ref-3") == rec("ref-3")
    assert cache.get_pulled_record("ref-missing") is None
    assert cache.intent_exists("nginx") and not cache.intent_exists("redis")
    assert disk.reads == 0


def test_not_authoritative_when_listing_reaches_capacity(tmp_path: Path) -> None:
    disk = CountingStore(tmp_path)
    for i in range(4):
        disk.write_pulled_record(rec(f"ref-{i}"))
    cache = CachedRecordStore(disk, records_size=4)  # strictly less is required
    assert not cache.records_authoritative
    assert cache.get_pulled_record("ref-missing") is None
    assert disk.reads == 1


def test_eviction_clears_authority_delete_does_not(tmp_path: Path) -> None:
    disk = CountingStore(tmp_path)
    cache = CachedRecordStore(disk, records_size=3)
    assert cache.records_authoritative
    cache.write_pulled_record(rec("a"))
    cache.write_pulled_record(rec("b"))
    cache.delete_pulled_record("a")
    assert cache.records_authoritative
    for ref in ("c", "d", "e"):
        cache.write_pulled_record(rec(ref))
    assert not cache.records_authoritative
    # the evicted record is still found, from disk
    assert cache.get_pulled_record("b") == rec("b")
    assert disk.reads == 1


def test_relisting_restores_authority(tmp_path: Path) -> None:
    disk = FileRecordStore(tmp_path)
    cache = CachedRecordStore(disk, records_size=2)
    for ref in ("a", "b", "c"):
        cache.write_pulled_record(rec(ref))
    assert not cache.records_authoritative
    cache.delete_pulled_record("a")
    cache.delete_pulled_record("b")
    assert not cache.records_authoritative
    assert [r.image_ref for r in cache.list_pulled_records().items] == ["c"]
    assert cache.records_authoritative


def test_list_errors_keep_cache_non_authoritative(tmp_path: Path) -> None:
    disk = FileRecordStore(tmp_path)
    disk.write_pulled_record(rec("good"))
    Path(disk.record_path("bad")).write_bytes(b"{oops")
    cache = CachedRecordStore(disk)
    assert not cache.records_authoritative
    assert cache.get_pulled_record("good") == rec("good")
    with pytest.raises(RecordError):
        cache.get_pulled_record("bad")  # errors are not cached, and not hidden


def test_write_through_and_full_precision_in_memory(tmp_path: Path) -> None:
    disk = FileRecordStore(tmp_path)
    cache = CachedRecordStore(disk)
    precise = ImagePulledRecord("x", T.replace(microsecond=123456), {})
    cache.write_pulled_record(precise)
    assert cache.get_pulled_record("x") == precise
    assert FileRecordStore(tmp_path, migrate=False).get_pulled_record("x") == ImagePulledRecord(
        "x", T, {}
    )


def test_usage_percent(tmp_path: Path) -> None:
    cache = CachedRecordStore(FileRecordStore(tmp_path), intents_size=5, records_size=10)
    cache.write_intent(ImagePullIntent("a"))
    assert cache.intents_usage_percent() == 20
    cache.write_intent(ImagePullIntent("b"))
    cache.write_intent(ImagePullIntent("c"))
    cache.write_intent(ImagePullIntent("c"))
    assert cache.intents_usage_percent() == 60


# -- the cache and the plain store always agree ---------------------------------------------------

KEYS = st.sampled_from(["sha256:a", "sha256:b", "sha256:c", "sha256:d", "sha256:e"])
IMAGES = st.sampled_from(["nginx", "r.io/a:v1", "r.io/b@sha256:" + "0" * 64, "q.io/x/y"])
SECRET = st.builds(
    ImagePullSecret,
    uid=st.sampled_from(["u1", "u2"]),
    namespace=st.just("ns"),
    name=st.sampled_from(["s1", "s2"]),
    credential_hash=st.sampled_from(["", "h1", "h2"]),
)
RECORD = st.builds(
    ImagePulledRecord,
    image_ref=KEYS,
    last_updated_time=st.just(T),
    credential_mapping=st.dictionaries(
        IMAGES, st.builds(ImagePullCredentials, kubernetes_secrets=st.lists(SECRET, max_size=2))
    ),
)
OPS = st.lists(
    st.one_of(
        st.tuples(st.just("write_record"), RECORD),
        st.tuples(st.just("delete_record"), KEYS),
        st.tuples(st.just("get_record"), KEYS),
        st.tuples(st.just("write_intent"), IMAGES),
        st.tuples(st.just("delete_intent"), IMAGES),
        st.tuples(st.just("intent_exists"), IMAGES),
        st.tuples(st.just("list"), st.none()),
    ),
    max_size=40,
)


@settings(max_examples=60, deadline=None)
@given(ops=OPS, size=st.integers(min_value=1, max_value=6))
def test_cache_and_files_give_the_same_answers(ops: list[tuple[str, object]], size: int) -> None:
    with tempfile.TemporaryDirectory() as a, tempfile.TemporaryDirectory() as b:
        plain = FileRecordStore(Path(a))
        cached = CachedRecordStore(FileRecordStore(Path(b)), records_size=size, intents_size=size)
        for op, arg in ops:
            answers: list[object] = []
            for store in (plain, cached):
                if op == "write_record":
                    assert isinstance(arg, ImagePulledRecord)
                    answers.append(store.write_pulled_record(arg))
                elif op == "delete_record":
                    answers.append(store.delete_pulled_record(str(arg)))
                elif op == "get_record":
                    answers.append(store.get_pulled_record(str(arg)))
                elif op == "write_intent":
                    answers.append(store.write_intent(ImagePullIntent(str(arg))))
                elif op == "delete_intent":
                    answers.append(store.delete_intent(str(arg)))
                elif op == "intent_exists":
                    answers.append(store.intent_exists(str(arg)))
                else:
                    answers.append(
                        (
                            sorted(r.image_ref for r in store.list_pulled_records().items),
                            sorted(i.image for i in store.list_intents().items),
                        )
                    )
            assert answers[0] == answers[1], op


def test_lru_evicts_least_recently_used_once_nearly_full() -> None:
    lru: _LRU[str] = _LRU(4)
    for key in "abcd":
        lru.put(key, key.upper())
    assert lru.get("a") == "A"  # full: the read refreshes a
    lru.put("e", "E")
    assert set(lru._data) == {"a", "c", "d", "e"}  # b, the least recently used, went
    assert not lru.authoritative


def test_lru_reads_far_from_full_do_not_reorder() -> None:
    # Below three quarters full no eviction is near; a read leaves the order as inserted.
    lru: _LRU[str] = _LRU(8)
    for key in "abc":
        lru.put(key, key.upper())
    assert lru.get("a") == "A"
    assert list(lru._data) == ["a", "b", "c"]
    for key in "defgh":
        lru.put(key, key.upper())
    assert lru.get("a") == "A"  # 8 of 8: refreshed now
    assert list(lru._data)[-1] == "a"
    lru.put("i", "I")
    assert "b" not in lru._data and "a" in lru._data
