"""Pull throughput of pullwarden against ``skopeo copy``, and the cost of a re-verification.

One no-auth ``docker-registry`` runs on 127.0.0.1 in a temp dir. Two images are built with
:mod:`pullwarden.runtime._layout` from incompressible random data (gzip level 1) and pushed with
skopeo: one single-layer image of ``--big-mb`` MB and one of ``--layers`` × ``--layer-mb`` MB.

For each image and round, in alternating order (round 1 ours first, round 2 skopeo first, ...):

* pullwarden: a fresh ``RegistryClient`` and a fresh ``LocalImageService`` in a fresh directory
  (built before the clock starts); ``pull_image`` is timed end to end;
* skopeo: ``skopeo copy --src-tls-verify=false docker://… oci:FRESHDIR:v1``, the whole
  subprocess timed (process start-up included; it is measured on its own with ``--version``).

MB/s = compressed blob bytes (config + layers, MB = 10^6) / seconds. The registry's access log
confirms every pull really transferred all of them. Dirty pages are flushed (``sync``) before
each timed action, outside the clock, so no tool pays for another's writeback.

Re-verification, per image, each timed ``--reverify`` times: ``pull_image`` of the held tag with
the same store and client; the same with a fresh client and service on that store (a restarted
node); ``skopeo inspect --raw``. The access log gives manifest requests, blob requests, blob
bytes and other requests (``/v2/`` pings) for each.

Exit status 1 when a pulled digest differs from the built one, when a cold pull did not transfer
every blob byte, or when a pullwarden re-verification fetched any blob; 130 when interrupted.

    python bench/pull_throughput.py [--rounds 3] [--big-mb 100] [--layers 10] [--layer-mb 10]
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
from functools import partial
from pathlib import Path
from types import FrameType
from typing import TypeVar

from pullwarden.runtime import (
    BuiltImage,
    LocalImageService,
    RegistryClient,
    build_image,
    digest_of,
    random_layer,
    read_layout,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.integration.infra import (  # noqa: E402  (needs the repo root on sys.path)
    SKOPEO_BINARY,
    AccessEntry,
    Registry,
    Skopeo,
    missing_tools,
    running,
)

_T = TypeVar("_T")

MB = 1_000_000
GOAL_RATIO = 1.5
TAG = "v1"


# --- data ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BenchImage:
    """One image built into the layout and pushed to ``repository:v1``."""

    label: str
    layout_ref: str
    repository: str
    built: BuiltImage

    @property
    def repo_tag(self) -> str:
        return f"{self.repository}:{TAG}"

    @property
    def blob_bytes(self) -> int:
        """Compressed bytes a cold pull transfers: config plus layers."""
        return self.built.config_size + sum(self.built.layer_sizes)


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
    """One timed action and its registry traffic."""

    seconds: float
    traffic: Traffic


@dataclass(frozen=True, slots=True)
class ThroughputRow:
    """The cold pulls of one image by both tools."""

    image: BenchImage
    ours: tuple[Sample, ...]
    skopeo: tuple[Sample, ...]

    def mbps(self, samples: Sequence[Sample]) -> list[float]:
        return [self.image.blob_bytes / MB / s.seconds for s in samples]

    @property
    def ratio(self) -> float:
        return statistics.median(self.mbps(self.ours)) / statistics.median(self.mbps(self.skopeo))


@dataclass(frozen=True, slots=True)
class ReverifyRow:
    """The timed re-verifications of one image by one method."""

    image: BenchImage
    method: str
    samples: tuple[Sample, ...]


class Bench:
    """The running benchmark: registry, skopeo helper, work directory and problems found."""

    def __init__(self, work: Path, registry: Registry, skopeo: Skopeo) -> None:
        self.work = work
        self.registry = registry
        self.skopeo = skopeo
        self.problems: list[str] = []
        self._serial = 0

    def fresh_dir(self, prefix: str) -> Path:
        """A path under the work dir that does not exist yet."""
        self._serial += 1
        return self.work / f"{prefix}-{self._serial}"

    def observe(self, action: Callable[[], _T]) -> tuple[Sample, _T]:
        """Time ``action`` and collect the registry requests it caused.

        Dirty pages are flushed first, so that no measurement pays for the writeback of an
        earlier one (or of the image build).
        """
        os.sync()
        since = self.registry.mark()
        start = time.perf_counter()
        result = action()
        seconds = time.perf_counter() - start
        return Sample(seconds, Traffic.of(self.registry.access_log(since))), result

    def problem(self, text: str) -> None:
        self.problems.append(text)
        print(f"  !! {text}", flush=True)


# --- building and pushing ----------------------------------------------------------------------


def build_and_push(bench: Bench, args: argparse.Namespace) -> list[BenchImage]:
    layout = bench.work / "layout"
    specs = [
        (f"1 × {args.big_mb} MB", "big", "bench/big", [(args.big_mb, 1)]),
        (
            f"{args.layers} × {args.layer_mb} MB",
            "layers",
            "bench/layers",
            [(args.layer_mb, 100 + i) for i in range(args.layers)],
        ),
    ]
    images = []
    for label, ref, repository, layers in specs:
        start = time.perf_counter()
        raw = [random_layer(size_mb * MB, seed) for size_mb, seed in layers]
        built = build_image(layout, ref, raw, gzip_level=1)
        del raw
        image = BenchImage(label, ref, repository, built)
        built_s = time.perf_counter() - start
        start = time.perf_counter()
        bench.skopeo.copy(f"oci:{layout}:{ref}", bench.registry, image.repo_tag)
        print(
            f"{label}: built in {built_s:.1f} s, pushed in {time.perf_counter() - start:.1f} s; "
            f"blob bytes {image.blob_bytes:,} (config {built.config_size:,} + layers "
            f"{sum(built.layer_sizes):,}), manifest {built.manifest_digest}",
            flush=True,
        )
        images.append(image)
    shutil.rmtree(layout)  # the registry holds its own copy
    return images


# --- cold pulls --------------------------------------------------------------------------------


def pull_ours(bench: Bench, image: BenchImage) -> tuple[Sample, LocalImageService, RegistryClient]:
    """Time a cold pull into a fresh store; the caller closes the returned service and client."""
    client = RegistryClient()
    service = LocalImageService(bench.fresh_dir("ours"), client=client)
    ref = bench.registry.ref(image.repo_tag)
    try:
        sample, image_id = bench.observe(lambda: service.pull_image(ref))
        check_store(bench, service, image, image_id, "pullwarden pull")
    except BaseException:
        close_store(service, client)
        raise
    check_transfer(bench, image, sample, "pullwarden")
    return sample, service, client


def pull_skopeo(bench: Bench, image: BenchImage) -> Sample:
    """Time ``skopeo copy docker://… oci:FRESHDIR:v1`` and check what it wrote."""
    dest = bench.fresh_dir("skopeo")
    try:
        sample, _ = bench.observe(
            lambda: bench.skopeo.copy_from(bench.registry, image.repo_tag, f"oci:{dest}:{TAG}")
        )
        got = read_layout(dest)[TAG].digest
        if got != image.built.manifest_digest:
            bench.problem(f"skopeo copy of {image.label} wrote manifest {got}")
    finally:
        shutil.rmtree(dest, ignore_errors=True)
    check_transfer(bench, image, sample, "skopeo")
    return sample


