"""The invariant at every seam, through the real CLI against the real docker-registry.

A pod without credentials must never get a private image this node pulled, whatever happens
around the pull: Ctrl-C or SIGTERM at any moment, another spelling of the image asking while the
pull finishes, SIGKILL between the store's commit and the record write, a full record disk.
Each test is one of the failures a review reproduced (issue 7).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pullwarden.records import FileRecordStore
from pullwarden.runtime import LocalImageService, build_image, make_tar
from tests.integration.infra import ALICE, Registry, Seeded, Skopeo
from tests.integration.test_run_real import outcomes, pod, secret
from tests.integration.throttle import ThrottledLink

BIG = "private/alice:big"
BIG_LAYER = 1_500_000
HOLE = ("Ready", "preloaded")  # a credential-less pod let in as preloaded: the failure
RACE_RUNS = int(os.environ.get("PULLWARDEN_RACE_RUNS", "6"))


@pytest.fixture(scope="module")
def big_image(seeded: Seeded, skopeo: Skopeo, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """alice's private repository gets a 1.5 MB image, slow enough to catch mid-pull."""
    registry = seeded.registries["token"]
    layout = tmp_path_factory.mktemp("big") / "layout"
    build_image(layout, "big", [make_tar({"big.bin": os.urandom(BIG_LAYER)})], gzip_level=0)
    assert registry.token_server is not None
    skopeo.copy(f"oci:{layout}:big", registry, BIG, creds=registry.token_server.seeder)
    return registry


def alice_v1(seeded: Seeded) -> tuple[Registry, str, str, str]:
    """The token registry and alice's private image: (registry, repo:tag, repo, digest)."""
    image = seeded.ref("token", "private/alice:v1")
    digest = seeded.digest("token", "private/alice:v1")
    return seeded.registries["token"], image, image.rsplit(":", 1)[0], digest


def write_docs(path: Path, docs: list[dict[str, Any]]) -> Path:
    path.write_text(yaml.safe_dump_all(docs))
    return path


def run(
    root: Path, manifest: Path, *, config: Path | None = None, timeout: float = 120
) -> tuple[int, dict[str, Any], str]:
    args = ["run", "-f", str(manifest), "--root", str(root), "-o", "json", "--no-node-credentials"]
    if config is not None:
        args += ["--config", str(config)]
    result = subprocess.run(
        [sys.executable, "-m", "pullwarden.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "HOME": str(root.parent)},
    )
    assert "Traceback" not in result.stderr, result.stderr
    data = yaml.safe_load(result.stdout) if result.stdout.strip() else {}
    return result.returncode, data, result.stderr


def parallel_config(path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "serializeImagePulls": False,
                "registryPullQPS": 0,
            }
        )
    )
    return path


def image_state(root: Path, image: str) -> tuple[str, bool, bool]:
    """(image id or "", record exists, intent exists) for ``image`` on the node at ``root``."""
    with LocalImageService(root / "images") as store:
        status = store.image_status(image)
    records = FileRecordStore(root, migrate=False, create=False)
    if status is None:
        return "", False, records.intent_exists(image)
    return status.id, records.get_pulled_record(status.id) is not None, records.intent_exists(image)


def assert_no_hole(root: Path, images: list[str], tmp: Path) -> None:
    """Credential-less pods, every spelling, IfNotPresent and Never: none gets in."""
    docs = [
        pod("x", f"anon-{policy.lower()}-{i}", image, policy)
        for i, image in enumerate(images)
        for policy in ("IfNotPresent", "Never")
    ]
    manifest = write_docs(tmp / f"anon-{time.monotonic_ns()}.yaml", docs)
    code, data, _ = run(root, manifest)
    assert code == 1, data
    for name, got in outcomes(data).items():
        assert (got["outcome"], got["verifiedBy"]) != HOLE, (name, got)
        assert got["outcome"] != "Ready", (name, got)


# -- 1. Ctrl-C / SIGTERM during `pullwarden run` --------------------------------------------


@contextlib.contextmanager
def running(args: list[str], env: dict[str, str]) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def alice_run(link: ThrottledLink, tmp_path: Path) -> tuple[str, Path, list[str]]:
    """(image, root, argv) of a `pullwarden run` in which alice pulls the big image via ``link``."""
    image = f"{link.host}/{BIG}"
    root = tmp_path / "node"
    manifest = write_docs(
        tmp_path / "alice.yaml",
        [
            secret("a", "alice-cred", link.host, ALICE),
            pod("a", "alice", image, "Always", "alice-cred"),
        ],
    )
    argv = [sys.executable, "-m", "pullwarden.cli", "run", "-f", str(manifest)]
    return image, root, [*argv, "--root", str(root), "--no-node-credentials"]


