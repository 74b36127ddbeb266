"""The invariant at every seam again, with the images in a real containerd reached over CRI.

test_seams_real.py attacks pullwarden's embedded image store; here ``pullwarden run
--runtime-endpoint`` hands every pull to containerd 1.6 (``CRIImageService``), which answers
``ImageStatus`` and ``ListImages`` to anyone: a private image it holds is one ``IfNotPresent``
away from every pod unless pullwarden's records and intents say who pulled it.  A pod without
credentials must never get such an image -- not after Ctrl-C or SIGTERM while containerd pulls
(containerd may even finish the pull after its client left), not when Ctrl-C or containerd's
death hits the lookup that follows ``PullImage``'s answer, not while another spelling asks
during a parallel pull (by chance, and with the commit-to-record window held open), not after
SIGKILL between ``PullImage``'s answer and the record write, not when containerd itself goes
away mid-pull.  The last tests run image GC against containerd: what it removes goes from
containerd and from the records, what a pod uses stays.

``test_control_…`` shows the hole the others look for: a private image containerd holds with
neither record nor intent is let in by policy (NeverVerifyPreloadedImages).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from pullwarden.records import FileRecordStore
from pullwarden.runtime import BuiltImage, build_image, make_tar
from tests.integration.containerd import Containerd
from tests.integration.infra import ALICE, BOB, Registry, Seeded, Skopeo
from tests.integration.test_run_real import outcomes, pod, secret
from tests.integration.test_seams_real import HOLE, alice_v1, running, write_docs
from tests.integration.throttle import ThrottledLink

BIG = "private/alice:big-cri"  # not test_seams_real's tag: its module fixture pushes another
BIG_LAYER = 1_500_000
RATE = 400_000  # bytes per second through the link: a 1.5 MB pull takes about 4 s
RACE_RUNS = max(1, int(os.environ.get("PULLWARDEN_RACE_RUNS", "6")) // 2)
GRANTS = ("pulled",)  # the record directory: a file there lets pods in without a pull


@dataclass(frozen=True)
class BigImage:
    registry: Registry
    built: BuiltImage

    def digest_name(self, host: str) -> str:
        return f"{host}/{BIG.split(':', 1)[0]}@{self.built.manifest_digest}"

    def spellings(self, host: str) -> list[str]:
        """Tag, repo@digest, tag@digest and the image id of the big image behind ``host``."""
        tag = f"{host}/{BIG}"
        return [tag, self.digest_name(host), f"{tag}@{self.built.manifest_digest}", self.id]

    @property
    def id(self) -> str:
        return self.built.config_digest


@pytest.fixture(scope="module")
def big(seeded: Seeded, skopeo: Skopeo, tmp_path_factory: pytest.TempPathFactory) -> BigImage:
    """alice's private repository gets a 1.5 MB image, slow enough to catch mid-pull."""
    registry = seeded.registries["token"]
    layout = tmp_path_factory.mktemp("big-cri") / "layout"
    layer = make_tar({"big.bin": os.urandom(BIG_LAYER)})
    built = build_image(layout, "big", [layer], gzip_level=0)
    assert registry.token_server is not None
    skopeo.copy(f"oci:{layout}:big", registry, BIG, creds=registry.token_server.seeder)
    return BigImage(registry, built)


# -- helpers ----------------------------------------------------------------------------------


def cli(
    root: Path, *args: str, timeout: float = 120, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "pullwarden.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "HOME": str(root.parent), **(env or {})},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def cri_run(
    root: Path, manifest: Path, endpoint: str | None, *, config: Path | None = None
) -> tuple[int, dict[str, Any], str]:
    """``pullwarden run -o json`` on ``root`` with images in the CRI runtime at ``endpoint``."""
    args = ["run", "-f", str(manifest), "--root", str(root), "-o", "json", "--no-node-credentials"]
    if endpoint is not None:
        args += ["--runtime-endpoint", endpoint]
    if config is not None:
        args += ["--config", str(config)]
    result = cli(root, *args)
    data = yaml.safe_load(result.stdout) if result.stdout.strip() else {}
    return result.returncode, data, result.stderr


def kubelet_config(path: Path, **fields: Any) -> Path:
    doc = {"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration"}
    path.write_text(yaml.safe_dump(doc | fields))
    return path


