"""``pullwarden metrics`` after a real ``pullwarden run`` against docker-registry (token auth)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from pullwarden.records import FileRecordStore, ImagePullIntent
from tests.integration.infra import ALICE, Seeded


def pullwarden(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-m", "pullwarden", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "HOME": str(home)},
    )
    assert "Traceback" not in done.stderr, done.stderr
    return done


def gauges(text: str) -> dict[str, float]:
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if not s.labels
    }


def manifest(registry_host: str, images: list[tuple[str, str]]) -> list[dict[str, Any]]:
    auth = base64.b64encode(f"{ALICE[0]}:{ALICE[1]}".encode()).decode()
    config = json.dumps({"auths": {registry_host: {"auth": auth}}}).encode()
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "kubernetes.io/dockerconfigjson",
            "metadata": {"namespace": "a", "name": "alice-cred"},
            "data": {".dockerconfigjson": base64.b64encode(config).decode()},
        }
    ]
    for name, image in images:
        docs.append(
            {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {"namespace": "a", "name": name},
                "spec": {
                    "imagePullSecrets": [{"name": "alice-cred"}],
                    "containers": [{"name": "c", "image": image, "imagePullPolicy": "Always"}],
                },
            }
        )
    return docs


def test_metrics_count_the_records_a_real_run_left(seeded: Seeded, tmp_path: Path) -> None:
    root = tmp_path / "node"
    token = seeded.registries["token"]
    images = [
        ("alice", seeded.ref("token", "private/alice:v1")),
        ("hello", seeded.ref("noauth", "ns/hello:v1")),
        ("hello-again", seeded.ref("token", "ns/hello:v1")),  # the same image: one record
        ("docker", seeded.ref("noauth", "ns/docker:v1")),
    ]
    pods = tmp_path / "pods.yaml"
    pods.write_text(yaml.safe_dump_all(manifest(token.host, images)))
    # Node credentials for the same registry, so that -vv has a docker config to talk about.
    docker = tmp_path / ".docker"
    docker.mkdir()
    auth = base64.b64encode(f"{ALICE[0]}:{ALICE[1]}".encode()).decode()
    (docker / "config.json").write_text(json.dumps({"auths": {token.host: {"auth": auth}}}))

    ran = pullwarden("-vv", "run", "-f", str(pods), "--root", str(root), home=tmp_path)
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert "DEBUG pullwarden." in ran.stderr  # -vv logged ...
    assert ALICE[1] not in ran.stdout + ran.stderr  # ... and never the password

    done = pullwarden("metrics", "--root", str(root), home=tmp_path)
    assert done.returncode == 0, done.stderr
    got = gauges(done.stdout)
    assert got["kubelet_imagemanager_ondisk_pulledrecords"] == 3
    assert got["kubelet_imagemanager_ondisk_pullintents"] == 0
    assert "kubelet_imagemanager_image_mustpull_checks_total" in done.stdout
    # What the library reads from the same files agrees.
    listing = FileRecordStore(root, migrate=False, create=False).list_pulled_records()
    assert len(listing.items) == 3 and listing.ok

    # An intent left behind (a pull that never finished) is counted too.
    FileRecordStore(root, migrate=False).write_intent(ImagePullIntent(image=images[0][1]))
    after = gauges(pullwarden("metrics", "--root", str(root), home=tmp_path).stdout)
    assert after["kubelet_imagemanager_ondisk_pullintents"] == 1
    assert after["kubelet_imagemanager_ondisk_pulledrecords"] == 3
