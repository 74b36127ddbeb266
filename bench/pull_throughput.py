"""Pull throughput of ``pullwarden pull`` against ``skopeo copy``, whole processes, token auth.

A token-auth ``docker-registry`` (with the test token server of tests/integration/infra.py) runs
on 127.0.0.1 in a temp dir. Four images are built with :mod:`pullwarden.runtime._layout` from
incompressible random data (gzip level 1) and pushed with skopeo: 1 × ``--big-mb`` MB,
``--layers`` × ``--layer-mb`` MB, ``--small-layers`` × ``--small-mb`` MB and 1 × ``--huge-mb`` MB
(``--huge-mb 0`` leaves the last one out).

Cold pulls, for each image and round, the order of the two tools alternating (round 1 ours
first, round 2 skopeo first, ...), each the whole process a user runs, timed from spawn to exit
and with its peak RSS (``wait4``'s ``ru_maxrss``):

* ``python -m pullwarden.cli pull -q -u alice --password-stdin --store FRESHDIR REF``;
* ``skopeo copy --src-tls-verify=false docker://REF oci:FRESHDIR:v1`` with alice's credentials
  in an auth file.

MB/s = compressed blob bytes (config + layers, MB = 10^6) / seconds; medians of the rounds. The
registry's access log confirms every cold pull transferred every blob byte. Dirty pages are
flushed (``sync``) before each timed action, outside the clock. Process start-up is measured
in the same run (``pullwarden --help``, ``skopeo --version``, medians of 5), so the download
path can be judged apart from it: the "without start-up" column takes ``pullwarden --help``'s
time off each pull.

Re-verification of a held tag, each ``--reverify`` times: ``pullwarden pull`` of it (a whole
process); ``pull_image`` in this process with one client kept (what a running node does);
``skopeo inspect --raw``. The access log gives the requests each made.

``--parallelism 2,4,6,8`` adds in-process cold pulls (``RegistryClient(max_parallel_blobs=N)``,
worker counts rotated per round) of every image but the huge one: how the client's default
blob parallelism was chosen.

The package's bytecode is written first, as an installed package has it (``_bytecode``).

Exit status 1 when a pulled digest differs from the built one, when a cold pull did not
transfer every blob byte, when a process failed, or when a re-verification fetched a blob; 130
when interrupted. The goals (issue 12) are printed; missing one is reported, not an error.

    python bench/pull_throughput.py [--rounds 3] [--huge-mb 1000] [--parallelism 2,4,6,8]
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TypeVar

from _bytecode import ensure_bytecode

from pullwarden.runtime import (
    AuthConfig,
    BuiltImage,
    LocalImageService,
    RegistryClient,
    build_image,
    digest_of,
    make_tar,
    read_layout,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.integration.infra import (  # noqa: E402  (needs the repo root on sys.path)
    ALICE,
    SKOPEO_BINARY,
    AccessEntry,
    Registry,
    Skopeo,
    TokenServer,
    make_pki,
    missing_tools,
    running,
)

_T = TypeVar("_T")

MB = 1_000_000
MIB = 1024 * 1024
RSS_GOAL_MIB = 64.0
TAG = "v1"
PULLWARDEN = [sys.executable, "-m", "pullwarden.cli"]


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchImage:
    """One image built into the layout and pushed to ``repository:v1``."""

    label: str
    layout_ref: str
    repository: str
    goal: float  # ours / skopeo, whole process
    built: BuiltImage

    @property
    def repo_tag(self) -> str:
        return f"{self.repository}:{TAG}"

    @property
    def blob_bytes(self) -> int:
        """Compressed bytes a cold pull transfers: config plus layers."""
        return self.built.config_size + sum(self.built.layer_sizes)

    @property
    def huge(self) -> bool:
        return self.layout_ref == "huge"


@dataclass(frozen=True, slots=True)
class Traffic:
    """What the registry's access log shows for one measured action."""

    manifest: int  # HEAD + GET on /manifests/
    blob: int  # GET on /blobs/
    blob_bytes: int  # body bytes of successful blob GETs
    other: int  # everything else (e.g. the /v2/ ping)

    @classmethod
    def of(cls, entries: Sequence[AccessEntry]) -> Traffic:
        manifest = sum(1 for e in entries if "/manifests/" in e.path)
        blobs = [e for e in entries if e.method == "GET" and "/blobs/" in e.path]
        return cls(
            manifest=manifest,
            blob=len(blobs),
            blob_bytes=sum(e.size for e in blobs if e.status == 200),
            other=len(entries) - manifest - len(blobs),
        )


