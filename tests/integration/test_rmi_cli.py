"""``pullwarden rmi`` as crictl/docker users type it: the short ids `images` prints, unique id
prefixes, an ambiguous prefix, --all and --dry-run, on the embedded store with real images
(pulled from the real registries) and on the real containerd over CRI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from pullwarden.runtime import build_image
from tests.integration.containerd import Containerd
from tests.integration.infra import ALICE, Registry, Seeded


def pullwarden(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PULLWARDEN_STORE", "PULLWARDEN_ROOT")}
    env.pop("CONTAINER_RUNTIME_ENDPOINT", None)
    return subprocess.run(
        [sys.executable, "-m", "pullwarden", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def ok(result: subprocess.CompletedProcess[str]) -> list[str]:
    assert result.returncode == 0, (result.returncode, result.stderr)
    assert result.stderr == "", result.stderr
    return result.stdout.splitlines()


def error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def listing(*where: str) -> dict[str, list[str]]:
    """image id → repo tags, from `images -o json`."""
    document = json.loads(pullwarden("images", "-o", "json", *where).stdout)
    return {i["id"]: i["repoTags"] for i in document["images"]}


def short_ids(*where: str) -> dict[str, str]:
    """repo:tag → the IMAGE ID column of the `images` table."""
    rows = ok(pullwarden("images", *where))[1:]
    return {f"{r.split()[0]}:{r.split()[1]}": r.split()[2] for r in rows}


def files_of(directory: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(directory)): p.read_bytes()
        for p in sorted(directory.rglob("*"))
        if p.is_file() and p.name != "lock"
    }


def fill_store(seeded: Seeded, store: Path) -> dict[str, str]:
    """Pull three different images; returns name → image id."""
    wanted = {
        seeded.ref("noauth", "ns/hello:v1"): seeded.images.hello.config_digest,
        seeded.ref("noauth", "ns/docker:v1"): seeded.images.docker.config_digest,
        seeded.ref("token", "private/alice:v1"): seeded.images.alice.config_digest,
    }
    for name in wanted:
        creds = ["--creds", ":".join(ALICE)] if "private/" in name else []
        assert ok(pullwarden("pull", "-q", name, *creds, "--store", str(store))) == [wanted[name]]
    return wanted


def unique_prefix(image_id: str, others: list[str], at_least: int = 4) -> str:
    digits = image_id.removeprefix("sha256:")
    length = at_least
    while any(o.removeprefix("sha256:").startswith(digits[:length]) for o in others):
        length += 1
    return digits[:length]


def test_rmi_takes_the_short_ids_images_prints_and_unique_prefixes(
    seeded: Seeded, tmp_path: Path
) -> None:
    store = tmp_path / "store"
    wanted = fill_store(seeded, store)
    where = ("--store", str(store))
    shown = short_ids(*where)
    hello, docker, alice = list(wanted)
    assert all(wanted_prefix(shown[name], wanted[name]) for name in wanted)

    # the 13 hex digits as `images` shows them
    assert ok(pullwarden("rmi", shown[hello], *where)) == [f"Deleted: {hello}"]
    assert set(listing(*where)) == {wanted[docker], wanted[alice]}
    # the same, written with sha256:
    assert ok(pullwarden("rmi", "sha256:" + shown[alice], *where)) == [f"Deleted: {alice}"]
    assert set(listing(*where)) == {wanted[docker]}
    # the shortest prefix allowed
    prefix = wanted[docker][7:11]
    assert ok(pullwarden("rmi", prefix, *where)) == [f"Deleted: {docker}"]
    assert listing(*where) == {}
    # three hex digits are not an id prefix (a name then, and no such image)
    assert "no such image: abc" in error_line(pullwarden("rmi", "abc", *where), 4)
    gone = "sha256:" + wanted[docker][7:20]
    assert error_line(pullwarden("rmi", gone, *where), 4) == f"error: no such image: {gone}"


def colliding_commands(tmp_path: Path) -> tuple[int, int, str]:
    """Two --cmd values whose images (one file x = "same") have ids with the same first 4 hex
    digits, found by building candidates in a scratch layout; (i, j, shared prefix)."""
    seen: dict[str, int] = {}
    scratch = tmp_path / "scratch"
    for i in range(20000):
        built = build_image(scratch, "probe", files={"x": b"same\n"}, cmd=["/bin/true", str(i)])
        prefix = built.config_digest[7:11]
        if prefix in seen:
            return seen[prefix], i, prefix
        seen[prefix] = i
    raise AssertionError("no two ids share 4 hex digits in 20000 tries")


def test_an_ambiguous_prefix_is_bad_input_and_removes_nothing(
    registry_noauth: Registry, tmp_path: Path
) -> None:
    first, second, prefix = colliding_commands(tmp_path)
    source = tmp_path / "x"
    source.write_text("same\n")
    store = tmp_path / "store"
    where = ("--store", str(store))
    ids: dict[str, str] = {}
    for n in (first, second):
        target = registry_noauth.ref(f"rmi/collide-{n}:v1")
        built = pullwarden(
            "image", "build", "--file", f"{source}:x", "--cmd", json.dumps(["/bin/true", str(n)]),
            "--layout", str(tmp_path / "oci"), "--push", target, "-o", "json",
        )  # fmt: skip
        assert built.returncode == 0, built.stderr
        ids[target] = json.loads(built.stdout)["imageId"]
        assert ok(pullwarden("pull", "-q", target, *where)) == [ids[target]]
    assert all(i[7:11] == prefix for i in ids.values())

    line = error_line(pullwarden("rmi", prefix, *where), 2)
    assert "ambiguous" in line
    for target, image_id in ids.items():
        assert image_id in line and target in line
    assert set(listing(*where)) == set(ids.values())  # nothing removed
    line = error_line(pullwarden("rmi", "sha256:" + prefix, "--dry-run", *where), 2)
    assert "ambiguous" in line

    target, image_id = next(iter(ids.items()))
    longer = unique_prefix(image_id, [i for i in ids.values() if i != image_id])
    assert ok(pullwarden("rmi", longer, *where)) == [f"Deleted: {target}"]
    assert set(listing(*where)) == set(ids.values()) - {image_id}


def test_dry_run_changes_nothing_and_all_removes_everything(seeded: Seeded, tmp_path: Path) -> None:
    store = tmp_path / "store"
    wanted = fill_store(seeded, store)
    where = ("--store", str(store))
    hello = next(iter(wanted))
    before = files_of(store)

    assert ok(pullwarden("rmi", "--dry-run", hello, *where)) == [f"Would delete: {hello}"]
    assert files_of(store) == before
    would = ok(pullwarden("rmi", "--all", "--dry-run", *where))
    assert sorted(would) == sorted(f"Would delete: {name}" for name in wanted)
    assert files_of(store) == before
    missing = pullwarden("rmi", "--dry-run", hello, "127.0.0.1:1/ns/none:v1", *where)
    assert missing.stdout.splitlines() == [f"Would delete: {hello}"]
    assert error_line(missing, 4) == "error: no such image: 127.0.0.1:1/ns/none:v1"
    assert files_of(store) == before

    assert "--all" in error_line(pullwarden("rmi", "--all", hello, *where), 2)
    assert "--all" in error_line(pullwarden("rmi", *where), 2)
    assert files_of(store) == before

    deleted = ok(pullwarden("rmi", "--all", *where))
    assert sorted(deleted) == sorted(f"Deleted: {name}" for name in wanted)
    assert listing(*where) == {}
    assert not list((store / "blobs").rglob("*/*"))  # their blobs went too
    assert ok(pullwarden("rmi", "--all", *where)) == []


def test_rmi_over_cri_by_short_id_dry_run_and_all(
    containerd: Containerd, seeded: Seeded, tmp_path: Path
) -> None:
    where = ("--runtime-endpoint", containerd.endpoint)
    names = {
        seeded.ref("token", "public/hello:v1"): seeded.images.hello.config_digest,
        seeded.ref("token", "private/alice:v1"): seeded.images.alice.config_digest,
    }
    for name, image_id in names.items():
        creds = ["--creds", ":".join(ALICE)] if "private/" in name else []
        assert ok(pullwarden("pull", name, *creds, *where)) == [image_id]
    hello, alice = list(names)
    shown = short_ids(*where)
    assert wanted_prefix(shown[hello], names[hello])

    dry = ok(pullwarden("rmi", "--dry-run", shown[hello], *where))
    assert dry == [f"Would delete: {hello}"]
    assert containerd.cri_status(hello) is not None
    assert ok(pullwarden("rmi", shown[hello], *where)) == [f"Deleted: {hello}"]
    assert containerd.cri_status(hello) is None
    assert containerd.cri_status(alice) is not None

    remaining = {i.id for i in containerd.cri_images()}
    assert names[alice] in remaining
    deleted = ok(pullwarden("rmi", "--all", *where))
    assert f"Deleted: {alice}" in deleted
    assert containerd.cri_images() == []


def wanted_prefix(short: str, image_id: str) -> bool:
    return len(short) == 13 and image_id.startswith("sha256:" + short)
