"""Metrics: prometheus_client loads only when a collector is needed; nothing counted is lost."""

from __future__ import annotations

import subprocess
import sys
import threading

from pullwarden.metrics import Metrics


def test_a_manager_that_only_decides_never_loads_prometheus_client(tmp_path: object) -> None:
    probe = f"""
import sys
from pullwarden.policy import PolicyEnforcer
from pullwarden.pullmanager import PullManager, open_kubelet_records
pm = PullManager(open_kubelet_records({str(tmp_path)!r}), PolicyEnforcer(), None)
ref = "sha256:" + "ab" * 32
assert pm.decide("registry.example/app:v1", ref, lambda: ([], None), write=False).must_pull is False
print("prometheus_client" in sys.modules)
value = pm.metrics.value(
    "kubelet_imagemanager_image_mustpull_checks_total", {{"result": "credentialPolicyAllowed"}}
)
print("prometheus_client" in sys.modules, value)
"""
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    # Not loaded by the decision; loaded by the first read, which sees the check counted before.
    assert done.stdout.split() == ["False", "True", "1"]


def test_gauges_watched_before_the_collectors_exist_report_once_they_do() -> None:
    metrics = Metrics()
    metrics.watch_disk(lambda: 3, lambda: 7)
    metrics.watch_memory(lambda: 10, lambda: 20)
    assert metrics.value("kubelet_imagemanager_ondisk_pullintents") == 3
    assert metrics.value("kubelet_imagemanager_ondisk_pulledrecords") == 7
    assert metrics.value("kubelet_imagemanager_inmemory_pullintents_usage_percent") == 10
    metrics.watch_disk(lambda: 4, lambda: 8)  # and after
    assert metrics.value("kubelet_imagemanager_ondisk_pulledrecords") == 8


def test_concurrent_first_uses_build_one_registry() -> None:
    metrics = Metrics()
    start = threading.Barrier(8)
    seen: list[object] = []

    def first_use() -> None:
        start.wait()
        metrics.count_ensure_image_request("IfNotPresent", True, False)
        seen.append(metrics.registry)

    threads = [threading.Thread(target=first_use) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(r) for r in seen}) == 1
    labels = {"pull_policy": "ifnotpresent", "present_locally": "true", "pull_required": "false"}
    assert metrics.value("kubelet_image_manager_ensure_image_requests_total", labels) == 8