@dataclass(frozen=True, slots=True)
class Sample:
    """One timed action, its registry traffic and (for a process) its peak RSS in bytes."""

    seconds: float
    traffic: Traffic
    rss: int | None = None


@dataclass(frozen=True, slots=True)
class Row:
    """Cold pulls of one image by two contestants (``a`` against ``b``)."""

    image: BenchImage
    a: tuple[Sample, ...]
    b: tuple[Sample, ...]

    def mbps(self, samples: Sequence[Sample], minus: float = 0.0) -> list[float]:
        return [self.image.blob_bytes / MB / (s.seconds - minus) for s in samples]

    @property
    def ratio(self) -> float:
        return statistics.median(self.mbps(self.a)) / statistics.median(self.mbps(self.b))


@dataclass(frozen=True, slots=True)
class Finished:
    """A process that ran to its end."""

    seconds: float
    rss: int  # peak resident set, bytes
    code: int
    stdout: bytes
    stderr: bytes


class Bench:
    """The running benchmark: registry, skopeo set-up, work directory and problems found."""

    def __init__(self, work: Path, registry: Registry, skopeo: Skopeo, launcher: Launcher) -> None:
        self.work = work
        self.launcher = launcher
        self.registry = registry
        self.skopeo = skopeo  # pushes (with the seeder's credentials)
        self.problems: list[str] = []
        self._serial = 0
        self.policy = work / "policy.json"
        self.policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self.registries_conf = work / "registries.conf"
        self.registries_conf.write_text("")
        self.authfile = work / "alice-auth.json"
        token = base64.b64encode(f"{ALICE[0]}:{ALICE[1]}".encode()).decode()
        self.authfile.write_text(json.dumps({"auths": {registry.host: {"auth": token}}}))
        self.authfile.chmod(0o600)

    def fresh_dir(self, prefix: str) -> Path:
        """A path under the work dir that does not exist yet."""
        self._serial += 1
        return self.work / f"{prefix}-{self._serial}"

    def observe(self, action: Callable[[], _T]) -> tuple[float, Traffic, _T]:
        """Time ``action`` and collect the registry requests it caused.

        Dirty pages are flushed first, so that no measurement pays for the writeback of an
        earlier one (or of the image build).
        """
        os.sync()
        since = self.registry.mark()
        start = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - start
        return seconds, Traffic.of(self.registry.access_log(since)), result

    def problem(self, text: str) -> None:
        self.problems.append(text)
        print(f"  !! {text}", flush=True)

    def skopeo_argv(self, *args: str) -> list[str]:
        return [
            SKOPEO_BINARY,
            "--policy",
            str(self.policy),
            "--registries-conf",
            str(self.registries_conf),
            args[0],
            "--authfile",
            str(self.authfile),
            *args[1:],
        ]


# Runs each timed process and reports its wall time and peak RSS. A child's ``ru_maxrss`` starts
# at the high-water mark of the process that spawned it (Linux carries it over fork and exec),
# and this benchmark's own process holds whole images in memory while building them; a small
# launcher of its own, started early, keeps that out of the figures.
_LAUNCHER = r"""
import json, os, subprocess, sys, time
for line in sys.stdin:
    job = json.loads(line)
    with open(job["out"], "wb") as out, open(job["err"], "wb") as err:
        start = time.perf_counter()
        child = subprocess.Popen(job["argv"], stdin=subprocess.PIPE, stdout=out, stderr=err)
        try:
            child.stdin.write(job["stdin"].encode())
            child.stdin.close()
        except BrokenPipeError:
            pass
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - start
    code = os.waitstatus_to_exitcode(status)
    print(json.dumps({"seconds": seconds, "rss": usage.ru_maxrss * 1024, "code": code}), flush=True)
"""


