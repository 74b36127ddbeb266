"""``pullwarden run`` end to end against the real docker-registry with token auth.

These are the upstream end-to-end scenarios of KEP-2535, for ``IfNotPresent`` and ``Never``:
no secret → denied; a secret with wrong credentials → denied; the same secret → runs; the same
credentials in a different secret → runs, without asking the registry.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from pullwarden.records import FileRecordStore
from pullwarden.runtime import AuthConfig, LocalImageService
from tests.integration.conftest import RegistryFactory
from tests.integration.infra import ALICE, BOB, Seeded, Skopeo, TestImages, seed_one

IMAGE = "private/alice:v1"


def secret(ns: str, name: str, host: str, creds: tuple[str, str]) -> dict[str, Any]:
    auth = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
    config = json.dumps({"auths": {host: {"auth": auth}}}).encode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"namespace": ns, "name": name},
        "data": {".dockerconfigjson": base64.b64encode(config).decode()},
    }


def pod(ns: str, name: str, image: str, policy: str, secret_name: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "image": image, "imagePullPolicy": policy}]
    }
    if secret_name:
        spec["imagePullSecrets"] = [{"name": secret_name}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }


def run(
    root: Path, docs: list[dict[str, Any]], *extra: str, config: dict[str, Any] | None = None
) -> tuple[int, dict[str, Any], str]:
    manifest = root.parent / f"manifest-{len(list(root.parent.glob('manifest-*')))}.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    args = ["run", "-f", str(manifest), "--root", str(root), "-o", "json", "--no-node-credentials"]
    if config is not None:
        cfg = root.parent / "kubelet.yaml"
        cfg.write_text(
            yaml.safe_dump(
                {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration"}
                | config
            )
        )
        args += ["--config", str(cfg)]
    result = subprocess.run(
        [sys.executable, "-m", "pullwarden.cli", *args, *extra],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, "HOME": str(root.parent)},
    )
    assert "Traceback" not in result.stderr, result.stderr
    data = json.loads(result.stdout) if result.stdout.strip() else {}
    return result.returncode, data, result.stderr


def outcomes(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["name"]: p["containers"][0] for p in data["pods"]}


@pytest.mark.parametrize("policy", ["IfNotPresent", "Never"])
def test_upstream_e2e_scenarios(seeded: Seeded, tmp_path: Path, policy: str) -> None:
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    root = tmp_path / "node"
    code, data, _ = run(
        root,
        [
            secret("a", "alice-cred", registry.host, ALICE),
            pod("a", "first", image, "Always", "alice-cred"),
        ],
    )
    assert code == 0 and outcomes(data)["first"]["verifiedBy"] == "pull"

    mark = registry.mark()
    code, data, _ = run(
        root,
        [
            secret("a", "alice-cred", registry.host, ALICE),
            secret("b", "copy-of-alice", registry.host, ALICE),
            secret("c", "bob-cred", registry.host, BOB),
            pod("c", "no-secret", image, policy),
            pod("c", "wrong-credentials", image, policy, "bob-cred"),
            pod("a", "same-secret", image, policy, "alice-cred"),
            pod("b", "same-credentials", image, policy, "copy-of-alice"),
        ],
    )
    got = outcomes(data)
    assert code == 1
    denied = "ErrImageNeverPull" if policy == "Never" else "ErrImagePull"
    assert got["no-secret"]["outcome"] == denied
    assert got["wrong-credentials"]["outcome"] == denied
    assert (got["same-secret"]["outcome"], got["same-secret"]["verifiedBy"]) == (
        "Ready",
        "secretHash",
    )
    assert got["same-secret"]["pulled"] is False
    assert (got["same-credentials"]["outcome"], got["same-credentials"]["verifiedBy"]) == (
        "Ready",
        "secretHash",
    )
    assert got["same-credentials"]["imageRef"] == seeded.images.alice.config_digest
    # the two allowed pods never asked the registry; only the denied IfNotPresent pulls did
    expected_manifest_requests = 0 if policy == "Never" else 2
    ok = registry.count_requests("HEAD", "/manifests/", since=mark, status=200)
    ok += registry.count_requests("GET", "/manifests/", since=mark, status=200)
    assert ok == 0
    assert registry.blob_bytes_served(since=mark) == 0
    refused = registry.count_requests("HEAD", "/manifests/", since=mark, status=401)
    refused += registry.count_requests("GET", "/manifests/", since=mark, status=401)
    assert (refused > 0) == (expected_manifest_requests > 0)
    # the record now knows both secrets for the name
    record = FileRecordStore(root, migrate=False).get_pulled_record(
        seeded.images.alice.config_digest
    )
    assert record is not None
    key = image.rsplit(":", 1)[0]
    names = {s.name for s in record.credential_mapping[key].kubernetes_secrets}
    assert names == {"alice-cred", "copy-of-alice"}


def test_restart_keeps_records(
    registry_factory: RegistryFactory, skopeo: Skopeo, test_images: TestImages, tmp_path: Path
) -> None:
    registry = registry_factory(auth="token")  # our own: this test stops it
    seed_one(skopeo, test_images, registry, "alice", IMAGE, ALICE)
    image = registry.ref(IMAGE)
    root = tmp_path / "node"
    docs = [secret("a", "alice-cred", registry.host, ALICE)]
    code, _, _ = run(root, [*docs, pod("a", "p1", image, "IfNotPresent", "alice-cred")])
    assert code == 0
    registry.stop()
    code, data, _ = run(root, [*docs, pod("a", "p2", image, "IfNotPresent", "alice-cred")])
    assert code == 0 and outcomes(data)["p2"]["verifiedBy"] == "secretHash"
    code, data, _ = run(root, [pod("z", "stranger", image, "IfNotPresent")])
    assert code == 1 and outcomes(data)["stranger"]["outcome"] == "RegistryUnavailable"


def preload(root: Path, image: str) -> str:
    """Put an image in the node's store without the node (as an air-gapped import would)."""
    with LocalImageService(root / "images") as store:
        return store.pull_image(image, AuthConfig(*ALICE))


