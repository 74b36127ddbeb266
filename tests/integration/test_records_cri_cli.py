"""``pullwarden records ls|check|prune --runtime-endpoint`` against a real containerd.

Records come from ``pullwarden run --runtime-endpoint`` pulling from the real registries;
containerd's image list decides what is present, what is absent and what is preloaded (an image
imported with ``ctr images import``, as on an air-gapped node).  Every command runs as the real
CLI in a subprocess.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pullwarden.records import FileRecordStore, ImagePullIntent
from tests.cli.test_records_cli import snapshot
from tests.integration.containerd import Containerd
from tests.integration.infra import ALICE, LOOPBACK, Seeded, TestImages
from tests.integration.test_run_real import outcomes, pod, run, secret

ENV = "CONTAINER_RUNTIME_ENDPOINT"
PRELOADED_MEANING = "under the default policy NeverVerifyPreloadedImages any pod may use it"


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m pullwarden.cli ARGS``; the runtime endpoint only comes from ``env``."""
    environment = {k: v for k, v in os.environ.items() if k != ENV} | (env or {})
    result = subprocess.run(
        [sys.executable, "-m", "pullwarden.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        env=environment,
    )
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


def records(*args: str, code: int = 0, env: dict[str, str] | None = None) -> str:
    result = cli("records", *args, env=env)
    assert result.returncode == code, (result.stdout, result.stderr)
    return result.stdout


def lines_starting(out: str, prefix: str) -> list[list[str]]:
    return [line.split() for line in out.splitlines() if line.startswith(prefix)]


def counts_line(out: str) -> str:
    return [line for line in out.splitlines() if line][-1]


def remove(containerd: Containerd, image_id: str) -> None:
    """CRI RemoveImage, as the kubelet's image GC removes an image (every name goes)."""
    from cri_api.v1 import api_pb2

    containerd.image_service.RemoveImage(
        api_pb2.RemoveImageRequest(image=api_pb2.ImageSpec(image=image_id)), timeout=30
    )
    assert containerd.cri_status(image_id) is None


def pull_two(containerd: Containerd, seeded: Seeded, root: Path) -> tuple[str, str]:
    """Alice's private image (with her secret) and the public hello; their imageRefs."""
    token = seeded.registries["token"]
    code, data, err = run(
        root,
        [
            secret("a", "alice-cred", token.host, ALICE),
            pod(
                "a", "alice", seeded.ref("token", "private/alice:v1"), "IfNotPresent", "alice-cred"
            ),
            pod("a", "hello", seeded.ref("noauth", "ns/hello:v1"), "IfNotPresent"),
        ],
        "--runtime-endpoint",
        containerd.endpoint,
    )
    assert code == 0, err
    got = outcomes(data)
    alice, hello = seeded.images.alice.config_digest, seeded.images.hello.config_digest
    assert (got["alice"]["imageRef"], got["hello"]["imageRef"]) == (alice, hello)
    stored = FileRecordStore(root, migrate=False).list_pulled_records().items
    assert sorted(r.image_ref for r in stored) == sorted([alice, hello])
    return alice, hello


# -- ls and check: present, absent ---------------------------------------------------------------


def test_pulled_images_are_present_until_removed_and_check_reports_the_absent_one(
    containerd: Containerd, seeded: Seeded, tmp_path: Path
) -> None:
    root = tmp_path / "node"
    alice, hello = pull_two(containerd, seeded, root)
    endpoint = ("--runtime-endpoint", containerd.endpoint)

    out = records("ls", "-d", str(root), *endpoint)
    assert out.splitlines()[0].split()[-1] == "PRESENT"
    assert lines_starting(out, alice)[0][-1] == "yes"
    assert lines_starting(out, hello)[0][-1] == "yes"
    assert "WITHOUT A RECORD" not in out
    assert counts_line(out) == (
        "2 records (0 for images no longer on the node); 0 images on the node without a record"
    )
    assert "ok: every file" in records("check", "-d", str(root), *endpoint)

    remove(containerd, hello)

    out = records("ls", "-d", str(root), *endpoint)
    assert lines_starting(out, alice)[0][-1] == "yes"
    assert lines_starting(out, hello)[0][-1] == "no"
    assert counts_line(out) == (
        "2 records (1 for images no longer on the node); 0 images on the node without a record"
    )
    data = json.loads(records("ls", "-d", str(root), *endpoint, "-o", "json"))
    assert {r["imageRef"]: r["present"] for r in data["pulledRecords"]} == {
        alice: True,
        hello: False,
    }
    assert data["imagesWithoutRecord"] == []
    assert data["counts"] == {
        "records": 2,
        "recordsForAbsentImages": 1,
        "imagesOnNode": 1,
        "imagesWithoutRecord": 0,
        "preloaded": 0,
        "pendingIntent": 0,
        "recordUnreadable": 0,
    }

    hello_file = FileRecordStore(root, migrate=False).record_path(hello)
    out = records("check", "-d", str(root), *endpoint, code=1)
    assert out.splitlines() == [
        f"absent-image {hello_file}: {hello}: the image is no longer on the node; "
        "`records prune` or image GC removes this record"
    ]
    checked = json.loads(records("check", "-d", str(root), *endpoint, "-o", "json", code=1))
    assert checked == {
        "problems": [
            {
                "path": hello_file,
                "problem": "absent-image",
                "message": "the image is no longer on the node; `records prune` or image GC "
                "removes this record",
                "imageRef": hello,
            }
        ],
        "notes": [],
    }


def test_without_a_runtime_endpoint_the_output_is_as_before(
    containerd: Containerd, seeded: Seeded, tmp_path: Path
) -> None:
    root = tmp_path / "node"
    _alice, hello = pull_two(containerd, seeded, root)
    remove(containerd, hello)

    out = records("ls", "-d", str(root))
    assert "PRESENT" not in out and "without a record" not in out
    assert out.splitlines()[0].split()[-2:] == ["LAST", "UPDATED"]
    data = json.loads(records("ls", "-d", str(root), "-o", "json"))
    assert set(data) == {"pulledRecords", "pullIntents", "errors"}
    assert all("present" not in r for r in data["pulledRecords"])
    assert json.loads(records("check", "-d", str(root), "-o", "json")) == []
    assert records("check", "-d", str(root)).startswith("ok: every file")


def test_the_endpoint_may_come_from_the_environment(
    containerd: Containerd, seeded: Seeded, tmp_path: Path
) -> None:
    root = tmp_path / "node"
    alice, hello = pull_two(containerd, seeded, root)
    remove(containerd, hello)
    env = {ENV: containerd.endpoint}

    out = records("ls", "-d", str(root), env=env)
    assert lines_starting(out, hello)[0][-1] == "no"
    records("check", "-d", str(root), env=env, code=1)
    out = records("prune", "-d", str(root), "--until", "now", env=env)
    assert out.splitlines()[1:] == [
        f"would remove {hello}: its image is no longer on the node",
        "1 record(s) to remove",
    ]
    # A keep list on the command line beats the environment's runtime (no usage error) ...
    out = records("prune", "-d", str(root), "--until", "now", "--keep-image-ref", hello, env=env)
    assert f"would remove {alice}" in out and "would count as preloaded" in out
    # ... but not the command line's own --runtime-endpoint.
    result = cli(
        "records", "prune", "-d", str(root), "--until", "now", "--keep-image-ref", hello,
        "--runtime-endpoint", containerd.endpoint,
    )  # fmt: skip
    assert result.returncode == 2 and "cannot be combined" in result.stderr


# -- images without a record: preloaded, pull in progress, unreadable record ---------------------


def test_an_imported_image_is_listed_as_preloaded(
    containerd: Containerd, seeded: Seeded, test_images: TestImages, tmp_path: Path
) -> None:
    root = tmp_path / "node"
    alice, hello = pull_two(containerd, seeded, root)
    name = f"{LOOPBACK}:9/air-gapped/docker:v1"
    repo_digest = f"{LOOPBACK}:9/air-gapped/docker@{test_images.docker.manifest_digest}"
    imported = containerd.import_image(test_images.layout_dir, "docker", name)
    assert imported == test_images.docker.config_digest
    endpoint = ("--runtime-endpoint", containerd.endpoint)

    out = records("ls", "-d", str(root), *endpoint)
    lines = out.splitlines()
    section = lines.index(f"IMAGES ON THE NODE WITHOUT A RECORD ({containerd.endpoint})")
    assert lines[section + 1].split() == [imported, f"{name},{repo_digest}", "preloaded"]
    assert out.count(PRELOADED_MEANING) == 1
    assert lines_starting(out, alice)[0][-1] == lines_starting(out, hello)[0][-1] == "yes"
    assert counts_line(out) == (
        "2 records (0 for images no longer on the node); 1 image on the node without a record "
        "(preloaded)"
    )

    for fmt, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        data = load(records("ls", "-d", str(root), *endpoint, "-o", fmt))
        assert data["runtimeEndpoint"] == containerd.endpoint
        assert data["imagesWithoutRecord"] == [
            {
                "id": imported,
                "repoTags": [name],
                "repoDigests": [repo_digest],
                "pendingIntent": False,
                "recordUnreadable": False,
                "preloaded": True,
            }
        ]
        assert data["counts"] == {
            "records": 2,
            "recordsForAbsentImages": 0,
            "imagesOnNode": 3,
            "imagesWithoutRecord": 1,
            "preloaded": 1,
            "pendingIntent": 0,
            "recordUnreadable": 0,
        }
        assert all(r["present"] is True for r in data["pulledRecords"])

    # A note, not a problem: check still passes.
    out = records("check", "-d", str(root), *endpoint)
    assert f"note: {imported} ({name},{repo_digest}): no record, preloaded" in out
    assert out.count(PRELOADED_MEANING) == 1
    assert "ok: every file" in out
    checked = json.loads(records("check", "-d", str(root), *endpoint, "-o", "json"))
    assert checked["problems"] == []
    [note] = checked["notes"]
    assert (note["id"], note["note"], note["preloaded"]) == (imported, "preloaded", True)
    assert PRELOADED_MEANING in note["message"]

    # What ls calls preloaded is what explain (the kubelet's decision) calls preloaded.
    explained = json.loads(
        records("explain", "-d", str(root), "--image", name, "--image-ref", imported, "-o", "json")
    )
    assert (explained["mustPull"], explained["result"]) == (False, "credentialPolicyAllowed")


def test_images_named_by_an_intent_or_with_a_broken_record_are_not_preloaded(
    containerd: Containerd, test_images: TestImages, tmp_path: Path
) -> None:
    root = tmp_path / "node"
    store = FileRecordStore(root)
    preloaded = containerd.import_image(test_images.layout_dir, "hello", f"{LOOPBACK}:9/a/one:v1")
    pending = containerd.import_image(test_images.layout_dir, "alice", f"{LOOPBACK}:9/a/two:latest")
    broken = containerd.import_image(test_images.layout_dir, "docker", f"{LOOPBACK}:9/a/three:v1")
    # The intent is spelt as a pod spec would (no tag) and still names the runtime's image.
    store.write_intent(ImagePullIntent(f"{LOOPBACK}:9/a/two"))
    Path(store.record_path(broken)).write_bytes(b"{not a record")
    endpoint = ("--runtime-endpoint", containerd.endpoint)

    out = records("ls", "-d", str(root), *endpoint, code=1)  # 1: the broken file
    statuses = {
        words[0]: " ".join(words[2:])
        for words in (line.split() for line in out.splitlines() if line.startswith("  sha256:"))
    }
    assert statuses == {
        preloaded: "preloaded",
        pending: "pull in progress or interrupted",
        broken: "record unreadable",
    }
    assert "pull in progress or interrupted: a pull intent names it" in out
    assert counts_line(out) == (
        "0 records (0 for images no longer on the node); 3 images on the node without a record "
        "(1 preloaded, 1 pull in progress or interrupted, 1 record unreadable)"
    )
    data = json.loads(records("ls", "-d", str(root), *endpoint, "-o", "json", code=1))
    flags = {
        i["id"]: (i["preloaded"], i["pendingIntent"], i["recordUnreadable"])
        for i in data["imagesWithoutRecord"]
    }
    assert flags == {
        preloaded: (True, False, False),
        pending: (False, True, False),
        broken: (False, False, True),
    }
    assert len(data["errors"]) == 1

    checked = json.loads(records("check", "-d", str(root), *endpoint, "-o", "json", code=1))
    assert [p["problem"] for p in checked["problems"]] == ["undecodable"]
    assert {n["id"]: n["note"] for n in checked["notes"]} == {
        preloaded: "preloaded",
        pending: "pull-in-progress",
        broken: "record-unreadable",
    }


# -- prune ---------------------------------------------------------------------------------------


def test_prune_keeps_the_records_of_the_images_the_runtime_has(
    containerd: Containerd, seeded: Seeded, tmp_path: Path
) -> None:
    root = tmp_path / "node"
    alice, hello = pull_two(containerd, seeded, root)
    remove(containerd, hello)
    endpoint = ("--runtime-endpoint", containerd.endpoint)
    before = snapshot(root)

    out = records("prune", "-d", str(root), *endpoint, "--until", "now")
    assert out.splitlines() == [
        f"keeping the records of the 1 image the runtime at {containerd.endpoint} has",
        f"would remove {hello}: its image is no longer on the node",
        "1 record(s) to remove",
    ]
    assert snapshot(root) == before

    for extra in (["--keep-image-ref", alice], ["--all"]):
        result = cli("records", "prune", "-d", str(root), *endpoint, "--until", "now", *extra)
        assert result.returncode == 2 and "cannot be combined" in result.stderr
        assert result.stdout == ""
    assert snapshot(root) == before

    out = records("prune", "-d", str(root), *endpoint, "--until", "now", "--apply")
    assert f"removed {hello}: its image is no longer on the node" in out
    assert "1 record(s) removed" in out
    left = FileRecordStore(root, migrate=False).list_pulled_records().items
    assert [r.image_ref for r in left] == [alice]
    assert counts_line(records("ls", "-d", str(root), *endpoint)) == (
        "1 record (0 for images no longer on the node); 0 images on the node without a record"
    )
    assert "0 record(s) to remove" in records("prune", "-d", str(root), *endpoint, "--until", "now")


# -- a runtime that cannot be reached ------------------------------------------------------------


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a path short enough for a unix socket name."""
    with tempfile.TemporaryDirectory(prefix="pw", dir="/tmp") as path:
        yield Path(path)


def unreachable(kind: str, where: Path, stack: contextlib.ExitStack) -> tuple[str, str]:
    """An endpoint nothing answers at, and what the error must say about it."""
    path = where / "cri.sock"
    if kind == "missing":
        return f"unix://{path}", f"{path} does not exist"
    if kind == "not-a-socket":
        path.write_text("")
        return f"unix://{path}", f"{path} is not a socket"
    # Bound but never listening: a runtime that died and left its socket behind.
    bound = stack.enter_context(socket.socket(socket.AF_UNIX, socket.SOCK_STREAM))
    bound.bind(str(path))
    return f"unix://{path}", "onnection refused"


@pytest.mark.parametrize("command", ["ls", "check", "prune"])
@pytest.mark.parametrize("kind", ["missing", "not-a-socket", "refused"])
def test_a_runtime_that_cannot_be_reached_is_a_clear_error(
    containerd_components: None, tmp_path: Path, short_dir: Path, command: str, kind: str
) -> None:
    root = tmp_path / "node"
    FileRecordStore(root)
    extra = ["--until", "now"] if command == "prune" else []
    with contextlib.ExitStack() as stack:
        endpoint, why = unreachable(kind, short_dir, stack)
        result = cli("records", command, "-d", str(root), "--runtime-endpoint", endpoint, *extra)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: container runtime unavailable at {endpoint}: ")
    assert why in line


def test_an_endpoint_that_is_not_a_unix_socket_is_a_usage_error(
    containerd_components: None, tmp_path: Path
) -> None:
    root = tmp_path / "node"
    FileRecordStore(root)
    result = cli("records", "ls", "-d", str(root), "--runtime-endpoint", "tcp://127.0.0.1:1")
    assert result.returncode == 2 and result.stdout == ""
    assert "the tcp:// scheme is not supported" in result.stderr
    assert result.stderr.startswith("error: ")


@pytest.mark.parametrize("command", ["ls", "check", "prune"])
def test_help_explains_the_option(command: str) -> None:
    result = cli("records", command, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "--runtime-endpoint unix:///PATH" in text
    assert "[env: CONTAINER_RUNTIME_ENDPOINT]" in text
    assert "never changed" in text
