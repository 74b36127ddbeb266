"""Striped locks: a fixed set of mutexes shared by many keys (spec §7.2).

What is upstream's: a fixed array of mutexes; the requested count is clamped to 1..31
(``maxParallelImagePulls`` sets it) and the *clamped* count is the modulus (upstream once used the
requested count and indexed past its array); :meth:`StripedLocks.all` takes every stripe in index
order; callers nest pulled-lock(imageRef) then intent-lock(image).

What is ours: the stripe of a key.  Upstream takes the 32-bit FNV-1 hash of the key's bytes; here
it is Python's own ``hash()`` of the key modulo the number of stripes.  A ``str`` caches its hash
on the object, so a key checked again costs a modulo, and a new key one pass of C over its
characters: the cost is the same at 50 and at 200,000 distinct keys, with no memo to size or to
thrash.  ``hash()`` of a ``str`` is randomised per process (``PYTHONHASHSEED``), which is harmless:
stripes exist only inside one process, never on disk or on the wire, and within a process a key
always lands on the same stripe.  :func:`fnv1_32` stays as upstream's function, for reference and
tests; nothing on the lock path calls it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["MAX_STRIPES", "StripedLocks", "fnv1_32"]

MAX_STRIPES = 31
_FNV_OFFSET = 0x811C9DC5
_FNV_PRIME = 0x01000193


def fnv1_32(data: bytes) -> int:
    """FNV-1 (multiply, then xor; not FNV-1a) over ``data``, 32 bits: upstream's stripe hash."""
    h = _FNV_OFFSET
    for b in data:
        h = ((h * _FNV_PRIME) & 0xFFFFFFFF) ^ b
    return h


class StripedLocks:
    """``count`` re-entrant-free mutexes; ``lock(key)`` picks one, ``all()`` takes every stripe."""

    __slots__ = ("_locks", "size")

    def __init__(self, count: int) -> None:
        self.size = min(max(count, 1), MAX_STRIPES)
        self._locks = tuple(threading.Lock() for _ in range(self.size))

    def index(self, key: str) -> int:
        """The stripe of ``key``: ``hash(key) % size`` (always in ``0..size-1``)."""
        return hash(key) % self.size

    def lock(self, key: str) -> threading.Lock:
        return self._locks[hash(key) % self.size]

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
