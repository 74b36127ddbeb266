from __future__ import annotations

import threading

import pytest

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


def test_index_is_fnv1_modulo_stripes() -> None:
    locks = StripedLocks(7)
    key = "sha256:abc"
    assert locks.index(key) == fnv1_32(key.encode()) % 7
    assert locks.lock(key) is locks.lock(key)


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
