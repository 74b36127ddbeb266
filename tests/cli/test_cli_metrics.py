"""``pullwarden metrics``: the Prometheus text of a node root, read-only, through the real CLI.

After a real ``pullwarden run`` against docker-registry: see
tests/integration/test_cli_metrics_real.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
)
from tests.support import T0


def pullwarden(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pullwarden", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def write_records(root: Path, intents: int, records: int) -> None:
    store = FileRecordStore(root)
    for i in range(intents):
        store.write_intent(ImagePullIntent(image=f"registry.example/app{i}:v1"))
    for i in range(records):
        store.write_pulled_record(
            ImagePulledRecord(
                image_ref=f"sha256:{i:064x}",
                last_updated_time=T0,
                credential_mapping={
                    f"registry.example/app{i}": ImagePullCredentials(node_pods_accessible=True)
                },
            )
        )


def test_counts_what_is_on_disk_under_the_kubelet_names(tmp_path: Path) -> None:
    root = tmp_path / "node"
    write_records(root, intents=2, records=5)
    # Not counted, as the kubelet's gauge does not count them: a draft and a foreign name.
    (root / "image_manager" / "pulled" / "sha256-x.tmp").write_text("{}")
    (root / "image_manager" / "pulled" / "README").write_text("hello")
    done = pullwarden("metrics", "--root", str(root))
    assert done.returncode == 0, done.stderr
    got = samples(done.stdout)
    assert got[("kubelet_imagemanager_ondisk_pullintents", ())] == 2
    assert got[("kubelet_imagemanager_ondisk_pulledrecords", ())] == 5
    for result in ("credentialPolicyAllowed", "credentialRecordFound", "mustAuthenticate"):
        key = ("kubelet_imagemanager_image_mustpull_checks_total", (("result", result),))
        assert got[key] == 0
    assert "# TYPE kubelet_image_pull_duration_seconds histogram" in done.stdout
    assert "# TYPE kubelet_image_manager_ensure_image_requests_total counter" in done.stdout


def test_json_and_yaml_are_one_document_with_the_same_samples(tmp_path: Path) -> None:
    root = tmp_path / "node"
    write_records(root, intents=1, records=2)
    text = pullwarden("metrics", "--root", str(root))
    as_json = pullwarden("metrics", "--root", str(root), "-o", "json")
    as_yaml = pullwarden("metrics", "--root", str(root), "-o", "yaml")
    assert as_json.returncode == as_yaml.returncode == 0, as_json.stderr + as_yaml.stderr
    document = json.loads(as_json.stdout)
    assert yaml.safe_load(as_yaml.stdout) == document
    from_json = {
        (s["name"], tuple(sorted(s["labels"].items()))): s["value"]
        for family in document["metrics"]
        for s in family["samples"]
    }
    assert from_json == samples(text.stdout)
    kinds = {f["name"]: f["type"] for f in document["metrics"]}
    assert kinds["kubelet_imagemanager_ondisk_pulledrecords"] == "gauge"
    assert kinds["kubelet_imagemanager_image_mustpull_checks"] == "counter"
    assert from_json[("kubelet_imagemanager_ondisk_pulledrecords", ())] == 2


def test_the_root_comes_from_the_environment_and_changes_follow(tmp_path: Path) -> None:
    root = tmp_path / "node"
    write_records(root, intents=0, records=1)
    env = {**os.environ, "PULLWARDEN_ROOT": str(root)}
    first = samples(pullwarden("metrics", env=env).stdout)
    assert first[("kubelet_imagemanager_ondisk_pulledrecords", ())] == 1
    write_records(root, intents=3, records=4)
    second = samples(pullwarden("metrics", env=env).stdout)
    assert second[("kubelet_imagemanager_ondisk_pulledrecords", ())] == 4
    assert second[("kubelet_imagemanager_ondisk_pullintents", ())] == 3


def snapshot(path: Path) -> list[tuple[str, int]]:
    return sorted(
        (os.path.relpath(os.path.join(d, n), path), os.lstat(os.path.join(d, n)).st_mtime_ns)
        for d, dirs, files in os.walk(path)
        for n in dirs + files
    )


def test_read_only_an_empty_root_reads_zero_and_stays_empty(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    done = pullwarden("metrics", "--root", str(root))
    assert done.returncode == 0, done.stderr
    assert samples(done.stdout)[("kubelet_imagemanager_ondisk_pulledrecords", ())] == 0
    assert list(root.iterdir()) == []
    write_records(root, intents=1, records=1)
    before = snapshot(root)
    assert pullwarden("metrics", "--root", str(root)).returncode == 0
    assert snapshot(root) == before


def test_a_missing_or_wrong_root_is_one_line_and_exit_2(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such-root"
    done = pullwarden("metrics", "--root", str(missing))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.strip().splitlines() == [f"error: --root {str(missing)!r} does not exist"]
    assert not (tmp_path / "no").exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    done = pullwarden("metrics", "--root", str(a_file))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr


def test_an_unlistable_records_directory_is_an_error_not_zero(tmp_path: Path) -> None:
    root = tmp_path / "node"
    write_records(root, intents=0, records=0)
    pulled = root / "image_manager" / "pulled"
    pulled.rmdir()
    pulled.write_text("not a directory")  # listing it fails, even for root
    done = pullwarden("metrics", "--root", str(root))
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: ") and len(done.stderr.strip().splitlines()) == 1
    assert str(pulled) in done.stderr and done.stdout == ""
