"""What the ``records`` CLI tests share: the real command as a subprocess, a node root laid out
as a kubelet lays it, and a snapshot of every path under a directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from pullwarden.credentials import credential_hash
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
)

IMAGE = "registry.example/team-a/app:v1"
KEY = "registry.example/team-a/app"
REF = "sha256:" + "3c" * 32
NGINX_REF = "sha256:3c3c" + "5e" * 30  # shares "sha256:3c3c" with REF
TOOL_REF = "sha256:" + "4d" * 32
T = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
HASH = credential_hash("team-a-robot", "s3cr3t")
OTHER_HASH = credential_hash("team-b-robot", "0ther")
REGCRED = ImagePullSecret("uid-a", "team-a", "regcred", HASH)
DEPLOY = ImagePullSecret("uid-d", "team-d", "deploy", OTHER_HASH)
BUILDER = ImagePullServiceAccount("sa-1", "ci", "builder")


def pw(
    *args: str, code: int | None = 0, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """``pullwarden ARGS`` as a process; checks the exit status and that no traceback shows."""
    result = subprocess.run(
        [sys.executable, "-m", "pullwarden.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env={**os.environ, **(env or {})},
    )
    assert "Traceback" not in result.stderr, result.stderr
    if code is not None:
        assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    return result


def pw_json(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
    return json.loads(pw(*args, "-o", "json", code=code, env=env).stdout)


def one_error_line(result: subprocess.CompletedProcess[str]) -> str:
    """The single ``error: ...`` line a bad input gives (exit 2, nothing else on stderr)."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def make_root(root: Path) -> Path:
    """Three records and two intents:

    * REF: team-a's app, pulled with team-a/regcred and (another name) team-d/deploy;
    * NGINX_REF: nginx, spelt ``nginx`` by one pod and ``docker.io/library/nginx`` by another,
      node-wide for the second;
    * TOOL_REF: ci's tool, pulled by the service account ci/builder;
    * intents for ``nginx:1.27`` and ``registry.example/team-a/app:v2``.
    """
    store = FileRecordStore(root)
    store.write_pulled_record(
        ImagePulledRecord(
            REF,
            T,
            {
                KEY: ImagePullCredentials(kubernetes_secrets=(REGCRED,)),
                "registry.example/team-a/other": ImagePullCredentials(kubernetes_secrets=(DEPLOY,)),
            },
        )
    )
    store.write_pulled_record(
        ImagePulledRecord(
            NGINX_REF,
            T,
            {
                "nginx": ImagePullCredentials(
                    kubernetes_secrets=(ImagePullSecret("uid-n", "web", "hub", OTHER_HASH),)
                ),
                "docker.io/library/nginx": ImagePullCredentials(node_pods_accessible=True),
            },
        )
    )
    store.write_pulled_record(
        ImagePulledRecord(
            TOOL_REF,
            T,
            {
                "registry.example/ci/tool": ImagePullCredentials(
                    kubernetes_service_accounts=(BUILDER,)
                )
            },
        )
    )
    store.write_intent(ImagePullIntent("nginx:1.27"))
    store.write_intent(ImagePullIntent("registry.example/team-a/app:v2"))
    return root


def tree(root: Path) -> dict[str, tuple[bytes | None, int]]:
    """Every path under ``root`` (directories too), with its content and mtime."""
    out: dict[str, tuple[bytes | None, int]] = {str(root): (None, root.stat().st_mtime_ns)}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs:
            p = Path(dirpath, name)
            out[str(p)] = (None, p.stat().st_mtime_ns)
        for name in files:
            p = Path(dirpath, name)
            out[str(p)] = (p.read_bytes(), p.stat().st_mtime_ns)
    return out
