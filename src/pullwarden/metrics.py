"""Prometheus metrics with the kubelet's names (spec §7.3, §1.8).

Each :class:`Metrics` owns its collectors in its own registry (pass one to share), so several
managers in one process — tests, benchmarks — never collide.

The on-disk and in-memory gauges are read when scraped rather than recomputed on every write:
the kubelet lists the directory after each write, which costs a directory scan per pull at
100,000 records.  Unlike the kubelet they are therefore also right before the first write.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

__all__ = ["MUST_PULL_RESULTS", "Metrics", "MustPullResult"]

MustPullResult = Literal[
    "credentialPolicyAllowed", "credentialRecordFound", "mustAuthenticate", "error"
]
MUST_PULL_RESULTS: tuple[MustPullResult, ...] = (
    "credentialPolicyAllowed",
    "credentialRecordFound",
    "mustAuthenticate",
    "error",
)


class Metrics:
    """The ``kubelet_imagemanager_*`` family and ``kubelet_image_manager_ensure_image_requests``."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.ondisk_pullintents = Gauge(
            "kubelet_imagemanager_ondisk_pullintents",
            "Number of image pull intents stored on disk.",
            registry=r,
        )
        self.ondisk_pulledrecords = Gauge(
            "kubelet_imagemanager_ondisk_pulledrecords",
            "Number of image pulled records stored on disk.",
            registry=r,
        )
        self.inmemory_pullintents_usage_percent = Gauge(
            "kubelet_imagemanager_inmemory_pullintents_usage_percent",
            "Fill level of the in-memory image pull intent cache, in percent.",
            registry=r,
        )
        self.inmemory_pulledrecords_usage_percent = Gauge(
            "kubelet_imagemanager_inmemory_pulledrecords_usage_percent",
            "Fill level of the in-memory image pulled record cache, in percent.",
            registry=r,
        )
        self.mustpull_checks = _ResultCounter(
            "kubelet_imagemanager_image_mustpull_checks",
            "Outcomes of the check whether an image present on the node must be pulled again.",
        )
        r.register(self.mustpull_checks)
        self.ensure_image_requests = Counter(
            "kubelet_image_manager_ensure_image_requests",
            "EnsureImageExists calls by pull policy, local presence and whether a pull was needed.",
            ["pull_policy", "present_locally", "pull_required"],
            registry=r,
        )

    def count_mustpull(self, result: MustPullResult) -> None:
        self.mustpull_checks.inc(result)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """Current value of one sample (convenience for tests and the CLI)."""
        return self.registry.get_sample_value(name, labels or {})

    def watch_disk(
        self, count_intents: Callable[[], float], count_records: Callable[[], float]
    ) -> None:
        """Report the on-disk gauges from these counters whenever scraped."""
        self.ondisk_pullintents.set_function(count_intents)
        self.ondisk_pulledrecords.set_function(count_records)

    def watch_memory(
        self, intents_percent: Callable[[], float], records_percent: Callable[[], float]
    ) -> None:
        """Report the in-memory usage gauges from these functions whenever scraped."""
        self.inmemory_pullintents_usage_percent.set_function(intents_percent)
        self.inmemory_pulledrecords_usage_percent.set_function(records_percent)


class _ResultCounter(Collector):
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
        family = CounterMetricFamily(self.name, self.documentation, labels=["result"])
        with self._lock:
            counts = dict(self._counts)
        for result, value in counts.items():
            family.add_metric([result], value)
        yield family

    def describe(self) -> Iterator[Metric]:
        yield CounterMetricFamily(self.name, self.documentation, labels=["result"])
