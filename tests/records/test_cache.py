"""The write-through cache (spec §7.1) in front of the real file store."""

from __future__ import annotations

import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pullwarden.errors import InvalidReferenceError, RecordError
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    RecordHit,
)
from pullwarden.records._cache import _LRU, CachedRecordStore, _RecordLRU
from tests.support import unshared

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


# -- the record hit: what a check compares, kept per record (RecordHit) ----------------------------

HIT_IMAGE = "r.io/app:v1"
ALICE = ImagePullSecret("uid-a", "team-a", "alice", "hash-a")


def trim(image: str) -> str:
    return image.rpartition(":")[0] or image


class CountingTrim:
    """A key function that counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: str) -> str:
        self.calls += 1
        return trim(image)


def secret_rec(ref: str, secret: ImagePullSecret = ALICE) -> ImagePulledRecord:
    creds = ImagePullCredentials(kubernetes_secrets=(secret,))
    return ImagePulledRecord(ref, T, {"r.io/app": creds})


def test_hit_carries_the_entry_of_the_trimmed_name(tmp_path: Path) -> None:
    cache = CachedRecordStore(FileRecordStore(tmp_path))
    cache.write_pulled_record(secret_rec("ref"))
    hit = cache.pulled_record_hit("ref", HIT_IMAGE, trim)
    assert hit is not None and hit.error is None
    assert (hit.key, hit.entry, hit.secrets, hit.accounts, hit.node_wide) == (
        "r.io/app",
        ImagePullCredentials(kubernetes_secrets=(ALICE,)),
        (ALICE,),
        (),
        False,
    )
    assert hit.record == secret_rec("ref")
    other = cache.pulled_record_hit("ref", "r.io/other:v1", trim)
    assert other is not None and (other.key, other.entry, other.secrets) == ("r.io/other", None, ())
    assert cache.pulled_record_hit("missing", HIT_IMAGE, trim) is None


def test_a_relisting_refills_the_map_hits_are_probed_in(tmp_path: Path) -> None:
    """After a relisting refills the map, a probe sees what it found, never what it dropped."""
    disk = FileRecordStore(tmp_path)
    for ref in ("a", "b", "c"):
        disk.write_pulled_record(secret_rec(ref))
    cache = CachedRecordStore(disk, records_size=3)  # full: holds all three, not authoritative
    assert not cache.records_authoritative
    assert cache.pulled_record_hit("a", HIT_IMAGE, trim) is not None
    disk.delete_pulled_record("a")  # behind the cache's back: what a relisting learns
    disk.delete_pulled_record("b")
    disk.write_pulled_record(secret_rec("d"))
    cache.list_pulled_records()  # two records: room to spare, so the map is refilled
    assert cache.records_authoritative
    assert cache.pulled_record_hit("a", HIT_IMAGE, trim) is None
    hit = cache.pulled_record_hit("d", HIT_IMAGE, trim)
    assert hit is not None and hit.record == secret_rec("d")


def test_hit_is_kept_for_an_equal_image_and_remade_for_another(tmp_path: Path) -> None:
    cache = CachedRecordStore(FileRecordStore(tmp_path))
    cache.write_pulled_record(secret_rec("ref"))
    key_of = CountingTrim()
    first = cache.pulled_record_hit("ref", HIT_IMAGE, key_of)
    assert key_of.calls == 1
    # an equal string that is not the same object is served by the kept hit, without trimming
    assert cache.pulled_record_hit("ref", unshared(HIT_IMAGE), key_of) is first
    assert key_of.calls == 1
    other = cache.pulled_record_hit("ref", "r.io/app@sha256:" + "0" * 64, key_of)
    assert other is not first and key_of.calls == 2 and other is not None
    assert other.key == "r.io/app@sha256" and other.entry is None  # trim() is this test's own
    assert cache.pulled_record_hit("ref", HIT_IMAGE, key_of) is not other  # remade again
    assert key_of.calls == 3


def test_hit_follows_writes_and_deletes(tmp_path: Path) -> None:
    disk = CountingStore(tmp_path)
    cache = CachedRecordStore(disk)
    cache.write_pulled_record(secret_rec("ref"))
    before = cache.pulled_record_hit("ref", HIT_IMAGE, trim)
    bob = ImagePullSecret("uid-b", "team-b", "bob", "hash-b")
    cache.write_pulled_record(secret_rec("ref", bob))
    after = cache.pulled_record_hit("ref", HIT_IMAGE, trim)
    assert before is not None and after is not None and after is not before
    assert after.secrets == (bob,) and after.record == secret_rec("ref", bob)
    assert cache.get_pulled_record("ref") == secret_rec("ref", bob)
    cache.delete_pulled_record("ref")
    assert cache.pulled_record_hit("ref", HIT_IMAGE, trim) is None
    assert cache.get_pulled_record("ref") is None
    assert disk.reads == 0  # authoritative throughout


def test_hit_of_a_failing_name_is_not_kept(tmp_path: Path) -> None:
    cache = CachedRecordStore(FileRecordStore(tmp_path))
    cache.write_pulled_record(secret_rec("ref"))
    calls: list[str] = []

    def refuse(image: str) -> str:
        calls.append(image)
        raise InvalidReferenceError("invalid reference format")

    for _ in range(2):
        hit = cache.pulled_record_hit("ref", "Bad:Name", refuse)
        assert hit is not None and isinstance(hit.error, InvalidReferenceError)
        assert (hit.key, hit.entry, hit.record) == ("", None, secret_rec("ref"))
    assert calls == ["Bad:Name"] * 2  # tried again: a failure is never kept
    assert cache.pulled_record_hit("ref", HIT_IMAGE, trim) is not None


def test_hit_made_while_a_write_lands_does_not_bring_the_old_record_back(tmp_path: Path) -> None:
    # The key function runs between the lock-free probe and putting the new hit in place: a
    # write that lands then must win.
    cache = CachedRecordStore(FileRecordStore(tmp_path))
    cache.write_pulled_record(secret_rec("ref"))
    bob = ImagePullSecret("uid-b", "team-b", "bob", "hash-b")

    def write_meanwhile(image: str) -> str:
        cache.write_pulled_record(secret_rec("ref", bob))
        return trim(image)

    stale = cache.pulled_record_hit("ref", HIT_IMAGE, write_meanwhile)
    assert stale is not None and stale.secrets == (ALICE,)  # what the probe read
    fresh = cache.pulled_record_hit("ref", HIT_IMAGE, trim)
    assert fresh is not None and fresh.secrets == (bob,)
    assert cache.get_pulled_record("ref") == secret_rec("ref", bob)


def test_hit_of_a_record_still_in_its_bytes_and_of_one_read_from_disk(tmp_path: Path) -> None:
    disk = FileRecordStore(tmp_path)
    disk.write_pulled_record(secret_rec("warm"))
    cache = CachedRecordStore(FileRecordStore(tmp_path))  # warms up from the start-up scan
    hit = cache.pulled_record_hit("warm", HIT_IMAGE, trim)
    assert hit is not None and hit.record == secret_rec("warm") and hit.secrets == (ALICE,)
    assert cache.pulled_record_hit("warm", HIT_IMAGE, trim) is hit  # kept in the bytes' place
    small = CachedRecordStore(FileRecordStore(tmp_path), records_size=1)
    disk.write_pulled_record(secret_rec("cold"))  # behind the cache's back; not authoritative
    assert not small.records_authoritative
    cold = small.pulled_record_hit("cold", HIT_IMAGE, trim)
    assert cold is not None and cold.record == secret_rec("cold")
    assert small.pulled_record_hit("cold", HIT_IMAGE, trim) is cold


def test_listings_give_records_not_hits(tmp_path: Path) -> None:
    cache = CachedRecordStore(FileRecordStore(tmp_path))
    cache.write_pulled_record(secret_rec("a"))
    cache.write_pulled_record(secret_rec("b"))
    cache.pulled_record_hit("a", HIT_IMAGE, trim)
    listed = cache.list_pulled_records().items
    assert sorted(listed, key=lambda r: r.image_ref) == [secret_rec("a"), secret_rec("b")]
    assert all(type(r) is ImagePulledRecord for r in listed)
    assert sorted(cache.pulled_record_times().items) == [("a", T), ("b", T)]


# -- the record LRU: second chance instead of moving on every read ---------------------------------


def full_lru_none_used() -> tuple[_RecordLRU, dict[str, RecordHit]]:
    """A record LRU holding a, b, c, d (oldest first), none of them marked used."""
    lru = _RecordLRU(4)
    hits = {k: RecordHit(rec(k)) for k in "abcd"}
    for k, hit in hits.items():
        lru.put(k, hit)
        hit.used = False
    return lru, hits


def test_record_lru_read_marks_instead_of_moving() -> None:
    lru, hits = full_lru_none_used()
    assert lru.get("a") is hits["a"]
    assert list(lru._data) == ["a", "b", "c", "d"]  # not moved
    assert hits["a"].used and not hits["b"].used


def test_record_lru_gives_a_used_entry_a_second_chance() -> None:
    lru, hits = full_lru_none_used()
    lru.authoritative = True
    lru.get("a")
    lru.put("e", RecordHit(rec("e")))
    assert set(lru._data) == {"a", "c", "d", "e"}  # b, the oldest unused entry, went
    assert not lru.authoritative
    assert not hits["a"].used  # its chance is spent
    assert list(lru._data) == ["c", "d", "e", "a"]  # a moved to the young end, once
    lru.put("f", RecordHit(rec("f")))
    assert list(lru._data) == ["d", "e", "a", "f"]  # c, never read, went next


def test_record_lru_never_evicts_what_it_just_put() -> None:
    lru = _RecordLRU(3)
    for k in "abc":
        lru.put(k, RecordHit(rec(k)))  # all used: each was just put
    lru.put("d", RecordHit(rec("d")))
    assert "d" in lru._data and len(lru._data) == 3
    lru.put("e", b"raw bytes are never used")
    assert "e" in lru._data and len(lru._data) == 3


def test_record_times_older_than_a_time_come_in_file_order_from_both_stores(
    tmp_path: Path,
) -> None:
    disk = FileRecordStore(tmp_path)
    refs = [f"sha256:{i:064x}" for i in range(12)]
    for i, ref in enumerate(refs[:6]):
        disk.write_pulled_record(ImagePulledRecord(ref, T + timedelta(seconds=i), {}))
    cache = CachedRecordStore(disk)
    assert cache.records_authoritative
    for i, ref in enumerate(refs[6:], 6):  # after the warm-up: out of file order in memory
        cache.write_pulled_record(ImagePulledRecord(ref, T + timedelta(seconds=i), {}))
    until = T + timedelta(seconds=6, microseconds=500_000)
    for store in (disk, cache):
        every = store.pulled_record_times().items
        assert [ref for ref, _ in every] == [r.image_ref for r in disk.list_pulled_records().items]
        old = store.pulled_record_times(until).items
        assert old == [(ref, when) for ref, when in every if when < until]  # in the same order
        assert {ref for ref, _ in old} == set(refs[:7])
        assert store.pulled_record_times(T).items == []
