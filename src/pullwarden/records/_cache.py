"""A write-through LRU cache in front of any :class:`RecordStore` (spec §7.1).

Each of the two LRUs (intents by raw image, pulled records by imageRef) carries an
*authoritative* flag: while it is set, every object on disk is in memory and a miss means
"absent" without touching the disk.  Evicting for capacity clears the flag; deleting does not.

While an LRU is authoritative its listing is answered from memory too, in file name order as
the files would be listed, without touching the disk.  The warm-up at construction takes what
the file store's start-up scan already read (:meth:`FileRecordStore.take_startup_listings`)
when it offers it, so that a node's start-up reads every file once.

Upstream caps the record LRU at 2,000 entries, past which its cache stopped being authoritative
and became slower than plain files.  Here an entry costs well under a kilobyte (``bench/``
reports the figure), so the defaults keep 262,144 (2**18) records and 20,000 intents
authoritative: a node with 200,000 records still has room for its next pulls.

The record LRU keeps a :class:`~pullwarden.records.RecordHit` per record (or, until first read,
the file's bytes): what a check compares for the image it last served, so that a hit on a node
with 200,000 records walks one small object instead of the record, its mapping, the name memo
and the credentials.  A read does not move the entry either: it notes ``used`` on the hit (a
line the read touched anyway), and eviction gives a used entry a second chance, moving it to
the young end, instead of evicting it (the "clock" approximation of LRU).  Moving on every read
is what an exact LRU needs, and on a big map it costs a few cache misses per check, as much as
the rest of the hit.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from datetime import datetime
from itertools import chain, islice
from typing import Any, Generic, TypeVar

from pullwarden._locks import StripedLocks
from pullwarden.errors import RecordWriteError
from pullwarden.records._base import Gauges, Listing, RecordStore, StartupListings
from pullwarden.records._codec import exact_record_time
from pullwarden.records._layout import file_order_key
from pullwarden.records._model import ImagePulledRecord, ImagePullIntent, RecordHit

__all__ = ["DEFAULT_INTENTS_SIZE", "DEFAULT_RECORDS_SIZE", "CachedRecordStore"]

DEFAULT_INTENTS_SIZE = 20_000
DEFAULT_RECORDS_SIZE = 1 << 18
DEFAULT_STRIPES = 10

V = TypeVar("V")


class _LRU(Generic[V]):
    """A bounded LRU map with an authoritative flag; every method is thread-safe.

    Reads refresh recency only when the map is more than three quarters full (see ``get``).
    """

    __slots__ = ("_data", "_lock", "_refresh_above", "authoritative", "size")

    def __init__(self, size: int) -> None:
        self.size = max(size, 1)
        # Recency decides only what the next eviction takes, so a hit refreshes it only once
        # the map is three quarters full: below that, eviction is far off, and a refresh (which
        # relinks the entry and its neighbours, a few cache misses on a big map) buys nothing.
        self._refresh_above = self.size * 3 // 4
        # Never rebound (cleared and refilled in place): CachedRecordStore probes it directly.
        self._data: OrderedDict[str, V] = OrderedDict()
        self._lock = threading.Lock()
        self.authoritative = False

    def get(self, key: str) -> V | None:
        # Lock-free: each OrderedDict operation is atomic under the GIL.  A key removed between
        # the two calls only means its recency is not refreshed.
        value = self._data.get(key)
        if value is not None and len(self._data) > self._refresh_above:
            try:  # noqa: SIM105 - contextlib.suppress costs more than the lookup it guards
                self._data.move_to_end(key)
            except KeyError:
                pass
        return value

    def put(self, key: str, value: V) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            if len(self._data) > self.size:
                self._evict()

    def _evict(self) -> None:
        """Drop the oldest entry (the lock is held)."""
        self._data.popitem(last=False)
        self.authoritative = False

    def remove(self, key: str) -> None:
        with self._lock:
            self._data.pop(key, None)

    def remove_all(self, keys: Iterable[str]) -> None:
        with self._lock:
            pop = self._data.pop
            for key in keys:
                pop(key, None)

    def in_file_order(self) -> list[V]:
        """Every value, ordered as a listing of the files would order them."""
        return [value for _, value in self.in_file_order_with_keys()]

    def in_file_order_with_keys(self) -> Iterator[tuple[str, V]]:
        """(key, value) of every entry, ordered as a listing of the files would order them."""
        data = self.snapshot()
        for key in sorted(data, key=file_order_key):
            yield key, data[key]

    def snapshot(self) -> dict[str, V]:
        """Every entry, in no particular order: one C-level copy under the lock, so a lock-free
        get's move_to_end cannot interleave with it."""
        with self._lock:
            return dict(self._data)

    def replace(self, key: str, old: object, new: V) -> None:
        """Put ``new`` under ``key`` if ``old`` is still what it holds (recency unchanged)."""
        with self._lock:
            if self._data.get(key) is old:
                self._data[key] = new

    def reload(self, items: Iterable[tuple[str, V]], authoritative: bool) -> None:
        with self._lock:
            self._data.clear()
            self._data.update(islice(items, self.size))
            self.authoritative = authoritative

    def __len__(self) -> int:
        return len(self._data)

    def usage_percent(self) -> int:
        return len(self._data) * 100 // self.size