def check_store(
    bench: Bench, service: LocalImageService, image: BenchImage, image_id: str, what: str
) -> None:
    """The store must hold the built image under its config digest and manifest digest."""
    built = image.built
    if image_id != built.config_digest:
        bench.problem(f"{what} of {image.label}: image id {image_id}, built {built.config_digest}")
    status = service.image_status(image_id)
    full_repo = bench.registry.ref(image.repository)
    expected = f"{full_repo}@{built.manifest_digest}"
    if status is None or expected not in status.repo_digests:
        held = status.repo_digests if status is not None else "nothing"
        bench.problem(f"{what} of {image.label}: store holds {held}, expected {expected}")


def check_transfer(bench: Bench, image: BenchImage, sample: Sample, who: str) -> None:
    """A cold pull must have downloaded every blob byte once (else MB/s means nothing)."""
    traffic = sample.traffic
    if traffic.blob_bytes != image.blob_bytes:
        bench.problem(
            f"{who} pull of {image.label} transferred {traffic.blob_bytes:,} blob bytes, "
            f"expected {image.blob_bytes:,}"
        )


def close_store(service: LocalImageService, client: RegistryClient) -> None:
    service.close()
    client.close()


def describe(image: BenchImage, who: str, round_no: int, sample: Sample) -> str:
    t = sample.traffic
    mbps = image.blob_bytes / MB / sample.seconds
    return (
        f"  round {round_no}  {who:<10} {sample.seconds:7.3f} s  {mbps:7.1f} MB/s  "
        f"(manifest req {t.manifest}, blob req {t.blob}, other req {t.other}, "
        f"blob bytes {t.blob_bytes:,})"
    )


