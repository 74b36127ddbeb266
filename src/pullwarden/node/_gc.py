"""Image garbage collection on the kubelet's thresholds, then record pruning (spec §5.6).

When the image filesystem is fuller than ``imageGCHighThresholdPercent``, unused images are
removed, least recently used first, until usage is back under ``imageGCLowThresholdPercent``.
Independently, images unused for longer than ``imageMaximumGCAge`` (when set) are removed.
Images used more recently than ``imageMinimumGCAge`` are never removed.  Afterwards the pull
records of images no longer present are pruned, with the GC start time as the ``until`` guard
so that a record written during the collection survives.  Pruning is part of the pass that
removed images; an explicit collection (``pullwarden gc``) prunes even when it removed none,
while the node's own pass after its pods (``always_prune=False``) prunes only when it removed
an image, as the kubelet prunes from its image GC -- so that an ordinary ``run`` never lists
every record to delete none.

Usage times are kept in ``<root>/image_gc_state.json`` (the kubelet keeps them in memory only,
which forgets them at every restart; a command-line node restarts at every invocation).

The same file remembers which image services this root's images were seen in (its
``imageServices``: ``""`` for the embedded store, else the CRI endpoint).  A record is pruned
when its image is absent from the service at hand; when the root's records also stand for images
of another service (the node ran on containerd, then on its embedded store, or ``gc`` was run
without the node's ``--runtime-endpoint``), that absence proves nothing, and pruning would make
every such image count as preloaded when the node is back on its service.  Then nothing is
pruned (:meth:`ImageGC.prune_withheld` says why), as the kubelet, which never changes runtime
under one root, never has to.  A state file that cannot be read has lost that list: the services
it named may still hold images, so nothing is pruned (``imageServicesLost`` keeps saying so when
the file is rewritten) until the operator deletes the file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from pullwarden._clock import Clock
from pullwarden._files import write_atomically
from pullwarden._nesting import loads_json
from pullwarden._values import frozen
from pullwarden.errors import ImageStoreError
from pullwarden.pullmanager import PullManager
from pullwarden.runtime import Image, ImageService

__all__ = [
    "LOST_SERVICES",
    "DiskStats",
    "GCPlan",
    "GCReport",
    "ImageGC",
    "PlannedRemoval",
    "disk_stats_of",
    "image_fs_stats",
    "prune_withheld_message",
]

_STATE_FILE = "image_gc_state.json"

LOST_SERVICES = "?"
"""In :meth:`ImageGC.prune_withheld`: the services a damaged state file named, now unknown."""


def prune_withheld_message(services: Sequence[str]) -> str:
    """Why no record was pruned (:meth:`ImageGC.prune_withheld` gave ``services``)."""
    if LOST_SERVICES in services:
        return (
            f"no pull record pruned: {_STATE_FILE} could not be read, so the image services "
            "this root's images were also in are unknown, and a record of one of those would "
            "look unknown here (delete the file to prune again)"
        )
    shown = ", ".join("the embedded store" if s == "" else s for s in services)
    return (
        f"no pull record pruned: this root's images are also in {shown}, and a record of one "
        "of those would look unknown here (run gc with that image service, or empty it, to "
        f"prune; {_STATE_FILE} keeps the list)"
    )


@frozen
class DiskStats:
    capacity: int
    available: int

    @property
    def usage_percent(self) -> float:
        return 100.0 - self.available * 100.0 / self.capacity if self.capacity else 0.0


def disk_stats_of(path: Path) -> Callable[[], DiskStats]:
    """Capacity and free space of the filesystem holding ``path``."""

    def stats() -> DiskStats:
        usage = shutil.disk_usage(path)
        return DiskStats(usage.total, usage.free)

    return stats


def image_fs_stats(images: ImageService, fallback: Path) -> Callable[[], DiskStats]:
    """Capacity and free space of the filesystem a runtime keeps its images on.

    The mountpoint comes from the runtime's ``ImageFsInfo`` (asked once, at the first call);
    ``fallback`` stands in when it names none that this process can see.
    """
    mountpoint: list[Path] = []

    def stats() -> DiskStats:
        if not mountpoint:
            named = images.fs_usage().mountpoint
            mountpoint.append(Path(named) if named and os.path.isdir(named) else fallback)
        return disk_stats_of(mountpoint[0])()

    return stats


@frozen
class PlannedRemoval:
    """One image a GC pass would remove, and why."""

    image: Image
    reason: str


@frozen
class GCPlan:
    """What :meth:`ImageGC.plan` found: a pure value that :meth:`ImageGC.apply` carries out."""

    started: datetime
    """When the pass began: the ``until`` guard of the record pruning that follows."""
    usage_percent: float
    """The image filesystem's usage when the pass began."""
    first_seen: tuple[str, ...]
    """Ids of images seen for the first time; applying the plan records ``started`` as their
    last use."""
    removals: tuple[PlannedRemoval, ...]
    """The images to remove, in the order they are removed."""