class _RecordLRU(_LRU[RecordHit | bytes]):
    """The record LRU: reads mark a hit used, eviction gives used hits a second chance.

    Bytes (a record not yet read since the warm-up) are never used: the first read builds
    the record and puts a hit in their place.
    """

    __slots__ = ()

    def get(self, key: str) -> RecordHit | bytes | None:
        # Lock-free, as _LRU.get, but never reorders: a hit only notes that it was used.
        value = self._data.get(key)
        if isinstance(value, RecordHit) and not value.used:
            value.used = True
        return value

    def _evict(self) -> None:
        data = self._data
        while True:
            key, value = data.popitem(last=False)
            if isinstance(value, RecordHit) and value.used:
                value.used = False
                data[key] = value  # to the young end: a second chance
                continue
            self.authoritative = False
            return


class CachedRecordStore:
    """Serves reads from memory, writes through to ``delegate`` first and memory second."""

    def __init__(
        self,
        delegate: RecordStore,
        *,
        intents_size: int = DEFAULT_INTENTS_SIZE,
        records_size: int = DEFAULT_RECORDS_SIZE,
        stripes: int = DEFAULT_STRIPES,
    ) -> None:
        self.delegate = delegate
        self._intents: _LRU[ImagePullIntent] = _LRU(intents_size)
        # A record still in its file's bytes (bytes) is built on first use; see StartupListings.
        self._records = _RecordLRU(records_size)
        self._record_map = self._records._data  # the LRU's own dict, for lock-free probes
        self._build: Callable[[str, bytes], ImagePulledRecord] | None = None
        self._intent_locks = StripedLocks(stripes)
        self._record_locks = StripedLocks(stripes)
        # Warm both caches; errors only mean the caches stay non-authoritative.
        take: Callable[[], StartupListings | None] | None = getattr(
            delegate, "take_startup_listings", None
        )
        listings = take() if take is not None else None
        if listings is None:
            self.list_intents()
            self.list_pulled_records()
        else:
            intents, records = listings.intents, listings.records
            self._refill(self._intents, ((i.image, i) for i in intents.items), intents)
            self._build = listings.decode_raw
            items: Iterable[tuple[str, RecordHit | bytes]] = chain(
                ((r.image_ref, RecordHit(r)) for r in records.items), listings.raw_records
            )
            self._refill(self._records, items, records, listings.record_count)

    # -- introspection -------------------------------------------------------------------------

    @property
    def intents_authoritative(self) -> bool:
        return self._intents.authoritative

    @property
    def records_authoritative(self) -> bool:
        return self._records.authoritative

    def cached_counts(self) -> tuple[int, int]:
        """(cached intents, cached records)."""
        return len(self._intents), len(self._records)

    def intents_usage_percent(self) -> float:
        return self._intents.usage_percent()

    def records_usage_percent(self) -> float:
        return self._records.usage_percent()

    def gauges(self) -> Gauges:
        return replace(
            self.delegate.gauges(),
            intents_usage_percent=self.intents_usage_percent,
            records_usage_percent=self.records_usage_percent,
        )

    # -- intents -------------------------------------------------------------------------------

    def write_intent(self, intent: ImagePullIntent) -> None:
        with self._intent_locks.lock(intent.image):
            self.delegate.write_intent(intent)
            self._intents.put(intent.image, intent)

    def intent_exists(self, image: str) -> bool:
        if self._intents.get(image) is not None:
            return True
        with self._intent_locks.lock(image):
            if self._intents.get(image) is not None:
                return True
            if self._intents.authoritative:
                return False
            exists = self.delegate.intent_exists(image)
            if exists:
                self._intents.put(image, ImagePullIntent(image=image))
            return exists

    def delete_intent(self, image: str) -> None:
        with self._intent_locks.lock(image):
            self.delegate.delete_intent(image)
            self._intents.remove(image)

    def list_intents(self) -> Listing[ImagePullIntent]:
        """From memory while authoritative; otherwise from the delegate, refilling the cache."""
        if self._intents.authoritative:
            return Listing(self._intents.in_file_order())
        with self._intent_locks.all():
            listing = self.delegate.list_intents()
            self._refill(self._intents, ((i.image, i) for i in listing.items), listing)
            return listing

    # -- pulled records ------------------------------------------------------------------------

    def get_pulled_record(self, image_ref: str) -> ImagePulledRecord | None:
        value = self._records.get(image_ref)
        return self._missed(image_ref) if value is None else self._record_of(image_ref, value)

    def pulled_record_hit(
        self, image_ref: str, image: str, key_of: Callable[[str], str]
    ) -> RecordHit | None:
        """The record of ``image_ref`` read for the raw ``image`` (see :class:`RecordHit`).

        ``key_of`` gives an image's credentialMapping key; it is called only when the cached
        hit was made for another image (or none), and then the new hit replaces it, unless
        ``key_of`` failed.  None when there is no record.
        """
        # _RecordLRU.get spelt out (this is every check's first step); a hit serves the image it
        # was made for, or an equal string.
        value = self._record_map.get(image_ref)
        if isinstance(value, RecordHit):
            known = value.image
            if known is image or known == image:
                if not value.used:
                    value.used = True
                return value
            record = value.record
        elif value is None:
            found = self._missed(image_ref)
            if found is None:
                return None
            record, value = found, self._records.get(image_ref)
            if not isinstance(value, RecordHit) or value.record is not record:
                value = None  # replaced meanwhile: keep what is there
        else:
            record = self._build_raw(image_ref, value)
        hit = RecordHit.of(record, image, key_of)
        if value is not None and hit.error is None:
            self._records.replace(image_ref, value, hit)  # unless a write came first
        return hit

    def _missed(self, image_ref: str) -> ImagePulledRecord | None:
        """A read that found nothing in memory: look again under the key's stripe, then disk."""
        with self._record_locks.lock(image_ref):
            value = self._records.get(image_ref)
            if value is not None:
                return self._record_of(image_ref, value)
            if self._records.authoritative:
                return None
            found = self.delegate.get_pulled_record(image_ref)
            if found is not None:
                self._records.put(image_ref, RecordHit(found))
            return found

    def _record_of(self, image_ref: str, value: RecordHit | bytes) -> ImagePulledRecord:
        return value.record if isinstance(value, RecordHit) else self._built(image_ref, value)

    def _build_raw(self, image_ref: str, raw: bytes) -> ImagePulledRecord:
        assert self._build is not None  # only a warm-up that set it leaves bytes
        return self._build(image_ref, raw)

    def _built(self, image_ref: str, raw: bytes) -> ImagePulledRecord:
        """The record kept as ``raw``, built and cached in its place."""
        record = self._build_raw(image_ref, raw)
        self._records.replace(image_ref, raw, RecordHit(record))
        return record

    def write_pulled_record(self, record: ImagePulledRecord) -> None:
        with self._record_locks.lock(record.image_ref):
            self.delegate.write_pulled_record(record)
            self._records.put(record.image_ref, RecordHit(record))

    def delete_pulled_record(self, image_ref: str) -> None:
        with self._record_locks.lock(image_ref):
            self.delegate.delete_pulled_record(image_ref)
            self._records.remove(image_ref)

    def delete_pulled_records(self, image_refs: Iterable[str]) -> dict[str, RecordWriteError]:
        """Delete many records under one acquisition of every stripe (pruning)."""
        refs = list(image_refs)
        with self._record_locks.all():
            failed = self.delegate.delete_pulled_records(refs)
            self._records.remove_all(r for r in refs if r not in failed)
        return failed

    def list_pulled_records(self) -> Listing[ImagePulledRecord]:
        """From memory while authoritative; otherwise from the delegate, refilling the cache."""
        if self._records.authoritative:
            build = self._build
            records: list[ImagePulledRecord] = []
            append = records.append
            for key, value in self._records.in_file_order_with_keys():
                if isinstance(value, bytes):
                    assert build is not None  # only a warm-up that set it leaves bytes
                    # Built for the listing only: the cache keeps the (smaller) bytes.
                    append(build(key, value))
                else:
                    append(value.record)
            return Listing(records)
        with self._record_locks.all():
            listing = self.delegate.list_pulled_records()
            items = ((r.image_ref, RecordHit(r)) for r in listing.items)
            self._refill(self._records, items, listing)
            return listing

    def pulled_record_times(
        self, older_than: datetime | None = None
    ) -> Listing[tuple[str, datetime]]:
        """From memory while authoritative, building no record; otherwise the delegate's.

        Only what is older than ``older_than`` is put in file order: a prune that deletes
        nothing sorts nothing (the sort is most of the cost at 100,000 records).
        """
        if not self._records.authoritative:
            return self.delegate.pulled_record_times(older_than)
        stamps: list[tuple[str, datetime]] = []
        for key, value in self._records.snapshot().items():
            when = (
                exact_record_time(value)
                if isinstance(value, bytes)
                else value.record.last_updated_time
            )
            if older_than is None or when < older_than:
                stamps.append((key, when))
        stamps.sort(key=lambda stamp: file_order_key(stamp[0]))
        return Listing(stamps)

    @staticmethod
    def _refill(
        lru: _LRU[V],
        items: Iterable[tuple[str, V]],
        listing: Listing[Any],
        count: int | None = None,
    ) -> None:
        # (key, value) pairs one at a time: a list of 100,000 pairs would be 100,000 more
        # objects for the cyclic garbage collector to walk.
        n = len(listing.items) if count is None else count
        authoritative = listing.ok and n < lru.size
        if authoritative or len(lru) == 0:
            lru.reload(items, authoritative)