# (kubelet config, outcome, verifiedBy) of a credential-less pod on a preloaded image
PRELOADED_POLICIES = [
    ({}, "Ready", "preloaded"),
    ({"imagePullCredentialsVerificationPolicy": "NeverVerify"}, "Ready", "neverVerify"),
    ({"imagePullCredentialsVerificationPolicy": "AlwaysVerify"}, "ErrImagePull", ""),
    (
        {
            "imagePullCredentialsVerificationPolicy": "NeverVerifyAllowlistedImages",
            "preloadedImagesVerificationAllowlist": ["ALLOWED/*"],
        },
        "Ready",
        "allowlisted",
    ),
    (
        {
            "imagePullCredentialsVerificationPolicy": "NeverVerifyAllowlistedImages",
            "preloadedImagesVerificationAllowlist": ["registry.example/*"],
        },
        "ErrImagePull",
        "",
    ),
    ({"featureGates": {"KubeletEnsureSecretPulledImages": False}}, "Ready", "featureDisabled"),
]
PRELOADED_POLICY_IDS = [
    "default",
    "never-verify",
    "always-verify",
    "allowlisted",
    "not-allowlisted",
    "gate-off",
]


@pytest.mark.parametrize(
    ("config", "outcome", "verified_by"), PRELOADED_POLICIES, ids=PRELOADED_POLICY_IDS
)
def test_policies_on_a_preloaded_image(
    seeded: Seeded,
    tmp_path: Path,
    config: dict[str, Any],
    outcome: str,
    verified_by: str,
) -> None:
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    root = tmp_path / "node"
    preload(root, image)
    if "preloadedImagesVerificationAllowlist" in config:
        config = config | {
            "preloadedImagesVerificationAllowlist": [
                p.replace("ALLOWED", registry.host)
                for p in config["preloadedImagesVerificationAllowlist"]
            ]
        }
    code, data, _ = run(root, [pod("z", "no-secret", image, "IfNotPresent")], config=config)
    got = outcomes(data)["no-secret"]
    assert (got["outcome"], got["verifiedBy"]) == (outcome, verified_by)
    assert code == (0 if outcome == "Ready" else 1)


def test_table_output_says_why(seeded: Seeded, tmp_path: Path) -> None:
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    manifest = tmp_path / "m.yaml"
    manifest.write_text(
        yaml.safe_dump_all(
            [
                secret("a", "alice-cred", registry.host, ALICE),
                pod("a", "p", image, "IfNotPresent", "alice-cred"),
            ]
        )
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pullwarden.cli",
            "run",
            "-f",
            str(manifest),
            "--root",
            str(tmp_path / "n"),
            "--no-node-credentials",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Pulling" in result.stdout and "Successfully pulled image" in result.stdout
    assert "pulled with secret a/alice-cred" in result.stdout
    assert ALICE[1] not in result.stdout + result.stderr


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("kind: Pod\nmetadata: {name: x\n", "line"),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\n"
            "type: kubernetes.io/dockerconfigjson\ndata: {.dockerconfigjson: '%%%'}\n",
            "base64",
        ),
        (
            "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\n"
            "spec: {containers: [{name: c, image: 'Bad/Image:v1'}]}\n",
            "image",
        ),
        (
            "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\ntype: kubernetes.io/dockercfg\n"
            "stringData: {.dockerconfigjson: '{\"auths\": {}}'}\n",
            "kubernetes.io/dockercfg",
        ),
    ],
    ids=["malformed-yaml", "bad-base64", "invalid-image", "secret-of-wrong-type"],
)
def test_bad_input_exit_2_and_nothing_written(tmp_path: Path, content: str, words: str) -> None:
    manifest = tmp_path / "bad.yaml"
    manifest.write_text(content)
    root = tmp_path / "node"
    result = subprocess.run(
        [sys.executable, "-m", "pullwarden.cli", "run", "-f", str(manifest), "--root", str(root)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert result.stderr.startswith("error: ") and words in result.stderr
    records = root / "image_manager"
    assert not records.exists() or not any(records.rglob("sha256-*"))


def test_unknown_policy_in_config_exit_2(tmp_path: Path) -> None:
    cfg = tmp_path / "kubelet.yaml"
    cfg.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "imagePullCredentialsVerificationPolicy: Sometimes\n"
    )
    manifest = tmp_path / "m.yaml"
    manifest.write_text(yaml.safe_dump(pod("a", "p", "127.0.0.1:1/x:v1", "IfNotPresent")))
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "pullwarden.cli",
            "run",
            "-f",
            str(manifest),
            "--config",
            str(cfg),
            "--root",
            str(tmp_path / "n"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "imagePullCredentialsVerificationPolicy" in result.stderr
    assert not (tmp_path / "n").exists()
