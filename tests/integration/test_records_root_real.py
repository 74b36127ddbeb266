"""``pullwarden run`` then ``pullwarden records …`` on the same root, with no --root on either
side or with $PULLWARDEN_ROOT on both: the records a real pull (from the real docker-registry,
basic auth) left are the ones the operator commands read, and who-can and explain agree on them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.infra import ALICE, BOB, Seeded
from tests.integration.test_run_real import pod, secret

IMAGE = "ns/hello:v1"


def pw(*args: str, env: dict[str, str], code: int = 0) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "pullwarden.cli", *args],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={k: v for k, v in os.environ.items() if k != "PULLWARDEN_ROOT"} | env,
    )
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == code, (result.stdout, result.stderr)
    return result.stdout


def run_pods(tmp: Path, docs: list[dict[str, Any]], env: dict[str, str]) -> dict[str, Any]:
    manifest = tmp / "pods.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    out = pw("run", "-f", str(manifest), "-o", "json", "--no-node-credentials", env=env)
    data: dict[str, Any] = json.loads(out)
    return data


@pytest.mark.parametrize("how", ["default", "env"])
def test_run_then_records_on_the_same_root_without_saying_where(
    seeded: Seeded, tmp_path: Path, how: str
) -> None:
    registry = seeded.registries["basic"]
    image = seeded.ref("basic", IMAGE)
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home), "XDG_DATA_HOME": str(home / "data")}
    root = home / "data" / "pullwarden" / "node"
    if how == "env":
        root = tmp_path / "elsewhere"
        env["PULLWARDEN_ROOT"] = str(root)
    docs = [
        secret("a", "alice-cred", registry.host, ALICE),
        pod("a", "web", image, "Always", "alice-cred"),
    ]
    data = run_pods(tmp_path, docs, env)
    assert data["pods"][0]["containers"][0]["outcome"] == "Ready"
    assert (root / "image_manager" / "pulled").is_dir()

    listing = json.loads(pw("records", "ls", "-o", "json", env=env))
    [record] = listing["pulledRecords"]
    ref = record["imageRef"]
    assert record["file"].startswith(str(root))
    [entry] = record["credentialMapping"].values()
    [recorded] = entry["kubernetesSecrets"]
    assert (recorded["namespace"], recorded["name"]) == ("a", "alice-cred")
    # the same through the filters, and -d with the root spelt out
    by_secret = json.loads(pw("records", "ls", "--secret", "a/alice-cred", "-o", "json", env=env))
    assert [r["imageRef"] for r in by_secret["pulledRecords"]] == [ref]
    by_image = json.loads(
        pw("records", "ls", "-d", str(root), "--image", image, "-o", "json", env=env)
    )
    assert [r["imageRef"] for r in by_image["pulledRecords"]] == [ref]

    # who-can names alice-cred; explain with the Secret manifests agrees, for it and for bob
    answer = json.loads(pw("records", "who-can", image, "-o", "json", env=env))
    [ref_answer] = answer["imageRefs"]
    assert ref_answer["imageRef"] == ref and ref_answer["everyPod"] is False
    assert [(s["namespace"], s["name"], s["allowed"]) for s in ref_answer["secrets"]] == [
        ("a", "alice-cred", True)
    ]
    for ns, name, creds, allowed in (
        ("a", "alice-cred", ALICE, True),
        ("b", "bob-cred", BOB, False),
    ):
        manifest = tmp_path / f"{name}.yaml"
        manifest.write_text(yaml.safe_dump(secret(ns, name, registry.host, creds)))
        got = json.loads(
            pw(
                "records", "explain", "--image", image, "--image-ref", ref,
                "--secret-file", str(manifest), "-o", "json", env=env,
            )
        )  # fmt: skip
        assert got["mustPull"] is (not allowed)
