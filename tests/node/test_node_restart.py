"""A kubelet killed mid-pull: the intent survives, so the image counts as kubelet-pulled."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from pullwarden.cli import main
from pullwarden.devregistry import AccessRule, DevRegistry
from pullwarden.runtime import AuthConfig, LocalImageService, build_image

USER = ("robot", "robot-password")


def docs(host: str, image: str, *, with_secret: bool, policy: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "image": image, "imagePullPolicy": policy}]
    }
    if with_secret:
        auth = base64.b64encode(f"{USER[0]}:{USER[1]}".encode()).decode()
        config = json.dumps({"auths": {host: {"auth": auth}}}).encode()
        out.append(
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "type": "kubernetes.io/dockerconfigjson",
                "metadata": {"namespace": "a", "name": "cred"},
                "data": {".dockerconfigjson": base64.b64encode(config).decode()},
            }
        )
        spec["imagePullSecrets"] = [{"name": "cred"}]
    out.append(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"namespace": "a", "name": "p"},
            "spec": spec,
        }
    )
    return out


def run_json(root: Path, manifest: Path) -> dict[str, Any]:
    result = CliRunner().invoke(
        main,
        ["run", "-f", str(manifest), "--root", str(root), "-o", "json", "--no-node-credentials"],
    )
    return dict(json.loads(result.stdout))


def test_kill_after_intent_before_record(tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    build_image(layout, "v1", files={"a.txt": b"private\n"})
    root = tmp_path / "node"
    with DevRegistry(
        auth="token",
        users=dict([USER]),
        rules=[AccessRule(USER[0], "private/*", frozenset({"pull"}))],
    ) as registry:
        registry.add_image("private/app", "v1", layout, "v1")
        image = f"{registry.host}/private/app:v1"
        # The image is on the node without the node having pulled it (an air-gapped import).
        with LocalImageService(root / "images") as store:
            store.pull_image(image, AuthConfig(*USER))

        # Without any intent, the default policy lets a credential-less pod use it.
        anonymous = tmp_path / "anonymous.yaml"
        anonymous.write_text(
            yaml.safe_dump_all(docs(registry.host, image, with_secret=False, policy="IfNotPresent"))
        )
        fresh = tmp_path / "fresh-root"
        with LocalImageService(fresh / "images") as store:
            store.pull_image(image, AuthConfig(*USER))
        got = run_json(fresh, anonymous)["pods"][0]["containers"][0]
        assert (got["outcome"], got["verifiedBy"]) == ("Ready", "preloaded")

        # Now a pod pulls it (Always) and the kubelet dies while the registry is slow to answer.
        always = tmp_path / "always.yaml"
        always.write_text(
            yaml.safe_dump_all(docs(registry.host, image, with_secret=True, policy="Always"))
        )
        registry.faults.latency = 5.0
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pullwarden.cli",
                "run",
                "-f",
                str(always),
                "--root",
                str(root),
                "--no-node-credentials",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        pulling = root / "image_manager" / "pulling"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (pulling.is_dir() and any(pulling.iterdir())):
            time.sleep(0.02)
        assert pulling.is_dir() and any(pulling.iterdir()), "the intent was never written"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        registry.faults.latency = 0.0
        assert not any((root / "image_manager" / "pulled").glob("sha256-*"))

        # The restarted node treats the image as kubelet-pulled with unknown credentials.
        got = run_json(root, anonymous)["pods"][0]["containers"][0]
        assert got["outcome"] == "ErrImagePull"
        assert got["pulled"] is True
        # ...and the pod with the real secret verifies and gets it.
        got = run_json(root, always)["pods"][0]["containers"][0]
        assert (got["outcome"], got["verifiedBy"]) == ("Ready", "pull")