@pytest.mark.parametrize(
    ("sig", "moment"),
    [
        (signal.SIGINT, "manifest"),
        (signal.SIGINT, "blobs"),
        (signal.SIGINT, "end"),
        (signal.SIGTERM, "blobs"),
    ],
)
def test_interrupted_run_never_leaves_an_unrecorded_image(
    big_image: Registry, tmp_path: Path, sig: signal.Signals, moment: str
) -> None:
    with ThrottledLink(("127.0.0.1", big_image.port), rate=400_000) as link:
        image, root, args = alice_run(link, tmp_path)
        if moment == "manifest":
            link.rate = 2_000  # the token and manifest answers crawl
        with running(args, {**os.environ, "HOME": str(tmp_path)}) as proc:
            pulling = root / "image_manager" / "pulling"
            deadline = time.monotonic() + 30
            while not (pulling.is_dir() and any(pulling.iterdir())):
                assert time.monotonic() < deadline and proc.poll() is None, "no intent written"
                time.sleep(0.01)
            if moment == "blobs":
                while link.forwarded < BIG_LAYER // 3:
                    assert time.monotonic() < deadline and proc.poll() is None
                    time.sleep(0.01)
            elif moment == "end":
                while link.forwarded < BIG_LAYER * 0.98 and proc.poll() is None:
                    assert time.monotonic() < deadline
                    time.sleep(0.002)
            sent = time.monotonic()
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=10)
            took = time.monotonic() - sent
            print(f"{sig.name} at {moment}: exit {proc.returncode} after {took:.2f} s")
        link.rate = None
        if proc.returncode == 0:  # the pull finished before the signal landed
            assert moment == "end"
        else:
            assert proc.returncode == 128 + sig, stderr
            assert took < 2.0, took
            assert "Traceback" not in stderr, stderr
            assert f"interrupted by {sig.name}" in stderr
            assert "left without their image" in stderr and "a/alice" in stderr
        image_id, recorded, intent = image_state(root, image)
        assert not image_id or recorded or intent, "pulled, yet neither recorded nor intended"
        digest_name = f"{link.host}/private/alice@{big_manifest_digest(root, image_id)}"
        spellings = [image] + ([digest_name, image_id] if image_id else [])
        assert_no_hole(root, spellings, tmp_path)


def big_manifest_digest(root: Path, image_id: str) -> str:
    if not image_id:
        return "sha256:" + "0" * 64
    with LocalImageService(root / "images") as store:
        image = next(i for i in store.list_images() if i.id == image_id)
    return image.repo_digests[0].rsplit("@", 1)[1]


# -- 2. another spelling while the pull finishes -------------------------------------------


def test_other_spellings_never_slip_in_while_a_pull_finishes(
    seeded: Seeded, tmp_path: Path
) -> None:
    registry, image, repo, digest = alice_v1(seeded)
    config_id = seeded.images.alice.config_digest
    spellings = [f"{repo}@{digest}", f"{image}@{digest}", config_id]
    config = parallel_config(tmp_path / "kubelet.yaml")
    leaks: list[tuple[str, dict[str, Any]]] = []
    checked = 0
    for attempt in range(RACE_RUNS):
        root = tmp_path / f"node-{attempt}"
        docs: list[dict[str, Any]] = [
            secret("a", "alice-cred", registry.host, ALICE),
            pod("a", "alice", image, "IfNotPresent", "alice-cred"),
        ]
        for i in range(40):
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"namespace": "x", "name": f"b{i}"},
                    "spec": {
                        "containers": [
                            {
                                "name": f"c{j}",
                                "image": spellings[(i + j) % 3],
                                "imagePullPolicy": "IfNotPresent",
                            }
                            for j in range(12)
                        ]
                    },
                }
            )
        manifest = write_docs(tmp_path / f"race-{attempt}.yaml", docs)
        code, data, _ = run(root, manifest, config=config)
        for p in data["pods"]:
            if p["name"] == "alice":
                assert p["containers"][0]["outcome"] == "Ready"
                continue
            for c in p["containers"]:
                checked += 1
                if c["outcome"] == "Ready":
                    leaks.append((p["name"], c))
        assert code == 1
    assert checked == RACE_RUNS * 40 * 12
    assert leaks == []