class Launcher:
    """The small process that spawns and times the measured ones (see ``_LAUNCHER``)."""

    def __init__(self, work: Path) -> None:
        self._work = work
        self._process = subprocess.Popen(
            [sys.executable, "-c", _LAUNCHER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )

    def run(self, argv: Sequence[str], stdin: str = "") -> Finished:
        """Run ``argv`` to its end: wall seconds from spawn to exit, peak RSS, output."""
        assert self._process.stdin is not None and self._process.stdout is not None
        out, err = self._work / "launched.out", self._work / "launched.err"
        job = {"argv": list(argv), "stdin": stdin, "out": str(out), "err": str(err)}
        self._process.stdin.write(json.dumps(job) + "\n")
        self._process.stdin.flush()
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the launcher process died")
        done = json.loads(line)
        return Finished(
            done["seconds"], done["rss"], done["code"], out.read_bytes(), err.read_bytes()
        )

    def median_seconds(self, argv: Sequence[str], times: int = 5) -> float:
        return statistics.median(self.run(argv).seconds for _ in range(times))

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        self._process.wait(timeout=10)


# --- building and pushing ----------------------------------------------------------------------


def random_tar(size: int, seed: int) -> bytes:
    """An uncompressed tar of one file of ``size`` pseudo-random bytes drawn from ``seed``.

    (``random_layer`` draws all bytes in one call, which stops short of 1 GB.)
    """
    rng = random.Random(seed)
    step = 64 * MIB
    data = b"".join(rng.randbytes(min(step, size - at)) for at in range(0, size, step))
    return make_tar({f"random-{seed}.bin": data})


def build_and_push(bench: Bench, args: argparse.Namespace) -> list[BenchImage]:
    layout = bench.work / "layout"
    specs = [
        (f"1 × {args.big_mb} MB", "big", 1.5, [(args.big_mb, 1)]),
        (
            f"{args.layers} × {args.layer_mb} MB",
            "layers",
            1.5,
            [(args.layer_mb, 100 + i) for i in range(args.layers)],
        ),
        (
            f"{args.small_layers} × {args.small_mb} MB",
            "small",
            1.2,
            [(args.small_mb, 1000 + i) for i in range(args.small_layers)],
        ),
    ]
    if args.huge_mb:
        specs.append((f"1 × {args.huge_mb} MB", "huge", 2.0, [(args.huge_mb, 7)]))
    images = []
    seeder = bench.registry.token_server.seeder if bench.registry.token_server else None
    for label, ref, goal, layers in specs:
        start = time.perf_counter()
        raw = [random_tar(size_mb * MB, seed) for size_mb, seed in layers]
        built = build_image(layout, ref, raw, gzip_level=1)
        del raw
        image = BenchImage(label, ref, f"ns/{ref}", goal, built)
        built_s = time.perf_counter() - start
        start = time.perf_counter()
        bench.skopeo.copy(f"oci:{layout}:{ref}", bench.registry, image.repo_tag, creds=seeder)
        print(
            f"{label}: built in {built_s:.1f} s, pushed in {time.perf_counter() - start:.1f} s; "
            f"blob bytes {image.blob_bytes:,}, manifest {built.manifest_digest}",
            flush=True,
        )
        images.append(image)
        shutil.rmtree(layout / "blobs")  # the registry holds its own copy
        (layout / "index.json").unlink()
    return images


# --- cold pulls, whole processes ---------------------------------------------------------------


def pull_ours(bench: Bench, image: BenchImage, store: Path) -> Sample:
    """``pullwarden pull`` into the fresh ``store``, timed as a whole process."""
    argv = [*PULLWARDEN, "pull", "-q", "-u", ALICE[0], "--password-stdin", "--store", str(store)]
    argv.append(bench.registry.ref(image.repo_tag))
    seconds, traffic, done = bench.observe(lambda: bench.launcher.run(argv, ALICE[1]))
    if done.code != 0:
        bench.problem(f"pullwarden pull of {image.label} exited {done.code}: {done.stderr!r}")
    elif done.stdout.decode().strip() != image.built.config_digest:
        bench.problem(f"pullwarden pull of {image.label} printed {done.stdout!r}")
    else:
        check_store(bench, store, image, "pullwarden pull")
    return Sample(seconds, traffic, done.rss)


def pull_skopeo(bench: Bench, image: BenchImage) -> Sample:
    """``skopeo copy docker://… oci:FRESHDIR:v1``, timed as a whole process."""
    dest = bench.fresh_dir("skopeo")
    source = f"docker://{bench.registry.ref(image.repo_tag)}"
    argv = bench.skopeo_argv("copy", "-q", "--src-tls-verify=false", source, f"oci:{dest}:{TAG}")
    try:
        seconds, traffic, done = bench.observe(lambda: bench.launcher.run(argv))
        if done.code != 0:
            bench.problem(f"skopeo copy of {image.label} exited {done.code}: {done.stderr!r}")
        elif (got := read_layout(dest)[TAG].digest) != image.built.manifest_digest:
            bench.problem(f"skopeo copy of {image.label} wrote manifest {got}")
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    return Sample(seconds, traffic, done.rss)


def check_store(bench: Bench, root: Path, image: BenchImage, what: str) -> None:
    """The store must hold the built image under its config digest and manifest digest."""
    built = image.built
    with LocalImageService(root) as service:
        status = service.image_status(built.config_digest)
    expected = f"{bench.registry.ref(image.repository)}@{built.manifest_digest}"
    if status is None or expected not in status.repo_digests:
        held = status.repo_digests if status is not None else "nothing"
        bench.problem(f"{what} of {image.label}: store holds {held}, expected {expected}")


def check_transfer(bench: Bench, image: BenchImage, sample: Sample, who: str) -> None:
    """A cold pull must have downloaded every blob byte once (else MB/s means nothing)."""
    if sample.traffic.blob_bytes != image.blob_bytes:
        bench.problem(
            f"{who} pull of {image.label} transferred {sample.traffic.blob_bytes:,} blob bytes, "
            f"expected {image.blob_bytes:,}"
        )


def describe(image: BenchImage, who: str, round_no: int, sample: Sample) -> str:
    t = sample.traffic
    mbps = image.blob_bytes / MB / sample.seconds
    rss = f"  peak RSS {sample.rss / MIB:5.1f} MiB" if sample.rss is not None else ""
    return (
        f"  round {round_no}  {who:<12} {sample.seconds:7.3f} s  {mbps:7.1f} MB/s{rss}  "
        f"(manifest req {t.manifest}, blob req {t.blob}, other req {t.other})"
    )


def run_cold(bench: Bench, image: BenchImage, rounds: int) -> tuple[Row, Path]:
    """Alternate cold pulls; returns the row and the last pullwarden store (kept)."""
    print(f"\n{image.label} ({image.blob_bytes:,} blob bytes)", flush=True)
    ours: list[Sample] = []
    theirs: list[Sample] = []
    kept: Path | None = None
    for round_no in range(1, rounds + 1):
        order = ("pullwarden", "skopeo") if round_no % 2 else ("skopeo", "pullwarden")
        for who in order:
            if who == "skopeo":
                sample = pull_skopeo(bench, image)
                theirs.append(sample)
            else:
                store = bench.fresh_dir("ours")
                sample = pull_ours(bench, image, store)
                ours.append(sample)
                if kept is not None:
                    shutil.rmtree(kept, ignore_errors=True)
                kept = store
            check_transfer(bench, image, sample, who)
            print(describe(image, who, round_no, sample), flush=True)
    assert kept is not None
    return Row(image, tuple(ours), tuple(theirs)), kept


# --- re-verification ---------------------------------------------------------------------------


def run_reverify(
    bench: Bench, image: BenchImage, store: Path, times: int
) -> list[tuple[str, list[Sample]]]:
    """Re-pull the held tag: whole CLI processes, one kept client, ``skopeo inspect --raw``."""
    ref = bench.registry.ref(image.repo_tag)
    cli: list[Sample] = []
    for _ in range(times):
        cli.append(pull_ours(bench, image, store))

    kept: list[Sample] = []
    auth = AuthConfig(*ALICE)
    with RegistryClient() as client, LocalImageService(store, client=client) as service:
        for _ in range(times):
            seconds, traffic, image_id = bench.observe(lambda: service.pull_image(ref, auth))
            if image_id != image.built.config_digest:
                bench.problem(f"in-process re-pull of {image.label} returned {image_id}")
            kept.append(Sample(seconds, traffic))
    shutil.rmtree(store, ignore_errors=True)

    inspected: list[Sample] = []
    argv = bench.skopeo_argv("inspect", "--raw", "--tls-verify=false", f"docker://{ref}")
    for _ in range(times):
        seconds, traffic, done = bench.observe(lambda: bench.launcher.run(argv))
        if done.code != 0 or digest_of(done.stdout) != image.built.manifest_digest:
            bench.problem(f"skopeo inspect --raw of {image.label} failed: {done.stderr!r}")
        inspected.append(Sample(seconds, traffic, done.rss))

    for method, samples in (("CLI", cli), ("in-process", kept)):
        for sample in samples:
            if sample.traffic.blob or sample.traffic.blob_bytes:
                bench.problem(
                    f"re-verification ({method}) of {image.label} fetched "
                    f"{sample.traffic.blob} blob(s), {sample.traffic.blob_bytes:,} bytes"
                )
    return [
        ("`pullwarden pull` (whole process)", cli),
        ("`pull_image`, one client kept (a running node)", kept),
        ("`skopeo inspect --raw` (whole process)", inspected),
    ]


# --- blob parallelism, in process ----------------------------------------------------------------


def run_parallelism(
    bench: Bench, images: Sequence[BenchImage], workers: Sequence[int], rounds: int
) -> dict[tuple[str, int], list[float]]:
    """In-process cold pulls with each worker count (rotated per round); MB/s per sample."""
    auth = AuthConfig(*ALICE)
    results: dict[tuple[str, int], list[float]] = {}
    for image in images:
        print(f"\nparallelism, {image.label} (in process)", flush=True)
        ref = bench.registry.ref(image.repo_tag)
        for round_no in range(rounds):
            shift = round_no % len(workers)
            for n in [*workers[shift:], *workers[:shift]]:
                root = bench.fresh_dir("par")
                with (
                    RegistryClient(max_parallel_blobs=n) as client,
                    LocalImageService(root, client=client) as service,
                ):
                    seconds, traffic, _ = bench.observe(partial(service.pull_image, ref, auth))
                shutil.rmtree(root, ignore_errors=True)
                check_transfer(bench, image, Sample(seconds, traffic), f"{n}-worker")
                mbps = image.blob_bytes / MB / seconds
                results.setdefault((image.label, n), []).append(mbps)
                print(f"  round {round_no + 1}  {n} workers  {mbps:7.1f} MB/s", flush=True)
    return results


# --- reporting ---------------------------------------------------------------------------------


def values(xs: Sequence[float]) -> str:
    return ", ".join(f"{v:.0f}" for v in xs)


def cold_table(rows: Sequence[Row], startup: float) -> str:
    lines = [
        "| image | compressed bytes | pullwarden MB/s | skopeo copy MB/s | ours / skopeo | goal "
        "| pullwarden MB/s without start-up | peak RSS pullwarden / skopeo (MiB) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ours, theirs = row.mbps(row.a), row.mbps(row.b)
        bare = row.mbps(row.a, minus=startup) if min(s.seconds for s in row.a) > startup else []
        rss_ours = max(s.rss or 0 for s in row.a) / MIB
        rss_theirs = max(s.rss or 0 for s in row.b) / MIB
        met = "met" if row.ratio >= row.image.goal else "**missed**"
        lines.append(
            f"| {row.image.label} | {row.image.blob_bytes:,} "
            f"| **{statistics.median(ours):.0f}** ({values(ours)}) "
            f"| **{statistics.median(theirs):.0f}** ({values(theirs)}) "
            f"| **{row.ratio:.2f}×** | ≥ {row.image.goal}× {met} "
            f"| {f'{statistics.median(bare):.0f}' if bare else '–'} "
            f"| {rss_ours:.1f} / {rss_theirs:.1f} |"
        )
    return "\n".join(lines)


def reverify_table(rows: Sequence[tuple[BenchImage, str, list[Sample]]], times: int) -> str:
    lines = [
        f"| image | method | ms (median of {times}) | manifest req | blob req | other req |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for image, method, samples in rows:
        ms = statistics.median(s.seconds for s in samples) * 1000
        t = [s.traffic for s in samples]
        lines.append(
            f"| {image.label} | {method} | {ms:.1f} | {spread([x.manifest for x in t])} "
            f"| {spread([x.blob for x in t])} | {spread([x.other for x in t])} |"
        )
    return "\n".join(lines)


def parallelism_table(
    results: dict[tuple[str, int], list[float]], images: Sequence[BenchImage], workers: list[int]
) -> str:
    lines = [
        "| image | " + " | ".join(f"{n} workers MB/s" for n in workers) + " |",
        "|---|" + "---:|" * len(workers),
    ]
    for image in images:
        cells = [results[(image.label, n)] for n in workers]
        lines.append(
            f"| {image.label} | "
            + " | ".join(f"**{statistics.median(c):.0f}** ({values(c)})" for c in cells)
            + " |"
        )
    return "\n".join(lines)


def spread(xs: Sequence[int]) -> str:
    """``3`` when all values agree, else ``min–max``."""
    low, high = min(xs), max(xs)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def goals(rows: Sequence[Row]) -> list[str]:
    lines = []
    for row in rows:
        met = "met" if row.ratio >= row.image.goal else "MISSED"
        lines.append(f"{row.image.label}: {row.ratio:.2f}× skopeo (goal ≥ {row.image.goal}×) {met}")
        if row.image.huge:
            rss = max(s.rss or 0 for s in row.a) / MIB
            met = "met" if rss <= RSS_GOAL_MIB else "MISSED"
            lines.append(
                f"{row.image.label}: peak RSS of pullwarden {rss:.1f} MiB "
                f"(goal ≤ {RSS_GOAL_MIB:.0f} MiB) {met}"
            )
    return lines


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="cold pulls per tool and image")
    parser.add_argument("--big-mb", type=int, default=100, help="size of the single-layer image")
    parser.add_argument("--layers", type=int, default=10, help="layers of the multi-layer image")
    parser.add_argument("--layer-mb", type=int, default=10, help="size of each of those layers")
    parser.add_argument("--small-layers", type=int, default=50, help="layers of the small image")
    parser.add_argument("--small-mb", type=int, default=1, help="size of each of those layers")
    parser.add_argument("--huge-mb", type=int, default=1000, help="the huge image; 0: none")
    parser.add_argument("--reverify", type=int, default=5, help="timed re-verifications per kind")
    parser.add_argument(
        "--parallelism", default="", help="worker counts to compare in process, e.g. 2,4,6,8"
    )
    args = parser.parse_args(argv)
    for name in ("rounds", "big_mb", "layers", "layer_mb", "small_layers", "small_mb", "reverify"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.huge_mb < 0:
        parser.error("--huge-mb must not be negative")
    try:
        args.workers = [int(n) for n in args.parallelism.split(",") if n.strip()]
    except ValueError:
        parser.error("--parallelism takes worker counts separated by commas")
    if any(n < 1 for n in args.workers):
        parser.error("--parallelism: worker counts must be at least 1")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, work: Path) -> int:
    ensure_bytecode()  # as an installed package has it (see _bytecode)
    launcher = Launcher(work)  # before anything grows this process
    pki = make_pki(work / "pki")
    token_server = TokenServer(pki)
    token_server.start()
    registry = Registry(work / "registry", auth="token", pki=pki, token_server=token_server)
    try:
        with running(registry):
            bench = Bench(work, registry, Skopeo(work / "skopeo"), launcher)
            print(f"token-auth docker-registry on {registry.host}, work dir {work}", flush=True)
            images = build_and_push(bench, args)
            cold: list[Row] = []
            reverify: list[tuple[BenchImage, str, list[Sample]]] = []
            for image in images:
                row, store = run_cold(bench, image, args.rounds)
                cold.append(row)
                for method, samples in run_reverify(bench, image, store, args.reverify):
                    reverify.append((image, method, samples))
            parallel = [i for i in images if not i.huge]
            per_workers = (
                run_parallelism(bench, parallel, args.workers, args.rounds) if args.workers else {}
            )
            startup = launcher.median_seconds([*PULLWARDEN, "--help"])
            skopeo_startup = launcher.median_seconds([SKOPEO_BINARY, "--version"])
    finally:
        launcher.close()
        token_server.stop()

    print("\n### Cold pulls, whole processes, token auth (median, all rounds in parentheses)\n")
    print(cold_table(cold, startup))
    print(
        f"\nProcess start-up in the same run (medians of 5): `pullwarden --help` "
        f"{startup * 1000:.0f} ms, `skopeo --version` {skopeo_startup * 1000:.0f} ms. "
        "MB = 10^6 bytes; peak RSS is the largest of the rounds."
    )
    print("\n### Re-verification of a held tag (requests from the registry's access log)\n")
    print(reverify_table(reverify, args.reverify))
    if per_workers:
        print("\n### Blob parallelism, in process (median MB/s, all rounds in parentheses)\n")
        print(parallelism_table(per_workers, parallel, args.workers))
    print("\n### Goals (issue 12)\n")
    for line in goals(cold):
        print(f"- {line}")
    if bench.problems:
        print("\nFAILED:", file=sys.stderr)
        for text in bench.problems:
            print(f"  {text}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    missing = missing_tools()
    if missing:
        print(f"needs {' and '.join(missing)} on PATH", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, _interrupt)
    work = Path(tempfile.mkdtemp(prefix="pullwarden-bench-"))
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