def records(root: Path) -> FileRecordStore:
    return FileRecordStore(root, migrate=False, create=False)


def image_state(containerd: Containerd, root: Path, image: str) -> tuple[str, bool, bool]:
    """(containerd's image id or "", pull record exists, intent exists) for ``image``."""
    status = containerd.cri_status(image)
    store = records(root)
    intent = store.intent_exists(image)
    if status is None:
        return "", False, intent
    return status.id, store.get_pulled_record(status.id) is not None, intent


def record_files(root: Path) -> list[str]:
    """Every file under the record directories (what could let a pod in without a pull)."""
    found: list[str] = []
    for name in GRANTS:
        directory = root / "image_manager" / name
        if directory.is_dir():
            found += sorted(str(p.relative_to(root)) for p in directory.rglob("*") if p.is_file())
    return found


def assert_no_hole(root: Path, images: list[str], tmp: Path, endpoint: str) -> dict[str, Any]:
    """Credential-less pods, every spelling, IfNotPresent and Never: none gets in."""
    docs = [
        pod("x", f"anon-{policy.lower()}-{i}", image, policy)
        for i, image in enumerate(images)
        for policy in ("IfNotPresent", "Never")
    ]
    manifest = write_docs(tmp / f"anon-{time.monotonic_ns()}.yaml", docs)
    code, data, stderr = cri_run(root, manifest, endpoint)
    assert code == 1, (data, stderr)
    got = outcomes(data)
    assert len(got) == 2 * len(images)
    for name, container in got.items():
        assert (container["outcome"], container["verifiedBy"]) != HOLE, (name, container)
        assert container["outcome"] != "Ready", (name, container)
    return got


def alice_gets_her_image(root: Path, image: str, host: str, tmp: Path, endpoint: str) -> str:
    """alice's IfNotPresent pod runs; returns how it was verified."""
    manifest = write_docs(
        tmp / f"alice-{time.monotonic_ns()}.yaml",
        [
            secret("a", "alice-cred", host, ALICE),
            pod("a", "alice", image, "IfNotPresent", "alice-cred"),
        ],
    )
    code, data, stderr = cri_run(root, manifest, endpoint)
    assert code == 0, (data, stderr)
    verified: str = outcomes(data)["alice"]["verifiedBy"]
    return verified


def alice_big_argv(
    link: ThrottledLink, tmp: Path, endpoint: str, *then: str
) -> tuple[str, Path, list[str]]:
    """(image, root, argv) of a `pullwarden run` in which alice pulls the big image via ``link``
    (then credential-less pods named ``then`` ask for it, IfNotPresent)."""
    image = f"{link.host}/{BIG}"
    root = tmp / "node"
    manifest = write_docs(
        tmp / "alice-big.yaml",
        [
            secret("a", "alice-cred", link.host, ALICE),
            pod("a", "alice", image, "Always", "alice-cred"),
            *(pod("x", name, image, "IfNotPresent") for name in then),
        ],
    )
    argv = [sys.executable, "-m", "pullwarden.cli", "run", "-f", str(manifest), "-o", "json"]
    argv += ["--root", str(root), "--no-node-credentials", "--runtime-endpoint", endpoint]
    return image, root, argv


