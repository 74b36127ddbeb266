"""Pulls through containerd over CRI: pullwarden's CRI layer beside containerd's own pull.

A token-auth ``docker-registry`` (with the test token server) and a private containerd 1.6 run
on loopback under a temp dir.  Two images are built from incompressible random data (gzip
level 1) and pushed with skopeo to alice's private repository: 1 × ``--big-mb`` MB and
``--layers`` × ``--layer-mb`` MB.

For each image and round, in rotating order, cold pulls by:

* **CRI raw**: the CRI ``PullImage`` RPC straight from the generated stub (containerd's own
  pull time, with no pullwarden code on the path);
* **CRIImageService**: ``pullwarden.runtime.CRIImageService.pull_image`` in this process (the
  raw RPC plus pullwarden's request building, error mapping and ``ImageStatus`` check);
* **ctr pull**: ``ctr -n k8s.io images pull --plain-http --user …`` as a whole process
  (containerd's client, which fetches in the ctr process and unpacks in containerd);
* **embedded store**: ``pullwarden pull --store FRESH`` as a whole process, no containerd.

Before every containerd pull the image is removed by id and its content garbage-collected
(outside the clock), so that every pull downloads every blob; the access log checks it.  The
CRI layer's overhead is ``CRIImageService / CRI raw`` (goal: under 1.05).

Re-verification through CRI: with the image held, ``CRIImageService.pull_image`` again with
alice's credentials, ``--reverify`` times: containerd resolves the manifest at the registry
(which re-checks the credentials) and downloads no blob (goal: 0 blob bytes).

    python bench/cri_pull.py [--rounds 3] [--big-mb 100] [--layers 10] [--layer-mb 10]

Needs root, containerd, ctr, docker-registry and skopeo.  Exit 1 when a goal is missed or a
pull went wrong; 130 when interrupted.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

from pullwarden.runtime import AuthConfig, CRIImageService, build_image, random_layer

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.integration.containerd import Containerd, containerd_missing  # noqa: E402
from tests.integration.infra import (  # noqa: E402
    ALICE,
    AccessEntry,
    Registry,
    Skopeo,
    TokenServer,
    make_pki,
    missing_tools,
    running,
)

MB = 1_000_000
OVERHEAD_GOAL = 1.05
METHODS = ("CRI raw", "CRIImageService", "ctr pull", "embedded store")


@dataclass(frozen=True, slots=True)
class Sample:
    seconds: float
    manifest_requests: int
    blob_requests: int
    blob_bytes: int

    @classmethod
    def of(cls, seconds: float, entries: Sequence[AccessEntry]) -> Sample:
        blobs = [e for e in entries if e.method == "GET" and "/blobs/" in e.path]
        return cls(
            seconds,
            sum(1 for e in entries if "/manifests/" in e.path),
            len(blobs),
            sum(e.size for e in blobs if e.status == 200),
        )


@dataclass(frozen=True, slots=True)
class BenchImage:
    label: str
    ref: str  # full reference in the registry
    blob_bytes: int  # config + compressed layers
    config_digest: str


class Bench:
    def __init__(self, work: Path, registry: Registry, containerd: Containerd) -> None:
        self.work = work
        self.registry = registry
        self.containerd = containerd
        self.cri = CRIImageService(containerd.endpoint)
        self.alice = AuthConfig(*ALICE)
        self.problems: list[str] = []
        self._serial = 0

    def observe(self, action: Callable[[], object]) -> Sample:
        os.sync()
        since = self.registry.mark()
        start = time.perf_counter()
        action()
        seconds = time.perf_counter() - start
        return Sample.of(seconds, self.registry.access_log(since))

    def problem(self, text: str) -> None:
        self.problems.append(text)
        print(f"  !! {text}", flush=True)

    def fresh_dir(self, prefix: str) -> Path:
        self._serial += 1
        return self.work / f"{prefix}-{self._serial}"

    # -- the four ways to pull ---------------------------------------------------------------

    def pull(self, method: str, image: BenchImage) -> Sample:
        if method != "embedded store":
            self.containerd.remove_all_images()
        action = {
            "CRI raw": lambda: self._raw(image),
            "CRIImageService": lambda: self._ours(image),
            "ctr pull": lambda: self._ctr(image),
            "embedded store": lambda: self._embedded(image),
        }[method]
        sample = self.observe(action)
        if sample.blob_bytes != image.blob_bytes:
            self.problem(
                f"{method} of {image.label} transferred {sample.blob_bytes:,} blob bytes, "
                f"expected {image.blob_bytes:,}"
            )
        if method != "embedded store":
            status = self.containerd.cri_status(image.ref)
            if status is None or status.id != image.config_digest:
                self.problem(f"{method} of {image.label}: containerd holds {status}")
        return sample

    def _raw(self, image: BenchImage) -> None:
        from cri_api.v1 import api_pb2 as api

        request = api.PullImageRequest(
            image=api.ImageSpec(image=image.ref),
            auth=api.AuthConfig(username=ALICE[0], password=ALICE[1]),
        )
        self.containerd.image_service.PullImage(request, timeout=600)

    def _ours(self, image: BenchImage) -> None:
        ref = self.cri.pull_image(image.ref, self.alice)
        if ref != image.config_digest:
            self.problem(f"CRIImageService returned {ref} for {image.label}")

    def _ctr(self, image: BenchImage) -> None:
        self.containerd.ctr(
            "images",
            "pull",
            "--plain-http",
            "--snapshotter",
            "native",
            "--user",
            f"{ALICE[0]}:{ALICE[1]}",
            image.ref,
            timeout=600,
        )

    def _embedded(self, image: BenchImage) -> None:
        store = self.fresh_dir("store")
        try:
            argv = ["pull", "-q", "--store", str(store), "-u", ALICE[0], "--password-stdin"]
            done = subprocess.run(
                [sys.executable, "-m", "pullwarden.cli", *argv, image.ref],
                input=ALICE[1] + "\n",
                capture_output=True,
                text=True,
                check=False,
                timeout=600,
            )
            if done.returncode != 0:
                self.problem(f"pullwarden pull of {image.label}: {done.stderr.strip()}")
        finally:
            shutil.rmtree(store, ignore_errors=True)

    def reverify(self, image: BenchImage, times: int) -> list[Sample]:
        self.containerd.remove_all_images()
        self.cri.pull_image(image.ref, self.alice)
        samples = [
            self.observe(lambda: self.cri.pull_image(image.ref, self.alice)) for _ in range(times)
        ]
        for sample in samples:
            if sample.blob_requests or sample.blob_bytes:
                self.problem(
                    f"re-verification of {image.label} through CRI fetched "
                    f"{sample.blob_requests} blob(s), {sample.blob_bytes:,} bytes"
                )
        return samples


def build_and_push(
    work: Path, registry: Registry, seeder: tuple[str, str], args: argparse.Namespace
) -> list[BenchImage]:
    layout = work / "layout"
    skopeo = Skopeo(work / "skopeo")
    specs = [
        (f"1 × {args.big_mb} MB", "big", [(args.big_mb, 1)]),
        (
            f"{args.layers} × {args.layer_mb} MB",
            "layers",
            [(args.layer_mb, 100 + i) for i in range(args.layers)],
        ),
    ]
    images = []
    for label, tag, layers in specs:
        raw = [random_layer(size * MB, seed) for size, seed in layers]
        built = build_image(layout, tag, raw, gzip_level=1)
        del raw
        skopeo.copy(f"oci:{layout}:{tag}", registry, f"private/alice:{tag}", creds=seeder)
        blob_bytes = built.config_size + sum(built.layer_sizes)
        images.append(
            BenchImage(label, registry.ref(f"private/alice:{tag}"), blob_bytes, built.config_digest)
        )
        print(f"{label}: {blob_bytes:,} blob bytes, pushed", flush=True)
    shutil.rmtree(layout)
    return images


def seconds_cell(samples: Sequence[Sample]) -> str:
    values = [s.seconds for s in samples]
    listed = ", ".join(f"{v:.2f}" for v in values)
    return f"**{statistics.median(values):.3f}** ({listed})"


def report(rows: dict[str, dict[str, list[Sample]]], images: Sequence[BenchImage]) -> bool:
    print("\n### Cold pulls (seconds; median, then every round; MB/s of the median)\n")
    print("| image | " + " | ".join(METHODS) + " | CRIImageService / CRI raw |")
    print("|---|" + "---:|" * (len(METHODS) + 1))
    ok = True
    for image in images:
        cells = []
        for method in METHODS:
            samples = rows[image.label][method]
            mbps = image.blob_bytes / MB / statistics.median(s.seconds for s in samples)
            cells.append(f"{seconds_cell(samples)} {mbps:.0f} MB/s")
        ours = statistics.median(s.seconds for s in rows[image.label]["CRIImageService"])
        raw = statistics.median(s.seconds for s in rows[image.label]["CRI raw"])
        ratio = ours / raw
        ok = ok and ratio < OVERHEAD_GOAL
        print(f"| {image.label} | " + " | ".join(cells) + f" | **{ratio:.3f}** |")
    print(f"\nGoal: CRIImageService / CRI raw < {OVERHEAD_GOAL} (the CRI layer adds under 5 %).")
    return ok


def run(args: argparse.Namespace, work: Path) -> int:
    pki = make_pki(work / "pki")
    token_server = TokenServer(pki)
    token_server.start()
    try:
        registry = Registry(work / "registry", auth="token", pki=pki, token_server=token_server)
        with running(registry):
            containerd = Containerd(work / "containerd")
            containerd.trust(registry)
            containerd.start()
            try:
                return measure(args, work, registry, token_server, containerd)
            finally:
                containerd.stop()
    finally:
        token_server.stop()


def measure(
    args: argparse.Namespace,
    work: Path,
    registry: Registry,
    token_server: TokenServer,
    containerd: Containerd,
) -> int:
    print(f"docker-registry (token auth) on {registry.host}; containerd {containerd.version()}")
    images = build_and_push(work, registry, token_server.seeder, args)
    bench = Bench(work, registry, containerd)
    rows: dict[str, dict[str, list[Sample]]] = {}
    reverify: dict[str, list[Sample]] = {}
    for image in images:
        rows[image.label] = {m: [] for m in METHODS}
        print(f"\n{image.label}", flush=True)
        for round_no in range(args.rounds):
            shift = round_no % len(METHODS)
            for method in METHODS[shift:] + METHODS[:shift]:
                sample = bench.pull(method, image)
                rows[image.label][method].append(sample)
                print(
                    f"  round {round_no + 1}  {method:<16} {sample.seconds:7.3f} s  "
                    f"(manifest req {sample.manifest_requests}, blob req {sample.blob_requests})",
                    flush=True,
                )
        reverify[image.label] = bench.reverify(image, args.reverify)
    bench.cri.close()
    ok = report(rows, images)
    print(f"\n### Re-verification through CRI (median of {args.reverify})\n")
    print("| image | ms | manifest req | blob req | blob bytes |")
    print("|---|---:|---:|---:|---:|")
    for image in images:
        samples = reverify[image.label]
        ms = statistics.median(s.seconds for s in samples) * 1000
        manifests = sorted({s.manifest_requests for s in samples})
        print(
            f"| {image.label} | {ms:.1f} | {'/'.join(map(str, manifests))} "
            f"| {sum(s.blob_requests for s in samples)} | {sum(s.blob_bytes for s in samples)} |"
        )
    if not ok:
        bench.problem(f"the CRI layer added {OVERHEAD_GOAL - 1:.0%} or more to containerd's pull")
    for text in bench.problems:
        print(f"FAILED: {text}", file=sys.stderr)
    return 1 if bench.problems else 0


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="cold pulls per method and image")
    parser.add_argument("--big-mb", type=int, default=100)
    parser.add_argument("--layers", type=int, default=10)
    parser.add_argument("--layer-mb", type=int, default=10)
    parser.add_argument("--reverify", type=int, default=5)
    args = parser.parse_args(argv)
    missing = missing_tools() + containerd_missing()
    if missing:
        print(f"needs {' and '.join(missing)}", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="pwcri-bench-"))
    started = time.perf_counter()
    try:
        return run(args, work)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(work, ignore_errors=True)
        print(f"\n(total {time.perf_counter() - started:.0f} s)", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
