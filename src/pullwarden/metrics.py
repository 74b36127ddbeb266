"""Prometheus metrics with the kubelet's names (spec §7.3, §1.8, §1.3 step 10.7).

Each :class:`Metrics` owns its collectors in its own registry (pass one to share), so several
managers in one process — tests, benchmarks — never collide.

The on-disk and in-memory gauges are read when scraped rather than recomputed on every write:
the kubelet lists the directory after each write, which costs a directory scan per pull at
100,000 records.  Unlike the kubelet they are therefore also right before the first write.

prometheus_client (whose package import alone costs tens of milliseconds) is imported when the
collectors are first needed: on a scrape (:attr:`Metrics.registry`), a :meth:`Metrics.value`
or an ensure-image or pull-duration observation.  A pull manager that only decides -- what
``records explain`` runs -- never loads it; the must-pull counter is a plain one of ours.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import Metric

__all__ = [
    "IMAGE_PULL_DURATION_BUCKETS",
    "IMAGE_SIZE_BUCKETS",
    "MUST_PULL_RESULTS",
    "Metrics",
    "MustPullResult",
    "image_size_bucket",
]

MustPullResult = Literal[
    "credentialPolicyAllowed", "credentialRecordFound", "mustAuthenticate", "error"
]
MUST_PULL_RESULTS: tuple[MustPullResult, ...] = (
    "credentialPolicyAllowed",
    "credentialRecordFound",
    "mustAuthenticate",
    "error",
)

# kubelet_image_pull_duration_seconds: the kubelet's buckets (k/k pkg/kubelet/metrics/metrics.go,
# ``imagePullDurationBuckets``) and its image size labels (``imageSizeBuckets``): an image falls
# in the last bucket whose lower bound its size exceeds; a size of 0 (unknown) is "N/A".
IMAGE_PULL_DURATION_BUCKETS: tuple[float, ...] = (
    1, 5, 10, 20, 30, 60, 120, 180, 240, 300, 360, 480, 600, 900, 1200, 1800, 2700, 3600,
)  # fmt: skip
_MIB = 1024 * 1024
_GIB = 1024 * _MIB
IMAGE_SIZE_BUCKETS: tuple[tuple[int, str], ...] = (
    (0, "0-10MB"),
    (10 * _MIB, "10MB-100MB"),
    (100 * _MIB, "100MB-500MB"),
    (500 * _MIB, "500MB-1GB"),
    (1 * _GIB, "1GB-5GB"),
    (5 * _GIB, "5GB-10GB"),
    (10 * _GIB, "10GB-20GB"),
    (20 * _GIB, "20GB-30GB"),
    (30 * _GIB, "30GB-40GB"),
    (40 * _GIB, "40GB-60GB"),
    (60 * _GIB, "60GB-100GB"),
    (100 * _GIB, "GT100GB"),
)


def image_size_bucket(size_in_bytes: int) -> str:
    """The ``image_size_in_bytes`` label for an image of this size (``N/A`` when 0/unknown)."""
    if size_in_bytes <= 0:
        return "N/A"
    for lower_bound, label in reversed(IMAGE_SIZE_BUCKETS):
        if size_in_bytes > lower_bound:
            return label
    return ""  # pragma: no cover - every positive size exceeds the first bound


def _bool_label(value: bool | None) -> str:
    return "unknown" if value is None else ("true" if value else "false")


class Metrics:
    """The kubelet_imagemanager_* family, ensure-image requests and the pull duration histogram.

    ``registry``, when given, is where the collectors register (when first needed); by default
    each instance has its own.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self._given_registry = registry
        self._build_lock = threading.Lock()
        self._disk: tuple[Callable[[], float], Callable[[], float]] | None = None
        self._memory: tuple[Callable[[], float], Callable[[], float]] | None = None
        self._collectors: _Collectors | None = None
        self.mustpull_checks = _ResultCounter(
            "kubelet_imagemanager_image_mustpull_checks",
            "Outcomes of the check whether an image present on the node must be pulled again.",
        )

    def _built(self) -> _Collectors:
        built = self._collectors
        if built is None:
            with self._build_lock:
                built = self._collectors
                if built is None:
                    built = _Collectors(self._given_registry, self.mustpull_checks)
                    if self._disk is not None:
                        built.watch_disk(*self._disk)
                    if self._memory is not None:
                        built.watch_memory(*self._memory)
                    self._collectors = built
        return built

    @property
    def registry(self) -> CollectorRegistry:
        """The Prometheus registry holding every collector (built on first use)."""
        return self._built().registry

    def count_ensure_image_request(
        self, pull_policy: str, present_locally: bool | None, pull_required: bool | None
    ) -> None:
        """Count one EnsureImageExists call; ``None`` is the label value ``unknown`` (§1.8)."""
        self._built().ensure_image_requests.labels(
            pull_policy.lower(), _bool_label(present_locally), _bool_label(pull_required)
        ).inc()

    def observe_image_pull(self, seconds: float, size_in_bytes: int) -> None:
        """Observe one successful pull (waiting included) under its image size label."""
        histogram = self._built().image_pull_duration
        histogram.labels(image_size_bucket(size_in_bytes)).observe(seconds)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Current value of one sample (convenience for tests and the CLI)."""
        return self.registry.get_sample_value(name, labels or {})

    def watch_disk(
        self, count_intents: Callable[[], float], count_records: Callable[[], float]
    ) -> None:
        """Report the on-disk gauges from these counters whenever scraped."""
        with self._build_lock:
            self._disk = (count_intents, count_records)
            if self._collectors is not None:
                self._collectors.watch_disk(count_intents, count_records)

    def watch_memory(
        self, intents_percent: Callable[[], float], records_percent: Callable[[], float]
    ) -> None:
        """Report the in-memory usage gauges from these functions whenever scraped."""
        with self._build_lock:
            self._memory = (intents_percent, records_percent)
            if self._collectors is not None:
                self._collectors.watch_memory(intents_percent, records_percent)


class _Collectors:
    """The prometheus_client side of :class:`Metrics`, made on first use."""

    def __init__(self, registry: CollectorRegistry | None, mustpull: _ResultCounter) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ondisk_pullintents: Gauge = Gauge(
            "kubelet_imagemanager_ondisk_pullintents",
            "Number of image pull intents stored on disk.",
            registry=r,
        )
        self.ondisk_pulledrecords: Gauge = Gauge(
            "kubelet_imagemanager_ondisk_pulledrecords",
            "Number of image pulled records stored on disk.",
            registry=r,
        )
        self.inmemory_pullintents_usage_percent: Gauge = Gauge(
            "kubelet_imagemanager_inmemory_pullintents_usage_percent",
            "Fill level of the in-memory image pull intent cache, in percent.",
            registry=r,
        )
        self.inmemory_pulledrecords_usage_percent: Gauge = Gauge(
            "kubelet_imagemanager_inmemory_pulledrecords_usage_percent",
            "Fill level of the in-memory image pulled record cache, in percent.",
            registry=r,
        )
        r.register(mustpull)  # a Collector by duck typing (it has collect and describe)
        self.ensure_image_requests: Counter = Counter(
            "kubelet_image_manager_ensure_image_requests",
            "EnsureImageExists calls by pull policy, local presence and whether a pull was needed.",
            ["pull_policy", "present_locally", "pull_required"],
            registry=r,
        )
        self.image_pull_duration: Histogram = Histogram(
            "kubelet_image_pull_duration_seconds",
            "Duration in seconds to pull an image.",
            ["image_size_in_bytes"],
            buckets=IMAGE_PULL_DURATION_BUCKETS,
            registry=r,
        )

    def watch_disk(self, intents: Callable[[], float], records: Callable[[], float]) -> None:
        self.ondisk_pullintents.set_function(intents)
        self.ondisk_pulledrecords.set_function(records)

    def watch_memory(self, intents: Callable[[], float], records: Callable[[], float]) -> None:
        self.inmemory_pullintents_usage_percent.set_function(intents)
        self.inmemory_pulledrecords_usage_percent.set_function(records)


class _ResultCounter:
    """A counter labelled by ``result``, counted with one lock and an int per check.

    prometheus_client's own labelled counter costs several microseconds per increment, as much
    as the whole cached check it would count.
    """

    def __init__(self, name: str, documentation: str) -> None:
        self.name = name
        self.documentation = documentation
        self._lock = threading.Lock()
        self._counts = dict.fromkeys(MUST_PULL_RESULTS, 0)

    def inc(self, result: MustPullResult) -> None:
        with self._lock:
            self._counts[result] += 1

    def collect(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        family = CounterMetricFamily(self.name, self.documentation, labels=["result"])
        with self._lock:
            counts = dict(self._counts)
        for result, value in counts.items():
            family.add_metric([result], value)
        yield family

    def describe(self) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily

        yield CounterMetricFamily(self.name, self.documentation, labels=["result"])
