"""Prometheus metrics with the kubelet's names (spec §7.3, §1.8).

Each :class:`Metrics` owns its collectors in its own registry (pass one to share), so several
managers in one process — tests, benchmarks — never collide.

The on-disk and in-memory gauges are read when scraped rather than recomputed on every write:
the kubelet lists the directory after each write, which costs a directory scan per pull at
100,000 records.  Unlike the kubelet they are therefore also right before the first write.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from prometheus_client import CollectorRegistry, Counter, Gauge

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
        self.mustpull_checks = Counter(
            "kubelet_imagemanager_image_mustpull_checks",
            "Outcomes of the check whether an image present on the node must be pulled again.",
            ["result"],
            registry=r,
        )
        self.ensure_image_requests = Counter(
            "kubelet_image_manager_ensure_image_requests",
            "EnsureImageExists calls by pull policy, local presence and whether a pull was needed.",
            ["pull_policy", "present_locally", "pull_required"],
            registry=r,
        )
        # Pre-bound children: a labels() lookup per check would cost more than the check itself.
        self._mustpull = {res: self.mustpull_checks.labels(result=res) for res in MUST_PULL_RESULTS}

    def count_mustpull(self, result: MustPullResult) -> None:
        self._mustpull[result].inc()

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
