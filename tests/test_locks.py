"""Striped locks (spec §7.2): upstream's stripe count rules, our process-local stripe function."""

from __future__ import annotations

import threading
import tracemalloc

import pytest
from hypothesis import given
from hypothesis import strategies as st

import pullwarden._locks as locks_module
from pullwarden._locks import MAX_STRIPES, StripedLocks, fnv1_32


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # FNV-1 32-bit reference values (offset basis alone, then one and several bytes)
        (b"", 0x811C9DC5),
        (b"a", 0x050C5D7E),
        (b"foobar", 0x31F0B262),
    ],
)
def test_fnv1_reference_values(data: bytes, expected: int) -> None:
    assert fnv1_32(data) == expected


def test_fnv1_is_not_fnv1a() -> None:
    # FNV-1a of "a" is 0xe40c292c; FNV-1 multiplies before xoring
    assert fnv1_32(b"a") != 0xE40C292C


@pytest.mark.parametrize(("requested", "size"), [(-3, 1), (0, 1), (10, 10), (31, 31), (500, 31)])
def test_stripe_count_is_clamped(requested: int, size: int) -> None:
    assert StripedLocks(requested).size == size


def test_large_requested_size_indexes_within_the_array() -> None:
    locks = StripedLocks(500)
    for i in range(2000):
        key = f"registry.example/image-{i}:v{i}"
        assert 0 <= locks.index(key) < MAX_STRIPES
        with locks.lock(key):
            pass


def test_index_is_the_python_hash_modulo_stripes() -> None:
    locks = StripedLocks(7)
    key = "sha256:abc"
    assert locks.index(key) == hash(key) % 7
    assert locks.lock(key) is locks.lock(key) is locks._locks[locks.index(key)]


@given(key=st.text(), requested=st.integers(-1000, 1000))
def test_every_key_lands_in_range_for_every_count(key: str, requested: int) -> None:
    locks = StripedLocks(requested)
    assert 1 <= locks.size <= MAX_STRIPES
    assert 0 <= locks.index(key) < locks.size
    assert locks.lock(key) is locks._locks[locks.index(key)]


@pytest.mark.parametrize("key", ["\ud800", "é" * 300, "", "sha256:" + "f" * 64, "\x00"])
def test_odd_keys_have_a_stripe(key: str) -> None:
    # lone surrogates, long, empty, NUL: hash() takes any str (upstream's bytes could not be
    # taken from a lone surrogate without surrogatepass)
    locks = StripedLocks(MAX_STRIPES)
    assert 0 <= locks.index(key) < MAX_STRIPES


@given(key=st.text(min_size=2), requested=st.integers(1, MAX_STRIPES))
def test_a_key_always_maps_to_the_same_stripe(key: str, requested: int) -> None:
    a, b = StripedLocks(requested), StripedLocks(requested)
    twin = "".join(list(key))  # an equal string that is another object, hash not yet cached
    assert twin == key
    assert a.index(key) == a.index(twin) == b.index(key) == a.index(key)
    assert a.lock(key) is a.lock(twin)


def test_the_stripe_function_keeps_nothing_per_key() -> None:
    # The memo the lock keys once had (65,536 FNV-1 hashes) thrashed beyond ~32,000 image/imageRef
    # pairs.  Structurally: no size-limited cache anywhere in the module, and picking the stripe
    # of 100,000 new keys leaves no allocation behind in it.
    assert not [name for name, obj in vars(locks_module).items() if hasattr(obj, "cache_info")]
    locks = StripedLocks(10)
    keys = [f"sha256:{i:064x}" for i in range(100_000)]
    tracemalloc.start()
    try:
        for key in keys:
            locks.index(key)
            with locks.lock(key):
                pass
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    kept = snapshot.filter_traces([tracemalloc.Filter(True, locks_module.__file__)])
    assert sum(stat.size for stat in kept.statistics("filename")) == 0


def test_upstream_function_is_not_on_the_lock_path(monkeypatch: pytest.MonkeyPatch) -> None:
    def forbidden(data: bytes) -> int:
        raise AssertionError("fnv1_32 called on the lock path")

    monkeypatch.setattr(locks_module, "fnv1_32", forbidden)
    locks = StripedLocks(5)
    assert 0 <= locks.index("registry.example/app:v1") < 5
    with locks.lock("registry.example/app:v1"):
        pass
    with locks.all():
        pass


def test_all_takes_every_stripe() -> None:
    locks = StripedLocks(4)
    got: list[bool] = []
    with locks.all():
        t = threading.Thread(target=lambda: got.append(locks.lock("x").acquire(timeout=0.05)))
        t.start()
        t.join()
    assert got == [False]
    assert locks.lock("x").acquire(timeout=1)
    locks.lock("x").release()