# -- 3. SIGKILL between the store's commit and the record write -----------------------------

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from pullwarden.config import default_kubelet_config
    from pullwarden.node import Node
    from pullwarden.objects import load_objects

    root, manifest = Path(sys.argv[1]), Path(sys.argv[2])
    with Node(root, default_kubelet_config(), node_credentials=False) as node:
        store = node.images
        real_pull = store.pull_image

        def pull_then_die(*args, **kwargs):
            ref = real_pull(*args, **kwargs)   # committed: index.json names the image
            os.kill(os.getpid(), signal.SIGKILL)  # ... and the record is never written
            return ref

        store.pull_image = pull_then_die
        node.run(load_objects([manifest]))
    """
)


@pytest.mark.parametrize("raw", ["tag", "digest", "tag+digest"])
def test_kill_after_commit_then_every_spelling_is_verified(
    seeded: Seeded, tmp_path: Path, raw: str
) -> None:
    registry, image, repo, digest = alice_v1(seeded)
    pulled_as = {"tag": image, "digest": f"{repo}@{digest}", "tag+digest": f"{image}@{digest}"}[raw]
    root = tmp_path / "node"
    manifest = write_docs(
        tmp_path / "alice.yaml",
        [
            secret("a", "alice-cred", registry.host, ALICE),
            pod("a", "alice", pulled_as, "IfNotPresent", "alice-cred"),
        ],
    )
    proc = subprocess.run(
        [sys.executable, "-c", KILLER, str(root), str(manifest)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    image_id, recorded, intent = image_state(root, pulled_as)
    assert image_id == seeded.images.alice.config_digest and not recorded and intent

    # The restarted node (housekeeping) must not let any spelling in without credentials.
    spellings = [image, f"{repo}@{digest}", f"{image}@{digest}", image_id]
    assert_no_hole(root, spellings, tmp_path)
    records = FileRecordStore(root, migrate=False)
    assert records.get_pulled_record(image_id) is not None
    assert records.list_intents().items == []
    # ...while alice's secret still gets her image (verified by a manifest round-trip)
    code, data, _ = run(root, manifest)
    assert code == 0 and outcomes(data)["alice"]["verifiedBy"] == "pull"


# -- 4. a full record disk -----------------------------------------------------------------


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """``tmp_path/mnt``: a 64 KiB tmpfs (root only); filled by the test as it likes."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(mnt)],
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {result.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def fill(directory: Path, leave_pages: int) -> list[Path]:
    """Fill the filesystem of ``directory`` with one-page files, then free ``leave_pages``."""
    fillers: list[Path] = []
    with contextlib.suppress(OSError):
        while True:
            path = directory / f"filler-{len(fillers)}"
            fillers.append(path)
            with open(path, "wb") as f:
                f.write(b"x" * 4096)
    fillers.pop().unlink(missing_ok=True)
    for path in fillers[:leave_pages]:
        path.unlink()
    return fillers[leave_pages:]


def test_full_record_disk_keeps_the_image_verified(
    seeded: Seeded, tmp_path: Path, tiny_tmpfs: Path
) -> None:
    registry, image, repo, digest = alice_v1(seeded)
    root = tmp_path / "node"
    root.mkdir()
    (root / "image_manager").symlink_to(tiny_tmpfs)
    (tiny_tmpfs / "pulling").mkdir(mode=0o700)
    (tiny_tmpfs / "pulled").mkdir(mode=0o700)
    fillers = fill(tiny_tmpfs, leave_pages=1)  # room for the intent, none for the record
    alice = secret("a", "alice-cred", registry.host, ALICE)
    first = write_docs(
        tmp_path / "first.yaml",
        [
            alice,
            pod("a", "alice", image, "IfNotPresent", "alice-cred"),
            pod("x", "anon-digest", f"{repo}@{digest}", "IfNotPresent"),
        ],
    )
    code, data, _ = run(root, first)
    assert code == 1
    got = outcomes(data)
    assert got["alice"]["outcome"] == "Ready"  # the pull worked; its record did not
    assert got["anon-digest"]["outcome"] != "Ready"
    image_id, recorded, intent = image_state(root, image)
    assert image_id and not recorded and intent

    # Restarted, disk still full: housekeeping cannot write the record; a failed pull of the
    # same spelling must not delete the leftover intent.
    retry = write_docs(tmp_path / "retry.yaml", [pod("x", "anon-same", image, "Always")])
    _, data, _ = run(root, retry)
    assert outcomes(data)["anon-same"]["outcome"] != "Ready"
    assert image_state(root, image)[2], "a failed pull deleted an intent it did not create"
    assert_no_hole(root, [image, f"{repo}@{digest}", image_id], tmp_path)

    for path in fillers:
        path.unlink()
    assert_no_hole(root, [image, f"{repo}@{digest}", image_id], tmp_path)
    assert FileRecordStore(root, migrate=False).get_pulled_record(image_id) is not None


# -- 5. two `pullwarden run` on one root ---------------------------------------------------


def test_second_run_on_the_same_root_is_refused(big_image: Registry, tmp_path: Path) -> None:
    with ThrottledLink(("127.0.0.1", big_image.port), rate=300_000) as link:
        image, root, args = alice_run(link, tmp_path)
        with running(args, {**os.environ, "HOME": str(tmp_path)}) as first:
            deadline = time.monotonic() + 30
            while link.forwarded == 0:
                assert time.monotonic() < deadline and first.poll() is None
                time.sleep(0.01)
            anon = write_docs(tmp_path / "anon.yaml", [pod("x", "anon", image, "IfNotPresent")])
            code, _, stderr = run(root, anon)
            assert code == 3
            assert f"pid {first.pid}" in stderr and "one node per root" in stderr
            link.rate = None
            first.communicate(timeout=60)
            assert first.returncode == 0