@dataclass(slots=True)
class GCReport:
    started: datetime
    usage_percent_before: float
    removed: list[Image] = field(default_factory=list)
    freed_bytes: int = 0
    pruned_records: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)  # image id → why it was removed
    prune_withheld: tuple[str, ...] = ()
    """The other image services whose images kept the records from being pruned (see module)."""


class ImageGC:
    """Decides which images to remove and removes them; remembers when each image was used.

    A pass is two steps: :meth:`plan` (pure: what would go and why) and :meth:`apply` (remove
    the images, prune the records, save the usage times); :meth:`collect` is both.  A dry run
    is :meth:`plan` and :meth:`records_to_prune`, which apply nothing.
    """

    def __init__(
        self,
        root: Path,
        image_service: ImageService,
        pull_manager: PullManager | None,
        *,
        clock: Clock,
        high_threshold: int = 85,
        low_threshold: int = 80,
        minimum_age: timedelta = timedelta(minutes=2),
        maximum_age: timedelta = timedelta(0),
        disk_stats: Callable[[], DiskStats] | None = None,
        service: str | None = None,
    ) -> None:
        """``service`` names the image service (``""``: the embedded store, else the CRI
        endpoint); ``None`` (a service the caller made) keeps no history of services."""
        self._state_path = Path(root) / _STATE_FILE
        self._images = image_service
        self._pull_manager = pull_manager
        self._clock = clock
        self.high_threshold = high_threshold
        self.low_threshold = low_threshold
        self.minimum_age = minimum_age
        self.maximum_age = maximum_age
        self._disk_stats = disk_stats or disk_stats_of(Path(root))
        self._service = service
        self._last_used, self._services, self._services_lost = self._load()

    # -- usage bookkeeping -----------------------------------------------------------------------

    def _load(self) -> tuple[dict[str, datetime], set[str], bool]:
        """Usage times, the services seen, and whether a damaged file lost those services."""
        try:
            raw = loads_json(self._state_path.read_text())
            used = {k: datetime.fromisoformat(v) for k, v in raw.get("lastUsed", {}).items()}
            services = raw.get("imageServices", [])
            lost = raw.get("imageServicesLost", False)
            if not isinstance(services, list) or not all(isinstance(x, str) for x in services):
                raise TypeError("imageServices is not a list of strings")
            if not isinstance(lost, bool):
                raise TypeError("imageServicesLost is not a boolean")
        except FileNotFoundError:
            return {}, set(), False
        except (OSError, ValueError, AttributeError, TypeError):
            # A damaged state file (it is written atomically) costs usage history, every image
            # counting as just seen, and the services seen, which nothing can bring back.
            return {}, set(), True
        return used, set(services), lost

    def _save(self) -> None:
        data: dict[str, object] = {
            "lastUsed": {k: v.isoformat() for k, v in sorted(self._last_used.items())}
        }
        if self._services:
            data["imageServices"] = sorted(self._services)
        if self._services_lost:
            data["imageServicesLost"] = True
        write_atomically(self._state_path, (json.dumps(data, indent=1) + "\n").encode())

    def note_service(self, service: str, holds_images: bool) -> None:
        """Note whether ``service`` holds images (those this root's records may stand for); a
        service that holds none is forgotten.  Saved with the next pass or use."""
        if holds_images:
            self._services.add(service)
        else:
            self._services.discard(service)

    def prune_withheld(self) -> tuple[str, ...]:
        """The other image services this root's images were seen in, with :data:`LOST_SERVICES`
        after a damaged state file; records are pruned only when there is none (see the module)."""
        if self._service is None:
            return ()
        lost = (LOST_SERVICES,) if self._services_lost else ()
        return (*sorted(self._services - {self._service}), *lost)

    def mark_used(self, image_ids: Iterable[str]) -> None:
        now = self._clock.now()
        used = [i for i in image_ids if i]
        for image_id in used:
            self._last_used[image_id] = now
        if used:
            self._seen_here(True)
        self._save()

    def _seen_here(self, holds_images: bool) -> None:
        if self._service is not None:
            self.note_service(self._service, holds_images)

    # -- collection ------------------------------------------------------------------------------

    def collect(
        self,
        in_use: Iterable[str] = (),
        *,
        force_all_unused: bool = False,
        always_prune: bool = True,
    ) -> GCReport:
        """One GC pass: :meth:`plan` it, then :meth:`apply` the plan.

        ``in_use``: image ids of running containers (never removed).  ``force_all_unused``
        removes every unused image old enough (``pullwarden gc --all``).  ``always_prune``
        (see :meth:`apply`) is for an explicit collection; a pass the node runs on its own
        passes ``False``.
        """
        plan = self.plan(in_use, force_all_unused=force_all_unused)
        return self.apply(plan, always_prune=always_prune)

    def plan(self, in_use: Iterable[str] = (), *, force_all_unused: bool = False) -> GCPlan:
        """What a GC pass now would remove, and why; changes nothing.

        Reads the clock, the disk usage and the runtime's image list.  Removals come in the
        order they are made: images past ``imageMaximumGCAge`` first, then, least recently used
        first, those that bring usage under the low threshold (or every eligible unused one).
        """
        started = self._clock.now()
        stats = self._disk_stats()
        images = self._images.list_images()
        self._seen_here(bool(images))
        last_used, first_seen = self._with_first_sightings(images, started)
        candidates = _least_recently_used_first(images, set(in_use), last_used)
        eligible = [i for i in candidates if started - last_used[i.id] >= self.minimum_age]
        doomed = self._past_maximum_age(candidates, last_used, started)
        if force_all_unused:
            for image in eligible:
                doomed.setdefault(image.id, "unused (gc --all)")
        elif stats.capacity and stats.usage_percent >= self.high_threshold:
            self._relieve_disk(stats, images, eligible, doomed)
        by_id = {i.id: i for i in images}
        return GCPlan(
            started=started,
            usage_percent=stats.usage_percent,
            first_seen=first_seen,
            removals=tuple(PlannedRemoval(by_id[k], why) for k, why in doomed.items()),
        )

    def _with_first_sightings(
        self, images: Sequence[Image], now: datetime
    ) -> tuple[dict[str, datetime], tuple[str, ...]]:
        """The last use of every image, an image first seen now counting as used now (as the
        kubelet's detection time does), and the ids of those first seen."""
        last_used = dict(self._last_used)
        first_seen: list[str] = []
        for image in images:
            if image.id not in last_used:
                last_used[image.id] = now
                first_seen.append(image.id)
        return last_used, tuple(first_seen)

    def _past_maximum_age(
        self, candidates: Sequence[Image], last_used: Mapping[str, datetime], now: datetime
    ) -> dict[str, str]:
        """Image id → reason, for the unused images idle longer than ``imageMaximumGCAge``."""
        doomed: dict[str, str] = {}
        if self.maximum_age > timedelta(0):
            for image in candidates:
                idle = now - last_used[image.id]
                if idle > self.maximum_age:
                    doomed[image.id] = f"unused for {idle} (> imageMaximumGCAge)"
        return doomed

    def _relieve_disk(
        self,
        stats: DiskStats,
        images: Sequence[Image],
        eligible: Sequence[Image],
        doomed: dict[str, str],
    ) -> None:
        """Add eligible images to ``doomed`` until usage would be under the low threshold."""
        to_free = int(stats.capacity * (100 - self.low_threshold) / 100) - stats.available
        freed = sum(i.size for i in images if i.id in doomed)
        for image in eligible:
            if freed >= to_free:
                break
            if image.id not in doomed:
                doomed[image.id] = (
                    f"disk {stats.usage_percent:.0f}% ≥ imageGCHighThresholdPercent "
                    f"{self.high_threshold}%"
                )
                freed += image.size

    def apply(self, plan: GCPlan, *, always_prune: bool = True) -> GCReport:
        """Carry out ``plan``: remove its images, prune the records of images now gone (with the
        plan's start as the ``until`` guard) and save the usage times.

        With ``always_prune=False`` the records are pruned only when an image was removed.
        """
        report = GCReport(plan.started, plan.usage_percent)
        for image_id in plan.first_seen:
            self._last_used.setdefault(image_id, plan.started)
        for removal in plan.removals:
            image = removal.image
            try:
                self._images.remove_image(image.id)
            except ImageStoreError as err:
                report.reasons[image.id] = f"could not be removed: {err}"
                continue
            report.removed.append(image)
            report.reasons[image.id] = removal.reason
            report.freed_bytes += image.size
            self._last_used.pop(image.id, None)
        report.prune_withheld = self.prune_withheld()
        if (
            self._pull_manager is not None
            and (always_prune or report.removed)
            and not report.prune_withheld
        ):
            remaining = [i.id for i in self._images.list_images()]
            report.pruned_records = self._pull_manager.prune_unknown_records(
                remaining, plan.started
            )
        self._save()
        return report

    def records_to_prune(self, plan: GCPlan) -> list[str]:
        """The imageRefs whose records :meth:`apply` would prune after removing the plan's
        images (as if every removal succeeds); changes nothing.  ``pullwarden gc --dry-run``."""
        if self._pull_manager is None or self.prune_withheld():
            return []
        doomed = {r.image.id for r in plan.removals}
        remaining = [i.id for i in self._images.list_images() if i.id not in doomed]
        return self._pull_manager.prune_unknown_records(remaining, plan.started, dry_run=True)


def _least_recently_used_first(
    images: Sequence[Image], busy: set[str], last_used: Mapping[str, datetime]
) -> list[Image]:
    """The images neither in ``busy`` nor pinned, least recently used first (ties by id)."""
    return sorted(
        (i for i in images if i.id not in busy and not i.pinned),
        key=lambda i: (last_used[i.id], i.id),
    )