def run_throughput(
    bench: Bench, image: BenchImage, rounds: int
) -> tuple[ThroughputRow, tuple[LocalImageService, RegistryClient]]:
    """Alternate cold pulls; returns the rows and the last pullwarden store, still open."""
    print(f"\n{image.label} ({image.blob_bytes:,} blob bytes)", flush=True)
    ours: list[Sample] = []
    theirs: list[Sample] = []
    kept: tuple[LocalImageService, RegistryClient] | None = None
    try:
        for round_no in range(1, rounds + 1):
            order = ("pullwarden", "skopeo") if round_no % 2 else ("skopeo", "pullwarden")
            for who in order:
                if who == "skopeo":
                    sample = pull_skopeo(bench, image)
                    theirs.append(sample)
                else:
                    sample, service, client = pull_ours(bench, image)
                    ours.append(sample)
                    if kept is not None:
                        close_store(*kept)
                        shutil.rmtree(kept[0].root, ignore_errors=True)
                    kept = (service, client)
                print(describe(image, who, round_no, sample), flush=True)
    except BaseException:
        if kept is not None:
            close_store(*kept)
        raise
    assert kept is not None
    return ThroughputRow(image, tuple(ours), tuple(theirs)), kept


# --- re-verification ---------------------------------------------------------------------------


def run_reverify(
    bench: Bench,
    image: BenchImage,
    store: tuple[LocalImageService, RegistryClient],
    times: int,
) -> list[ReverifyRow]:
    """Re-pull the held tag (same client, then fresh ones) and ``skopeo inspect --raw`` it."""
    service, client = store
    root = service.root
    ref = bench.registry.ref(image.repo_tag)

    same: list[Sample] = []
    try:
        for _ in range(times):
            sample, image_id = bench.observe(lambda: service.pull_image(ref))
            check_store(bench, service, image, image_id, "pullwarden re-pull")
            same.append(sample)
    finally:
        close_store(service, client)

    fresh: list[Sample] = []
    for _ in range(times):
        new_client = RegistryClient()
        new_service = LocalImageService(root, client=new_client)
        try:
            sample, image_id = bench.observe(partial(new_service.pull_image, ref))
            check_store(bench, new_service, image, image_id, "pullwarden fresh-client re-pull")
        finally:
            close_store(new_service, new_client)
        fresh.append(sample)
    shutil.rmtree(root, ignore_errors=True)

    inspected: list[Sample] = []
    for _ in range(times):
        sample, raw = bench.observe(
            lambda: bench.skopeo.inspect_raw(bench.registry, image.repo_tag)
        )
        if digest_of(raw) != image.built.manifest_digest:
            bench.problem(f"skopeo inspect --raw of {image.label} returned {digest_of(raw)}")
        inspected.append(sample)

    rows = [
        ReverifyRow(image, "pullwarden `pull_image`, same client", tuple(same)),
        ReverifyRow(image, "pullwarden `pull_image`, fresh client", tuple(fresh)),
        ReverifyRow(image, "`skopeo inspect --raw`", tuple(inspected)),
    ]
    for row in rows[:2]:
        for sample in row.samples:
            if sample.traffic.blob or sample.traffic.blob_bytes:
                bench.problem(
                    f"re-verification ({row.method}) of {image.label} fetched "
                    f"{sample.traffic.blob} blob(s), {sample.traffic.blob_bytes:,} bytes"
                )
        if any(s.traffic.manifest != 1 for s in row.samples):
            print(f"  WARNING: {row.method} did not cost exactly one manifest request", flush=True)
    return rows


