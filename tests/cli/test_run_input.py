"""``pullwarden run`` on its input: what it skips, warns about and refuses, through the real CLI.

No registry is needed: every pod here uses ``imagePullPolicy: Never`` on an absent image, which
ends without any network (``ErrImageNeverPull``).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

NEVER_IMAGE = "127.0.0.1:9/absent/app:v1"  # never contacted: Never on an absent image
EVENT_LINE = re.compile(
    r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ  (Normal |Warning)  [A-Za-z]+  (\S+/\S+|-)  \S.*$"
)


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pullwarden", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env={**os.environ, "HOME": str(cwd), "PULLWARDEN_ROOT": str(cwd / "unused-root")},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def pod(ns: str, name: str, secrets: tuple[str, ...] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "image": NEVER_IMAGE, "imagePullPolicy": "Never"}]
    }
    if secrets:
        spec["imagePullSecrets"] = [{"name": s} for s in secrets]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }


def write(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(docs))
    return path


def kubelet_config(path: Path, **fields: Any) -> Path:
    doc = {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration"}
    path.write_text(yaml.safe_dump(doc | fields, sort_keys=False))
    return path


def warnings(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning: ")]


def test_other_kinds_are_skipped_with_one_warning_each(tmp_path: Path) -> None:
    manifest = write(
        tmp_path / "app.yaml",
        [
            {
                "apiVersion": "apps/v1",
                "kind": "Deployment",
                "metadata": {"namespace": "a", "name": "web"},
            },
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"namespace": "a", "name": "settings"},
            },
            pod("a", "p"),
            {
                "apiVersion": "batch/v1",
                "kind": "Pod",
                "metadata": {"namespace": "a", "name": "odd"},
            },
        ],
    )
    result = cli("run", "-f", str(manifest), "--root", str(tmp_path / "node"), cwd=tmp_path)
    assert result.returncode == 1, result.stderr  # the one Pod does not get its image
    lines = warnings(result.stderr)
    assert len(lines) == 3, result.stderr
    for line, (kind, name, document) in zip(
        lines,
        [("Deployment", "a/web", 1), ("ConfigMap", "a/settings", 2), ("Pod", "a/odd", 4)],
        strict=True,
    ):
        assert line.startswith(f"warning: skipped {kind} {name} ")
        assert f"in {manifest}, document {document}" in line
    # the skipped pod is not run
    assert "a/odd" not in result.stdout and "a/p" in result.stdout


def test_files_without_a_pod_are_bad_input_and_create_nothing(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", [{"kind": "ConfigMap", "metadata": {"name": "x"}}])
    second = write(tmp_path / "b.yaml", [{"kind": "Secret", "metadata": {"name": "s"}}])
    root = tmp_path / "node"
    result = cli("run", "-f", str(first), "-f", str(second), "--root", str(root), cwd=tmp_path)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
    assert errors == [
        f"error: no Pod in {first}, {second}: run needs at least one Pod "
        "(kind: Pod, apiVersion: v1)"
    ]
    assert result.stdout == ""
    assert not root.exists()


def test_unknown_config_fields_warn_and_the_run_goes_on(tmp_path: Path) -> None:
    config = kubelet_config(
        tmp_path / "kubelet.yaml", maxPods=110, imageGCHighThresholdPercnt=90, fooBar={"x": 1}
    )
    manifest = write(tmp_path / "p.yaml", [pod("a", "p")])
    result = cli(
        "run",
        "-f",
        str(manifest),
        "--config",
        str(config),
        "--root",
        str(tmp_path / "n"),
        "-o",
        "json",
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert warnings(result.stderr) == [
        f'warning: {config}: unknown field "{name}" in the KubeletConfiguration (ignored, as '
        "the kubelet does)"
        for name in ("imageGCHighThresholdPercnt", "fooBar")
    ]
    assert json.loads(result.stdout)["pods"][0]["containers"][0]["outcome"] == "ErrImageNeverPull"


def test_a_repeated_config_field_warns(tmp_path: Path) -> None:
    # A second policy line further down, loosening the first, is an edit a reviewer misses
    # (which value counts is tests/test_config.py's).
    config = tmp_path / "kubelet.yaml"
    config.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "imagePullCredentialsVerificationPolicy: AlwaysVerify\n"
        "imagePullCredentialsVerificationPolicy: NeverVerify\n"
    )
    manifest = write(tmp_path / "p.yaml", [pod("a", "p")])
    result = cli(
        "run",
        "-f",
        str(manifest),
        "--config",
        str(config),
        "--root",
        str(tmp_path / "n"),
        cwd=tmp_path,
    )
    assert result.returncode == 1, result.stderr
    assert warnings(result.stderr) == [
        f'warning: {config}: duplicate field "imagePullCredentialsVerificationPolicy" in the '
        "KubeletConfiguration (its last value is used, as the kubelet does)"
    ]


def test_wrongly_typed_config_fields_are_still_errors(tmp_path: Path) -> None:
    config = kubelet_config(tmp_path / "kubelet.yaml", serializeImagePulls="yes", fooBar=1)
    manifest = write(tmp_path / "p.yaml", [pod("a", "p")])
    root = tmp_path / "n"
    result = cli(
        "run", "-f", str(manifest), "--config", str(config), "--root", str(root), cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and "serializeImagePulls" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert not root.exists()


def test_a_pull_secret_of_another_type_is_a_warning_event_and_ignored(tmp_path: Path) -> None:
    opaque = {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {"namespace": "a", "name": "not-a-pull-secret"},
        "stringData": {"token": "never-printed-value"},
    }
    manifest = write(tmp_path / "p.yaml", [opaque, pod("a", "p", ("not-a-pull-secret", "absent"))])
    result = cli(
        "run", "-f", str(manifest), "--root", str(tmp_path / "n"), "-o", "json", cwd=tmp_path
    )
    assert result.returncode == 1, result.stderr
    events = json.loads(result.stdout)["events"]
    ignored = [e for e in events if e["reason"] == "IgnoredImagePullSecret"]
    assert len(ignored) == 1, events
    assert ignored[0]["type"] == "Warning" and ignored[0]["object"] == "a/p"
    assert "a/not-a-pull-secret is of type Opaque" in ignored[0]["message"]
    # the missing one is the kubelet's own event, naming only it
    missing = [e for e in events if e["reason"] == "FailedToRetrieveImagePullSecret"]
    assert len(missing) == 1 and "(absent)" in missing[0]["message"]
    assert "never-printed-value" not in result.stdout + result.stderr


def test_json_and_yaml_are_one_document_with_the_events(tmp_path: Path) -> None:
    manifest = write(tmp_path / "p.yaml", [pod("a", "p"), pod("b", "q")])
    root = str(tmp_path / "n")
    as_json = cli("run", "-f", str(manifest), "--root", root, "-o", "json", cwd=tmp_path)
    as_yaml = cli("run", "-f", str(manifest), "--root", root, "-o", "yaml", cwd=tmp_path)
    assert as_json.returncode == as_yaml.returncode == 1
    doc = json.loads(as_json.stdout)  # nothing but the document on standard output
    other = yaml.safe_load(as_yaml.stdout)
    assert list(doc) == list(other) == ["pods", "events"]
    assert doc["pods"] == other["pods"]
    strip = [{k: v for k, v in e.items() if k != "time"} for e in doc["events"]]
    assert strip == [{k: v for k, v in e.items() if k != "time"} for e in other["events"]]
    assert [(e["reason"], e["object"]) for e in doc["events"]] == [
        ("ErrImageNeverPull", "a/p"),
        ("ErrImageNeverPull", "b/q"),
    ]
    for event in doc["events"]:
        assert list(event) == ["time", "type", "reason", "object", "message"]
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", event["time"])
    container = doc["pods"][0]["containers"][0]
    assert (container["verifiedBy"], container["credential"], container["pulled"]) == (
        "",
        None,
        False,
    )


def test_table_prints_event_lines_then_the_table_and_text_is_table(tmp_path: Path) -> None:
    manifest = write(tmp_path / "p.yaml", [pod("a", "p")])
    root = str(tmp_path / "n")
    table = cli("run", "-f", str(manifest), "--root", root, cwd=tmp_path)
    text = cli("run", "-f", str(manifest), "--root", root, "-o", "text", cwd=tmp_path)
    assert table.returncode == text.returncode == 1
    for result in (table, text):
        events, _, rest = result.stdout.partition("\n\n")
        lines = events.splitlines()
        assert lines and all(EVENT_LINE.match(line) for line in lines), events
        assert "  Warning  ErrImageNeverPull  a/p  Container image" in events
        assert rest.splitlines()[0].split() == ["POD", "CONTAINER", "IMAGE", "OUTCOME", "WHY"]
    help_text = cli("run", "--help", cwd=tmp_path).stdout
    assert "[table|json|yaml]" in help_text and "text" not in help_text.split("--output")[1][:40]


@pytest.mark.parametrize(
    "addr",
    [
        "10.1.2.3:9100",
        "0.0.0.0:9100",
        "example.invalid:9100",
        "127.0.0.1",
        "127.0.0.1:http",
        "[::]:0",
    ],
)
def test_metrics_addr_must_be_loopback_host_and_port(tmp_path: Path, addr: str) -> None:
    manifest = write(tmp_path / "p.yaml", [pod("a", "p")])
    root = tmp_path / "n"
    result = cli(
        "run", "-f", str(manifest), "--root", str(root), "--metrics-addr", addr, cwd=tmp_path
    )
    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --metrics-addr {addr!r}: ")
    assert len(result.stderr.strip().splitlines()) == 1
    assert not root.exists()


def test_gc_dry_run_on_a_missing_root_is_bad_input_and_creates_nothing(tmp_path: Path) -> None:
    root = tmp_path / "typo"
    result = cli("gc", "--dry-run", "--root", str(root), cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr == f"error: --root {root} does not exist: there is no node to collect\n"
    assert not root.exists()