def wait_for(condition: Any, what: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"pullwarden exited ({proc.returncode}) before {what}"
        assert time.monotonic() < deadline, f"no {what} within {timeout} s"
        time.sleep(0.005)


def intent_written(root: Path) -> bool:
    pulling = root / "image_manager" / "pulling"
    return pulling.is_dir() and any(pulling.iterdir())


def quiet(link: ThrottledLink, still: float = 0.4, timeout: float = 10) -> None:
    """Wait until nothing has crossed ``link`` for ``still`` seconds (containerd stopped)."""
    deadline = time.monotonic() + timeout
    seen, since = link.forwarded, time.monotonic()
    while time.monotonic() - since < still and time.monotonic() < deadline:
        time.sleep(0.05)
        if link.forwarded != seen:
            seen, since = link.forwarded, time.monotonic()


# -- 0. the check can fail: a preloaded image is let in by policy ----------------------------


def test_control_a_preloaded_private_image_is_let_in_by_policy(
    seeded: Seeded, containerd: Containerd, tmp_path: Path
) -> None:
    """Without record or intent, containerd's image counts as preloaded: policy lets pods in.

    That is the hole every other test looks for (NeverVerifyPreloadedImages, as designed), so
    the checks below can see it when it opens.
    """
    _, image, _, _ = alice_v1(seeded)
    image_id = containerd.import_image(seeded.images.layout_dir, "alice", image)
    manifest = write_docs(tmp_path / "anon.yaml", [pod("x", "anon", image, "IfNotPresent")])
    code, data, stderr = cri_run(tmp_path / "node", manifest, containerd.endpoint)
    got = outcomes(data)["anon"]
    assert code == 0, stderr
    assert (got["outcome"], got["verifiedBy"]) == HOLE
    assert got["imageRef"] == image_id


# -- 1. Ctrl-C / SIGTERM while containerd pulls ----------------------------------------------


@pytest.mark.parametrize(
    ("sig", "moment"),
    [
        pytest.param(signal.SIGINT, "manifest", id="SIGINT-manifest"),
        pytest.param(signal.SIGINT, "blobs", id="SIGINT-blobs"),
        pytest.param(signal.SIGINT, "end", id="SIGINT-end"),
        pytest.param(signal.SIGTERM, "blobs", id="SIGTERM-blobs"),
    ],
)
def test_interrupted_cri_run_never_leaves_an_unverified_image(
    big: BigImage,
    containerd: Containerd,
    tmp_path: Path,
    sig: signal.Signals,
    moment: str,
) -> None:
    endpoint = containerd.endpoint
    with ThrottledLink(("127.0.0.1", big.registry.port), rate=RATE) as link:
        image, root, argv = alice_big_argv(link, tmp_path, endpoint)
        if moment == "manifest":
            link.rate = 2_000  # the 401 and the manifest crawl
        with running(argv, {**os.environ, "HOME": str(tmp_path)}) as proc:
            wait_for(lambda: intent_written(root), "an intent", proc)
            if moment == "manifest":
                wait_for(
                    lambda: link.wait_for_request("/manifests/", 0.01), "a manifest request", proc
                )
            elif moment == "blobs":
                wait_for(lambda: link.forwarded >= BIG_LAYER // 3, "a third of the layer", proc)
            else:  # held a few KB short of the layer's end
                link.stall_after = BIG_LAYER
                wait_for(lambda: link.forwarded >= BIG_LAYER, "the end of the layer", proc)
            sent = time.monotonic()
            proc.send_signal(sig)
            _, stderr = proc.communicate(timeout=10)
            took = time.monotonic() - sent
        link.rate = None  # should containerd go on with the pull, let it finish now
        link.resume()
        quiet(link)
        image_id, recorded, intent = image_state(containerd, root, image)
        print(
            f"\n{sig.name} at {moment}: exit {proc.returncode} after {took:.3f} s; containerd "
            f"{'has' if image_id else 'lacks'} the image, record {recorded}, intent {intent}"
        )
        assert proc.returncode == 128 + sig, stderr
        assert took < 2.0, took
        assert "Traceback" not in stderr, stderr
        assert f"interrupted by {sig.name}" in stderr
        assert "left without their image" in stderr and "a/alice" in stderr
        # containerd may still commit what it was asked for: the intent must stay for that.
        assert intent, "an interrupted CRI pull lost its intent"
        assert not recorded
        assert not image_id or image_id == big.id

        got = assert_no_hole(root, big.spellings(link.host), tmp_path, endpoint)
        if image_id:  # housekeeping found it: pulled by this node, so every pod verifies
            assert records(root).get_pulled_record(image_id) is not None
            assert got["anon-ifnotpresent-0"]["outcome"] == "ErrImagePull"
        assert alice_gets_her_image(root, image, link.host, tmp_path, endpoint) == "pull"
        assert containerd.cri_status(image) is not None


def test_containerd_finishing_an_abandoned_pull_counts_as_this_nodes_pull(
    big: BigImage, containerd: Containerd, tmp_path: Path
) -> None:
    """The pull is cancelled by SIGINT; containerd then has the image (here: a second client
    pulls it, as containerd would by finishing the pull itself).  The leftover intent must make
    it this node's pull -- verified for everyone -- never a preloaded image."""
    endpoint = containerd.endpoint
    with ThrottledLink(("127.0.0.1", big.registry.port), rate=RATE) as link:
        image, root, argv = alice_big_argv(link, tmp_path, endpoint)
        with running(argv, {**os.environ, "HOME": str(tmp_path)}) as proc:
            wait_for(lambda: link.forwarded >= BIG_LAYER // 3, "a third of the layer", proc)
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            _, stderr = proc.communicate(timeout=10)
            took = time.monotonic() - sent
        assert proc.returncode == 130, stderr
        print(f"\nSIGINT mid-blob: exit after {took:.3f} s")
        link.rate = None
        _pull_as_alice(containerd, image)  # containerd now holds what the node asked for
        image_id, recorded, intent = image_state(containerd, root, image)
        assert image_id == big.id and not recorded and intent
        got = assert_no_hole(root, big.spellings(link.host), tmp_path, endpoint)
        assert got["anon-ifnotpresent-0"]["outcome"] == "ErrImagePull"
        record = records(root).get_pulled_record(image_id)
        assert record is not None, "housekeeping did not turn the intent into a record"
        assert records(root).list_intents().items == []
        assert alice_gets_her_image(root, image, link.host, tmp_path, endpoint) == "pull"


def _pull_as_alice(containerd: Containerd, image: str) -> None:
    """A CRI PullImage with alice's credentials, behind pullwarden's back."""
    from cri_api.v1 import api_pb2

    request = api_pb2.PullImageRequest(
        image=api_pb2.ImageSpec(image=image),
        auth=api_pb2.AuthConfig(username=ALICE[0], password=ALICE[1]),
    )
    containerd.image_service.PullImage(request, timeout=60)


# containerd has answered PullImage (the image is committed) and pullwarden looks the returned
# ref up with ImageStatus (CRIImageService._settled_ref) before it records the pull.  Two things
# can happen in that lookup: Ctrl-C while a busy containerd has not answered it yet, or
# containerd dying.  The real CLI runs; the script only picks the moment (CONTAINERD_PID).
# Until 2d94d48 the failed lookup made pull_image raise as if nothing had been committed: the
# intent went, no record came, and every credential-less pod got the image by policy.
AFTER_ANSWER = textwrap.dedent(
    """
    import os, signal, sys, threading, time
    from pullwarden.cli import main
    from pullwarden.runtime import CRIImageService

    containerd, what = int(os.environ["CONTAINERD_PID"]), os.environ["AFTER_ANSWER"]
    real_settled = CRIImageService._settled_ref

    def after_the_answer(self, image, ref):
        if what == "sigint":  # containerd is busy; Ctrl-C comes while the lookup waits
            os.kill(containerd, signal.SIGSTOP)
            threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
            threading.Timer(1.0, os.kill, (containerd, signal.SIGCONT)).start()
        else:  # containerd dies
            os.kill(containerd, signal.SIGKILL)
            time.sleep(0.2)
        return real_settled(self, image, ref)

    CRIImageService._settled_ref = after_the_answer
    sys.argv = ["pullwarden", *sys.argv[1:]]
    main()
    """
)


@pytest.mark.parametrize("what", ["sigint", "sigkill-containerd"])
def test_failed_lookup_after_containerd_answered_keeps_the_image_verified(
    seeded: Seeded, containerd: Containerd, tmp_path: Path, what: str
) -> None:
    registry, image, repo, digest = alice_v1(seeded)
    image_id = seeded.images.alice.config_digest
    root = tmp_path / "node"
    manifest = write_docs(
        tmp_path / "alice.yaml",
        [
            secret("a", "alice-cred", registry.host, ALICE),
            pod("a", "alice", image, "Always", "alice-cred"),
        ],
    )
    args = ["run", "-f", str(manifest), "--root", str(root), "-o", "json", "--no-node-credentials"]
    pid = containerd.pid
    assert pid is not None
    try:
        proc = subprocess.run(
            [sys.executable, "-c", AFTER_ANSWER, *args, "--runtime-endpoint", containerd.endpoint],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={
                **os.environ,
                "HOME": str(tmp_path),
                "CONTAINERD_PID": str(pid),
                "AFTER_ANSWER": what,
            },
        )
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert "Traceback" not in proc.stderr, proc.stderr
    if what == "sigint":
        assert proc.returncode == 130, proc.stderr
    else:  # containerd had answered: alice has her image, though the lookup failed
        assert proc.returncode == 0, proc.stderr
        assert outcomes(json.loads(proc.stdout))["alice"]["verifiedBy"] == "pull"
    containerd.start()  # after SIGKILL: the restarted runtime, same root
    found, recorded, intent = image_state(containerd, root, image)
    print(f"\n{what}: containerd has {found or 'nothing'}, record {recorded}, intent {intent}")
    assert found == image_id, "containerd answered PullImage, so it holds the image"
    assert recorded or intent, "in containerd, yet neither recorded nor intended: preloaded"
    spellings = [image, f"{repo}@{digest}", f"{image}@{digest}", image_id]
    assert_no_hole(root, spellings, tmp_path, containerd.endpoint)


# -- 2. other spellings while a parallel pull finishes ---------------------------------------


def test_other_spellings_never_slip_in_while_a_cri_pull_finishes(
    seeded: Seeded, containerd: Containerd, tmp_path: Path
) -> None:
    registry, image, repo, digest = alice_v1(seeded)
    config_id = seeded.images.alice.config_digest
    spellings = [f"{repo}@{digest}", f"{image}@{digest}", config_id]
    # The endpoint comes from the kubelet config here (containerRuntimeEndpoint), not the flag.
    config = kubelet_config(
        tmp_path / "kubelet.yaml",
        serializeImagePulls=False,
        registryPullQPS=0,
        containerRuntimeEndpoint=containerd.endpoint,
    )
    leaks: list[tuple[str, dict[str, Any]]] = []
    checked = 0
    started = time.monotonic()
    for attempt in range(RACE_RUNS):
        if attempt:
            containerd.remove_all_images()
        root = tmp_path / f"node-{attempt}"
        docs: list[dict[str, Any]] = [
            secret("a", "alice-cred", registry.host, ALICE),
            pod("a", "alice", image, "IfNotPresent", "alice-cred"),
        ]
        for i in range(40):
            containers = [
                {
                    "name": f"c{j}",
                    "image": spellings[(i + j) % 3],
                    "imagePullPolicy": "IfNotPresent",
                }
                for j in range(12)
            ]
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "metadata": {"namespace": "x", "name": f"b{i}"},
                    "spec": {"containers": containers},
                }
            )
        manifest = write_docs(tmp_path / f"race-{attempt}.yaml", docs)
        code, data, stderr = cri_run(root, manifest, None, config=config)
        assert code == 1, stderr
        assert not (root / "images").exists(), "the embedded store was used, not containerd"
        assert image in containerd.image_names()
        for p in data["pods"]:
            if p["name"] == "alice":
                assert p["containers"][0]["outcome"] == "Ready"
                continue
            for c in p["containers"]:
                checked += 1
                if c["outcome"] == "Ready":
                    leaks.append((p["name"], c))
    print(
        f"\n{RACE_RUNS} race runs, {checked} containers, {len(leaks)} leaks, "
        f"{time.monotonic() - started:.1f} s"
    )
    assert checked == RACE_RUNS * 40 * 12
    assert leaks == []


# The same race with the window held open: alice's PullImage has been answered (containerd
# holds and lists the image) and her record is not written until every other pod has decided.
IN_THE_WINDOW = textwrap.dedent(
    """
    import json, sys, threading
    from pathlib import Path
    from pullwarden.cli.node import outcome_json
    from pullwarden.config import load_kubelet_config
    from pullwarden.node import Node
    from pullwarden.objects import load_objects
    from pullwarden.records import FileRecordStore

    root, config, endpoint, image, first, then = sys.argv[1:]
    committed, decided = threading.Event(), threading.Event()
    with Node(Path(root), load_kubelet_config(Path(config)), node_credentials=False,
              runtime_endpoint=endpoint) as node:
        real_pull = node.images.pull_image

        def pull(ref, *args, **kwargs):
            answer = real_pull(ref, *args, **kwargs)
            if ref == image and not committed.is_set():
                committed.set()  # containerd holds the image; no record yet
                assert decided.wait(60), "the other pods never finished"
            return answer

        node.images.pull_image = pull
        alice = []
        run_alice = lambda: alice.extend(node.run(load_objects([Path(first)])))
        worker = threading.Thread(target=run_alice)
        worker.start()
        assert committed.wait(60), "alice's pull never came back"
        status = node.images.image_status(image)
        assert status is not None, "containerd does not list the image it answered for"
        records = FileRecordStore(Path(root), migrate=False, create=False)
        assert records.get_pulled_record(status.id) is None, "recorded already"
        others = node.run(load_objects([Path(then)]))
        decided.set()
        worker.join(60)
    print(json.dumps(outcome_json(alice + others)))
    """
)


def test_every_spelling_asking_between_commit_and_record_is_verified(
    seeded: Seeded, containerd: Containerd, tmp_path: Path
) -> None:
    registry, image, repo, digest = alice_v1(seeded)
    image_id = seeded.images.alice.config_digest
    spellings = [image, f"{repo}@{digest}", f"{image}@{digest}", image_id]
    config = kubelet_config(tmp_path / "kubelet.yaml", serializeImagePulls=False, registryPullQPS=0)
    root = tmp_path / "node"
    first = write_docs(
        tmp_path / "alice.yaml",
        [
            secret("a", "alice-cred", registry.host, ALICE),
            pod("a", "alice", image, "IfNotPresent", "alice-cred"),
        ],
    )
    others: list[dict[str, Any]] = [secret("b", "bob-cred", registry.host, BOB)]
    for i, spelling in enumerate(spellings):
        for policy in ("IfNotPresent", "Never"):
            others.append(pod("x", f"anon-{policy.lower()}-{i}", spelling, policy))
            others.append(pod("b", f"bob-{policy.lower()}-{i}", spelling, policy, "bob-cred"))
    then = write_docs(tmp_path / "others.yaml", others)
    argv = [str(root), str(config), containerd.endpoint, image, str(first), str(then)]
    proc = subprocess.run(
        [sys.executable, "-c", IN_THE_WINDOW, *argv],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    got = outcomes(json.loads(proc.stdout))
    assert got.pop("alice")["verifiedBy"] == "pull"
    assert len(got) == 4 * len(spellings)
    for name, container in got.items():
        assert container["outcome"] != "Ready", (name, container)
    assert got["anon-never-0"]["outcome"] == "ErrImageNeverPull"
    assert records(root).get_pulled_record(image_id) is not None
    assert records(root).list_intents().items == []
    assert image in containerd.image_names()


# -- 3. SIGKILL between PullImage's answer and the record write --------------------------------

KILLER = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path
    from pullwarden.config import default_kubelet_config
    from pullwarden.node import Node
    from pullwarden.objects import load_objects

    root, manifest, endpoint = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3]
    config = default_kubelet_config()
    with Node(root, config, node_credentials=False, runtime_endpoint=endpoint) as node:
        store = node.images
        real_pull = store.pull_image

        def pull_then_die(*args, **kwargs):
            ref = real_pull(*args, **kwargs)   # containerd answered: the image is committed
            os.kill(os.getpid(), signal.SIGKILL)  # ... and the record is never written
            return ref

        store.pull_image = pull_then_die
        node.run(load_objects([manifest]))
    """
)


@pytest.mark.parametrize("raw", ["tag", "digest", "tag+digest"])
def test_kill_after_cri_pull_then_every_spelling_is_verified(
    seeded: Seeded, containerd: Containerd, tmp_path: Path, raw: str
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
        [sys.executable, "-c", KILLER, str(root), str(manifest), containerd.endpoint],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    image_id = seeded.images.alice.config_digest
    status = containerd.cri_status(pulled_as)
    assert status is not None and status.id == image_id, "containerd does not have the image"
    store = records(root)
    assert store.get_pulled_record(image_id) is None and store.intent_exists(pulled_as)
    assert record_files(root) == []

    # The restarted node (housekeeping) must not let any spelling in without credentials.
    spellings = [image, f"{repo}@{digest}", f"{image}@{digest}", image_id]
    got = assert_no_hole(root, spellings, tmp_path, containerd.endpoint)
    assert got["anon-ifnotpresent-0"]["outcome"] == "ErrImagePull"
    store = FileRecordStore(root, migrate=False)
    record = store.get_pulled_record(image_id)
    assert record is not None, "housekeeping did not write the record"
    assert store.list_intents().items == []
    # ...while alice's secret still gets her image (verified by a manifest round-trip)
    assert alice_gets_her_image(root, pulled_as, registry.host, tmp_path, containerd.endpoint) == (
        "pull"
    )


# -- 4. containerd goes away -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["SIGKILL", "stop"])
def test_containerd_gone_mid_pull_keeps_the_intent(
    big: BigImage, containerd: Containerd, tmp_path: Path, how: str
) -> None:
    endpoint = containerd.endpoint
    with ThrottledLink(("127.0.0.1", big.registry.port), rate=RATE) as link:
        image, root, argv = alice_big_argv(link, tmp_path, endpoint, "anon-after")
        with running(argv, {**os.environ, "HOME": str(tmp_path)}) as proc:
            wait_for(lambda: link.forwarded >= BIG_LAYER // 3, "a third of the layer", proc)
            killed = time.monotonic()
            if how == "SIGKILL":
                pid = containerd.pid
                assert pid is not None
                os.kill(pid, signal.SIGKILL)
            else:
                containerd.stop()
            stdout, stderr = proc.communicate(timeout=30)
            took = time.monotonic() - killed
        print(f"\ncontainerd {how} mid-pull: pullwarden exit {proc.returncode} after {took:.3f} s")
        print(stderr)
        assert "Traceback" not in stderr, stderr
        assert proc.returncode == 1, stderr
        got = outcomes(json.loads(stdout))
        for name in ("alice", "anon-after"):  # the pull in flight, and a pod after it
            assert got[name]["outcome"] != "Ready", got[name]
            assert endpoint in got[name]["message"], got[name]
        assert records(root).intent_exists(image), "the pull's intent is gone"
        assert record_files(root) == []

        # containerd still down: nothing runs, nothing is written that lets anyone in.
        containerd.stop()
        before = sorted(str(p) for p in (root / "image_manager").rglob("*"))
        manifest = write_docs(tmp_path / "down.yaml", [pod("x", "anon", image, "IfNotPresent")])
        code, data, stderr = cri_run(root, manifest, endpoint)
        assert code == 7, (code, data, stderr)
        assert f"container runtime unavailable at {endpoint}" in stderr
        assert data == {}
        assert sorted(str(p) for p in (root / "image_manager").rglob("*")) == before
        assert records(root).intent_exists(image)

        containerd.start()
        link.rate = None
        image_id, recorded, intent = image_state(containerd, root, image)
        print(f"after the restart containerd {'has' if image_id else 'lacks'} the image")
        assert intent and not recorded
        assert_no_hole(root, big.spellings(link.host), tmp_path, endpoint)
        assert alice_gets_her_image(root, image, link.host, tmp_path, endpoint) == "pull"


def test_run_and_gc_on_a_stopped_containerd_exit_7_and_grant_nothing(
    seeded: Seeded, containerd: Containerd, tmp_path: Path
) -> None:
    registry, image, _, _ = alice_v1(seeded)
    image_id = seeded.images.alice.config_digest
    endpoint = containerd.endpoint
    containerd.stop()
    root = tmp_path / "node"
    manifest = write_docs(
        tmp_path / "alice.yaml",
        [
            secret("a", "alice-cred", registry.host, ALICE),
            pod("a", "alice", image, "IfNotPresent", "alice-cred"),
            pod("x", "anon", image, "IfNotPresent"),
        ],
    )
    code, data, stderr = cri_run(root, manifest, endpoint)
    assert code == 7, (code, data, stderr)
    assert f"container runtime unavailable at {endpoint}" in stderr
    assert data == {}
    assert not (root / "image_manager").exists() or record_files(root) == []
    assert not (root / "images").exists(), "fell back to the embedded store"

    # A node with a record: gc on the stopped runtime exits 7 and prunes nothing.
    containerd.start()
    assert alice_gets_her_image(root, image, registry.host, tmp_path, endpoint) == "pull"
    containerd.stop()
    kept = record_files(root)
    assert kept and records(root).get_pulled_record(image_id) is not None
    result = cli(root, "gc", "--all", "--root", str(root), "--runtime-endpoint", endpoint)
    assert result.returncode == 7, (result.stdout, result.stderr)
    assert f"container runtime unavailable at {endpoint}" in result.stderr
    assert record_files(root) == kept


# -- 5. image GC on containerd ---------------------------------------------------------------


def age_everything(root: Path, ago: timedelta) -> None:
    """Make every image in ROOT/image_gc_state.json last used ``ago``."""
    path = root / "image_gc_state.json"
    state = json.loads(path.read_text())
    old = (datetime.now(UTC) - ago).isoformat()
    state["lastUsed"] = dict.fromkeys(state["lastUsed"], old)
    path.write_text(json.dumps(state))


def test_gc_all_removes_an_old_image_from_containerd_and_prunes_its_record(
    seeded: Seeded, containerd: Containerd, tmp_path: Path
) -> None:
    registry, image, _, _ = alice_v1(seeded)
    image_id = seeded.images.alice.config_digest
    root = tmp_path / "node"
    assert alice_gets_her_image(root, image, registry.host, tmp_path, containerd.endpoint) == "pull"
    assert records(root).get_pulled_record(image_id) is not None
    state = json.loads((root / "image_gc_state.json").read_text())
    assert image_id in state["lastUsed"]

    # Fresh, it survives `gc --all` (imageMinimumGCAge 2m).
    result = cli(
        root, "gc", "--all", "--root", str(root), "--runtime-endpoint", containerd.endpoint
    )
    assert result.returncode == 0, result.stderr
    assert "0 image(s) removed" in result.stdout
    assert containerd.cri_status(image_id) is not None

    age_everything(root, timedelta(hours=1))
    result = cli(
        root, "gc", "--all", "--root", str(root), "--runtime-endpoint", containerd.endpoint
    )
    print(result.stdout)
    assert result.returncode == 0, result.stderr
    assert f"removed {image}" in result.stdout
    assert f"pruned the pull record of {image_id}" in result.stdout
    assert "1 image(s) removed" in result.stdout
    assert containerd.cri_status(image_id) is None
    assert containerd.image_names() == set()
    assert records(root).get_pulled_record(image_id) is None
    assert record_files(root) == []
    # Gone for good: the next credential-less pod finds nothing, alice pulls again.
    assert_no_hole(root, [image], tmp_path, containerd.endpoint)
    assert alice_gets_her_image(root, image, registry.host, tmp_path, containerd.endpoint) == "pull"


def test_the_runs_own_gc_never_removes_an_image_its_pods_use(
    seeded: Seeded, containerd: Containerd, tmp_path: Path
) -> None:
    registry, alice_image, _, _ = alice_v1(seeded)
    alice_id = seeded.images.alice.config_digest
    hello_image = seeded.ref("noauth", "ns/hello:v1")
    hello_id = seeded.images.hello.config_digest
    root = tmp_path / "node"
    first = write_docs(
        tmp_path / "first.yaml",
        [
            secret("a", "alice-cred", registry.host, ALICE),
            pod("a", "alice", alice_image, "IfNotPresent", "alice-cred"),
            pod("h", "hello", hello_image, "IfNotPresent"),
        ],
    )
    code, data, stderr = cri_run(root, first, containerd.endpoint)
    assert code == 0, stderr
    assert records(root).get_pulled_record(hello_id) is not None
    age_everything(root, timedelta(hours=1))

    config = kubelet_config(
        tmp_path / "kubelet.yaml", imageMinimumGCAge="1s", imageMaximumGCAge="2s"
    )
    second = write_docs(
        tmp_path / "second.yaml",
        [
            secret("a", "alice-cred", registry.host, ALICE),
            pod("a", "alice-again", alice_image, "IfNotPresent", "alice-cred"),
        ],
    )
    code, data, stderr = cri_run(root, second, containerd.endpoint, config=config)
    print(stderr)
    assert code == 0, stderr
    assert outcomes(data)["alice-again"]["verifiedBy"] == "secretHash"
    # The same pass removed the idle hello image (so it did run) but kept alice's.
    gced = [e["message"] for e in data["events"] if e["reason"] == "ImageGCed"]
    assert any(hello_image in m for m in gced), data["events"]
    assert containerd.cri_status(hello_id) is None
    assert records(root).get_pulled_record(hello_id) is None
    assert containerd.cri_status(alice_id) is not None
    assert records(root).get_pulled_record(alice_id) is not None
    assert not any(alice_image in m for m in gced), gced