# --- reporting ---------------------------------------------------------------------------------


def spread(values: Sequence[int]) -> str:
    """``3`` when all values agree, else ``min–max``."""
    low, high = min(values), max(values)
    return f"{low:,}" if low == high else f"{low:,}–{high:,}"


def throughput_table(rows: Sequence[ThroughputRow]) -> str:
    lines = [
        "| image | compressed bytes | pullwarden MB/s | skopeo copy MB/s | ours / skopeo |",
        "|---|---:|---:|---:|---:|",
    ]
    for row in rows:
        ours, theirs = row.mbps(row.ours), row.mbps(row.skopeo)
        lines.append(
            f"| {row.image.label} | {row.image.blob_bytes:,} "
            f"| **{statistics.median(ours):.0f}** ({', '.join(f'{v:.0f}' for v in ours)}) "
            f"| **{statistics.median(theirs):.0f}** ({', '.join(f'{v:.0f}' for v in theirs)}) "
            f"| **{row.ratio:.2f}×** |"
        )
    return "\n".join(lines)


def reverify_table(rows: Sequence[ReverifyRow], times: int) -> str:
    lines = [
        f"| image | method | ms (median of {times}) | manifest req | blob req | blob bytes "
        "| other req |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        t = [s.traffic for s in row.samples]
        ms = statistics.median(s.seconds for s in row.samples) * 1000
        lines.append(
            f"| {row.image.label} | {row.method} | {ms:.1f} | {spread([x.manifest for x in t])} "
            f"| {spread([x.blob for x in t])} | {spread([x.blob_bytes for x in t])} "
            f"| {spread([x.other for x in t])} |"
        )
    return "\n".join(lines)


def skopeo_startup(times: int = 5) -> float:
    """Median seconds of ``skopeo --version`` (process start-up, no network)."""
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        subprocess.run(
            [SKOPEO_BINARY, "--version"], capture_output=True, check=True, stdin=subprocess.DEVNULL
        )
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


# --- main --------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3, help="cold pulls per tool and image")
    parser.add_argument("--big-mb", type=int, default=100, help="size of the single-layer image")
    parser.add_argument("--layers", type=int, default=10, help="layers of the multi-layer image")
    parser.add_argument("--layer-mb", type=int, default=10, help="size of each of those layers")
    parser.add_argument("--reverify", type=int, default=5, help="timed re-verifications per kind")
    args = parser.parse_args(argv)
    for name in ("rounds", "big_mb", "layers", "layer_mb", "reverify"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    return args


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def run(args: argparse.Namespace, work: Path) -> int:
    registry = Registry(work / "registry", auth="none")
    with running(registry):
        bench = Bench(work, registry, Skopeo(work / "skopeo"))
        print(f"docker-registry on {registry.host}, work dir {work}", flush=True)
        startup = skopeo_startup()
        print(f"skopeo process start-up (`skopeo --version`, median of 5): {startup * 1000:.1f} ms")
        images = build_and_push(bench, args)

        throughput: list[ThroughputRow] = []
        reverify: list[ReverifyRow] = []
        for image in images:
            row, store = run_throughput(bench, image, args.rounds)
            throughput.append(row)
            reverify.extend(run_reverify(bench, image, store, args.reverify))

    print("\n### Cold pull throughput (median, all rounds in parentheses; MB = 10^6 bytes)\n")
    print(throughput_table(throughput))
    print(
        f"\nskopeo figures include its process start-up, {startup * 1000:.0f} ms "
        "(`skopeo --version`). Goal: ours / skopeo ≥ 1.5."
    )
    print("\n### Re-verification of a held tag (no-auth registry; requests from the access log)\n")
    print(reverify_table(reverify, args.reverify))

    below = [r.image.label for r in throughput if r.ratio < GOAL_RATIO]
    if below:
        print(f"\nNOTE: ratio below {GOAL_RATIO}× for: {', '.join(below)}")
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
