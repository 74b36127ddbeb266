"""Striped locks: a fixed set of mutexes shared by many keys (spec §7.2).

A key's stripe is the 32-bit FNV-1 hash of its UTF-8 bytes modulo the number of stripes.  The
requested count is clamped to 1..31 and the *clamped* count is the modulus; upstream once used the
requested count and indexed past its array.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

__all__ = ["MAX_STRIPES", "StripedLocks", "fnv1_32"]

MAX_STRIPES = 31
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1_32(data: bytes) -> int:
    """FNV-1 (multiply, then xor; not FNV-1a) over ``data``, 32 bits."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h * _FNV_PRIME) & 0xFFFFFFFF) ^ b
    return h


@lru_cache(maxsize=65536)
def _key_hash(key: str) -> int:
    # Keys repeat (the same images and imageRefs are checked over and over); hashing them in pure
    # Python costs microseconds, a cache hit a tenth of one.
    return fnv1_32(key.encode("utf-8", "surrogatepass"))


class StripedLocks:
    """``count`` re-entrant-free mutexes; ``lock(key)`` picks one, ``all()`` takes every stripe."""

    __slots__ = ("_locks", "size")

    def __init__(self, count: int) -> None:
        self.size = min(max(count, 1), MAX_STRIPES)
        self._locks = tuple(threading.Lock() for _ in range(self.size))

    def index(self, key: str) -> int:
        return _key_hash(key) % self.size

    def lock(self, key: str) -> threading.Lock:
        return self._locks[_key_hash(key) % self.size]

    @contextmanager
    def all(self) -> Iterator[None]:
        """Hold every stripe, taken in index order (so two holders cannot deadlock)."""
        for lk in self._locks:
            lk.acquire()
        try:
            yield
        finally:
            for lk in reversed(self._locks):
                lk.release()
