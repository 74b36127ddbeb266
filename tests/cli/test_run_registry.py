"""``pullwarden run`` and ``gc`` against the real docker-registry, through the real CLI.

What the output says and why: ``verifiedBy`` and the structured ``credential`` of each container,
a refused re-verification in words, the events (timed lines, or the JSON's ``events``),
``gc --dry-run`` changing nothing while predicting the real collection, and ``--metrics-addr``
serving the node's metrics while a pull is held.

The real-component fixtures come from tests/integration/conftest.py (imported here, so this
module starts its own registries: session scope is per defining module).
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml

from pullwarden.records import FileRecordStore, ImagePullIntent
from pullwarden.runtime import RegistryClient, build_image, push_layout, random_layer
from tests.integration.conftest import (  # noqa: F401 (the real-component fixtures)
    pki,
    real_components,
    registry_basic,
    registry_noauth,
    registry_tls,
    registry_token,
    seeded,
    skopeo,
    test_images,
    token_server,
)
from tests.integration.infra import ALICE, BOB, Seeded
from tests.integration.throttle import ThrottledLink

PRIVATE = "private/alice:v1"
PUBLIC = "ns/hello:v1"
REFUSED = re.compile(
    r"image is on the node, but the registry refused "
    r"(this pod's credentials|access without credentials) \((401|403|401/403)\): \S"
)


@pytest.fixture
def stack(seeded: Seeded) -> Seeded:  # noqa: F811 (the fixture imported above)
    """The seeded real registries (noauth, basic, token, tls)."""
    return seeded


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


def pod(ns: str, name: str, image: str, secret_name: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "image": image, "imagePullPolicy": "IfNotPresent"}]
    }
    if secret_name:
        spec["imagePullSecrets"] = [{"name": secret_name}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name},
        "spec": spec,
    }


def command(root: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "pullwarden", *args, "--root", str(root)]


def env(root: Path) -> dict[str, str]:
    return {**os.environ, "HOME": str(root.parent)}


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        command(root, *args),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=env(root),
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def run(
    root: Path, docs: list[dict[str, Any]], *extra: str, config: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    manifest = root.parent / f"manifest-{len(list(root.parent.glob('manifest-*')))}.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    args = ["run", "-f", str(manifest), "--no-node-credentials", *extra]
    if config is not None:
        path = root.parent / "kubelet.yaml"
        header = {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration"}
        path.write_text(yaml.safe_dump(header | config))
        args += ["--config", str(path)]
    return cli(root, *args)


def run_json(root: Path, docs: list[dict[str, Any]], **kw: Any) -> tuple[int, dict[str, Any]]:
    result = run(root, docs, "-o", "json", **kw)
    return result.returncode, json.loads(result.stdout)


def container(doc: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [p["containers"][0] for p in doc["pods"] if p["name"] == name]
    return found


def test_what_each_container_got_and_whose_access_it_was(stack: Seeded, tmp_path: Path) -> None:
    registry = stack.registries["token"]
    image = stack.ref("token", PRIVATE)
    root = tmp_path / "node"

    code, doc = run_json(
        root, [secret("a", "alice-cred", registry.host, ALICE), pod("a", "p", image, "alice-cred")]
    )
    got = container(doc, "p")
    assert code == 0, doc
    assert (got["verifiedBy"], got["pulled"]) == ("pull", True)
    assert got["credential"] == {"kind": "secret", "namespace": "a", "name": "alice-cred"}
    reasons = [(e["reason"], e["object"]) for e in doc["events"]]
    assert reasons == [("Pulling", "a/p"), ("Pulled", "a/p")], doc["events"]

    # the same credentials in another namespace's Secret: the record answers, no pull
    mark = registry.mark()
    code, doc = run_json(
        root, [secret("b", "copy", registry.host, ALICE), pod("b", "q", image, "copy")]
    )
    got = container(doc, "q")
    assert code == 0, doc
    assert (got["verifiedBy"], got["pulled"]) == ("secretHash", False)
    assert got["credential"] == {"kind": "secret", "namespace": "b", "name": "copy"}
    assert registry.access_log(since=mark) == []

    # NeverVerify lets a credential-less pod in without asking anyone: no credential at all
    code, doc = run_json(
        root,
        [pod("c", "free", image)],
        config={"imagePullCredentialsVerificationPolicy": "NeverVerify"},
    )
    got = container(doc, "free")
    assert code == 0, doc
    assert (got["verifiedBy"], got["pulled"], got["credential"]) == ("neverVerify", False, None)
    assert registry.access_log(since=mark) == []

    # the table says the same in words
    table = run(root, [secret("b", "copy", registry.host, ALICE), pod("b", "q", image, "copy")])
    assert table.returncode == 0, table.stderr
    row = [line for line in table.stdout.splitlines() if line.startswith("b/q ")]
    assert len(row) == 1 and row[0].endswith("verified by record: secret b/copy, secret hash match")
    assert ALICE[1] not in table.stdout + table.stderr


def test_a_refused_reverification_says_the_image_is_on_the_node(
    stack: Seeded, tmp_path: Path
) -> None:
    registry = stack.registries["token"]
    image = stack.ref("token", PRIVATE)
    root = tmp_path / "node"
    code, _ = run_json(
        root, [secret("a", "alice-cred", registry.host, ALICE), pod("a", "p", image, "alice-cred")]
    )
    assert code == 0

    code, doc = run_json(
        root,
        [
            secret("c", "bob-cred", registry.host, BOB),
            pod("c", "wrong", image, "bob-cred"),
            pod("d", "none", image),
        ],
    )
    assert code == 1
    for name, who in (("wrong", "this pod's credentials"), ("none", "access without credentials")):
        got = container(doc, name)
        assert got["outcome"] == "ErrImagePull", got
        assert got["pulled"] is True and got["credential"] is None and got["verifiedBy"] == ""
        match = REFUSED.match(got["message"])
        assert match and match.group(1) == who, got["message"]
        failed = [
            e for e in doc["events"] if e["reason"] == "Failed" and e["object"].endswith(f"/{name}")
        ]
        assert len(failed) == 1 and failed[0]["type"] == "Warning"
        assert failed[0]["message"] == f'Failed to pull image "{image}": {got["message"]}'
    assert BOB[1] not in json.dumps(doc)

    # a first pull that is refused (nothing on the node) is not described as one
    fresh = tmp_path / "fresh"
    code, doc = run_json(
        fresh, [secret("c", "bob-cred", registry.host, BOB), pod("c", "wrong", image, "bob-cred")]
    )
    assert code == 1
    assert "image is on the node" not in container(doc, "wrong")["message"]


def test_table_events_are_timed_lines_as_they_happen(stack: Seeded, tmp_path: Path) -> None:
    image = stack.ref("noauth", PUBLIC)
    result = run(tmp_path / "node", [pod("a", "p", image)])
    assert result.returncode == 0, result.stderr
    events, _, table = result.stdout.partition("\n\n")
    lines = events.splitlines()
    assert len(lines) == 2, result.stdout
    stamp = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"
    assert re.fullmatch(
        rf'{stamp}  Normal   Pulling  a/p  Pulling image "{re.escape(image)}"', lines[0]
    )
    assert re.fullmatch(
        rf'{stamp}  Normal   Pulled  a/p  Successfully pulled image "{re.escape(image)}" in .+',
        lines[1],
    )
    assert table.splitlines()[1].endswith("pulled with anonymous")


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (but the node lock) and its bytes."""
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "node.lock"
    }


