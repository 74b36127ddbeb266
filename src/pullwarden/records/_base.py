"""The storage contract the pull manager talks to (the kubelet's "pull records accessor").

Two implementations exist: :class:`~pullwarden.records._fs.FileRecordStore` (the files themselves)
and :class:`~pullwarden.records._cache.CachedRecordStore` (a write-through LRU in front of any
store).  Keeping decision logic out of storage is what makes the cache and the benchmarks
possible.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from pullwarden._values import frozen
from pullwarden.errors import RecordError, RecordWriteError
from pullwarden.records._model import ImagePulledRecord, ImagePullIntent

__all__ = ["Gauges", "Listing", "RecordStore", "StartupListings"]

T = TypeVar("T")


@dataclass(slots=True)
class Listing(Generic[T]):
    """A partial-success listing: everything that decoded, plus one error per file that did not."""

    items: list[T] = field(default_factory=list)
    errors: list[RecordError] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


@dataclass(slots=True)
class StartupListings:
    """What a store's start-up scan read, for a cache to warm up from without reading again.

    Pulled records the scan found in the exact form a kubelet writes are kept as the file's
    bytes (``raw_records``: imageRef, content), checked but not yet built: building 100,000
    records costs more than reading their files.  ``decode_raw`` builds one; it cannot fail on
    what the scan kept.
    """

    intents: Listing[ImagePullIntent]
    records: Listing[ImagePulledRecord]
    raw_records: list[tuple[str, bytes]]
    decode_raw: Callable[[str, bytes], ImagePulledRecord]

    @property
    def record_count(self) -> int:
        return len(self.records.items) + len(self.raw_records)


Reading = Callable[[], float]


@frozen
class Gauges:
    """What a store reports for the ``kubelet_imagemanager_*`` gauges (spec §7.3), read when
    scraped; ``None`` where this store has nothing to say.  A decorating store (the cache)
    adds its own readings to its delegate's."""

    intent_files: Reading | None = None
    record_files: Reading | None = None
    intents_usage_percent: Reading | None = None
    records_usage_percent: Reading | None = None


class RecordStore(Protocol):
    """Intents keyed by the raw image string, pulled records keyed by imageRef.

    Reads raise :class:`~pullwarden.errors.RecordReadError` or
    :class:`~pullwarden.errors.RecordDecodeError`; writes and deletes raise
    :class:`~pullwarden.errors.RecordWriteError`.  Deleting what is absent is not an error.
    """

    def write_intent(self, intent: ImagePullIntent) -> None: ...

    def intent_exists(self, image: str) -> bool: ...

    def delete_intent(self, image: str) -> None: ...

    def list_intents(self) -> Listing[ImagePullIntent]: ...

    def get_pulled_record(self, image_ref: str) -> ImagePulledRecord | None: ...

    def write_pulled_record(self, record: ImagePulledRecord) -> None: ...

    def delete_pulled_record(self, image_ref: str) -> None: ...

    def delete_pulled_records(self, image_refs: Iterable[str]) -> dict[str, RecordWriteError]:
        """Delete many records at once (pruning); returns those that failed, with the error."""
        ...

    def list_pulled_records(self) -> Listing[ImagePulledRecord]: ...

    def pulled_record_times(
        self, older_than: datetime | None = None
    ) -> Listing[tuple[str, datetime]]:
        """(imageRef, lastUpdatedTime) of every record updated before ``older_than`` (every
        record when None), as :meth:`list_pulled_records` lists them: what pruning needs,
        without building the records."""
        ...

    def gauges(self) -> Gauges:
        """The readings behind the store's gauges (:class:`Gauges`)."""
        ...