def test_gc_dry_run_changes_nothing_and_predicts_the_collection(
    stack: Seeded, tmp_path: Path
) -> None:
    root = tmp_path / "node"
    images = [stack.ref("noauth", PUBLIC), stack.ref("noauth", "ns/docker:v1")]
    code, doc = run_json(root, [pod("a", f"p{i}", image) for i, image in enumerate(images)])
    assert code == 0, doc
    refs = sorted(c["imageRef"] for p in doc["pods"] for c in p["containers"])
    config = tmp_path / "gc.yaml"
    config.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"
        "imageMinimumGCAge: 1ns\n"
    )

    # an intent left by an interrupted pull of an image that is there: start-up housekeeping
    # would turn it into a record, which a dry run must not do either
    FileRecordStore(root).write_intent(ImagePullIntent(image=images[0]))
    before = snapshot(root)
    assert any(k.startswith("image_manager/pulling/") for k in before)
    assert any(k.startswith("image_manager/pulled/") for k in before)
    assert any(k.startswith("images/") for k in before)
    dry = cli(root, "gc", "--all", "--dry-run", "--config", str(config))
    assert dry.returncode == 0, dry.stderr
    assert snapshot(root) == before
    lines = dry.stdout.splitlines()
    for image in images:
        assert any(
            re.fullmatch(
                rf"would remove {re.escape(image)} \(\d+ bytes\): unused \(gc --all\)", line
            )
            for line in lines
        ), lines
    for ref in refs:
        assert f"would prune the pull record of {ref}" in lines
    assert lines[-1].startswith("dry run: 2 image(s) would be removed, ") and lines[-1].endswith(
        "2 record(s) pruned; nothing was changed"
    )

    planned = json.loads(
        cli(root, "gc", "--all", "--dry-run", "-o", "json", "--config", str(config)).stdout
    )
    assert snapshot(root) == before
    assert planned["dryRun"] is True
    assert sorted(i["id"] for i in planned["images"]) == refs
    assert sorted(planned["prunedRecords"]) == refs
    for entry in planned["images"]:
        assert list(entry)[:5] == ["id", "repoTags", "repoDigests", "size", "pinned"]

    done = cli(root, "gc", "--all", "-o", "json", "--config", str(config))
    assert done.returncode == 0, done.stderr
    real = json.loads(done.stdout)
    assert real["dryRun"] is False
    assert [i["id"] for i in real["images"]] == [i["id"] for i in planned["images"]]
    assert "error" not in json.dumps(real["images"])
    assert sorted(real["prunedRecords"]) == refs
    assert real["freedBytes"] == planned["freedBytes"] > 0
    after = snapshot(root)
    assert not any(k.startswith("image_manager/pulled/") for k in after)
    listed = subprocess.run(
        [sys.executable, "-m", "pullwarden", "images", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
        env={**env(root), "PULLWARDEN_STORE": str(root / "images")},
    )
    assert json.loads(listed.stdout)["images"] == []


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as answer:
        body: bytes = answer.read()
    return body.decode()


def sample(text: str, name: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_metrics_are_served_while_the_run_lasts(stack: Seeded, tmp_path: Path) -> None:
    registry = stack.registries["noauth"]
    root = tmp_path / "node"
    with ThrottledLink(("127.0.0.1", registry.port)) as link:
        link.stall()  # no answer reaches the node until resume(): the pull is held
        manifest = tmp_path / "p.yaml"
        manifest.write_text(yaml.safe_dump(pod("a", "p", f"{link.host}/{PUBLIC}")))
        args = ["run", "-f", str(manifest), "--no-node-credentials", "-o", "json"]
        process = subprocess.Popen(
            [*command(root, *args), "--metrics-addr", "127.0.0.1:0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env(root),
        )
        try:
            assert process.stderr is not None
            first = process.stderr.readline()
            match = re.fullmatch(r"metrics: serving (http://127\.0\.0\.1:(\d+)/metrics)\n", first)
            assert match, first
            url, port = match.group(1), int(match.group(2))
            assert link.wait_for_request("/v2/", timeout=20), link.requests
            text = scrape(url)
            assert process.poll() is None, "the run ended while its pull was held"
            for name in (
                "kubelet_imagemanager_ondisk_pullintents",
                "kubelet_imagemanager_ondisk_pulledrecords",
                "kubelet_imagemanager_image_mustpull_checks_total",
                "kubelet_image_manager_ensure_image_requests",
                "kubelet_image_pull_duration_seconds",
            ):
                assert f"# TYPE {name.removesuffix('_total')}" in text, (name, text)
            assert sample(text, "kubelet_imagemanager_ondisk_pullintents") == 1.0  # in flight
            assert sample(text, "kubelet_imagemanager_ondisk_pulledrecords") == 0.0
            link.resume()
            stdout, stderr = process.communicate(timeout=60)
        finally:
            if process.poll() is None:
                process.kill()
                process.communicate()
    assert process.returncode == 0, stderr
    assert container(json.loads(stdout), "p")["verifiedBy"] == "pull"
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass  # the server is gone with the run


PROGRESS = re.compile(
    r"pulling (\S+) for a/big: [\d.]+ [kMG]?B of [\d.]+ [kMG]?B \((\d+)%\), [\d.]+ [kMG]?B/s"
    r"(, \d+s left)?"
)


def test_a_long_pull_reports_its_progress_on_stderr_only(stack: Seeded, tmp_path: Path) -> None:
    registry = stack.registries["noauth"]
    layout = tmp_path / "layout"
    build_image(layout, "big", [random_layer(3_500_000, seed) for seed in (21, 22)], gzip_level=1)
    with RegistryClient() as client:
        push_layout(client, layout, "big", registry.ref("ns/progress-big:v1"))
    root = tmp_path / "node"
    with ThrottledLink(("127.0.0.1", registry.port), rate=1_000_000) as link:  # about 3.5 s
        image = f"{link.host}/ns/progress-big:v1"
        result = run(root, [pod("a", "big", image)], "-o", "json", "--progress-interval", "0.4")
    assert result.returncode == 0, result.stderr
    assert container(json.loads(result.stdout), "big")["verifiedBy"] == "pull"  # stdout: JSON
    lines = [line for line in result.stderr.splitlines() if line.startswith("pulling ")]
    assert len(lines) >= 2, result.stderr
    shares = []
    for line in lines:
        match = PROGRESS.fullmatch(line)
        assert match and match.group(1) == image, line
        shares.append(int(match.group(2)))
    assert shares == sorted(shares) and shares[0] < 100, shares
    # a quick pull (the same image, cached layers aside, from a fresh root) says nothing
    quick = run(tmp_path / "quick", [pod("a", "big", registry.ref("ns/progress-big:v1"))])
    assert quick.returncode == 0, quick.stderr
    assert "pulling " not in quick.stderr
