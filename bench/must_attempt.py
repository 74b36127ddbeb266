"""Microseconds per ``must_attempt_image_pull``: cache against plain files, 50 → 100,000 records.

Each run stores N pulled records (one name → one secret each, like a node after N private pulls),
then answers 4,000 checks: half hit a stored imageRef with the pod's matching secret (the deepest
"allowed" path: record, name, credentials, hash match), half ask about an imageRef nobody
recorded under ``AlwaysVerify`` (the "must pull" path, which also probes the intent).  Serial,
then with two threads sharing the manager.  Upstream's Go figures (Xeon 8171M, 8 cores) are
printed beside ours.  Also reports the memory one cached record costs.

    python bench/must_attempt.py [--sizes 50,2000,100000] [--requests 4000]
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import tempfile
import threading
import time
import tracemalloc
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from pullwarden.metrics import Metrics
from pullwarden.policy import PolicyEnforcer
from pullwarden.pullmanager import PodCredentials, PullManager
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullSecret,
)
from pullwarden.records._cache import CachedRecordStore

UPSTREAM_US = {"cache": 14.5, "files": 66.0}
Check = tuple[str, str, Callable[[], PodCredentials]]


def populate(root: Path, n: int) -> list[tuple[str, str, ImagePullSecret]]:
    store = FileRecordStore(root)
    now = datetime.now(UTC)
    stored = []
    for i in range(n):
        name = f"test.repo/org/{uuid.uuid4()}"
        ref = f"sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}"
        secret = ImagePullSecret(
            str(uuid.uuid4()), f"ns-{i % 50}", f"pull-{i}", uuid.uuid4().hex * 2
        )
        creds = ImagePullCredentials(kubernetes_secrets=(secret,))
        store.write_pulled_record(ImagePulledRecord(ref, now, {name: creds}))
        stored.append((name, ref, secret))
    return stored


def requests(stored: list[tuple[str, str, ImagePullSecret]], count: int) -> list[Check]:
    rng = random.Random(7)
    checks: list[Check] = []
    for i in range(count):
        if i % 2 == 0:
            name, ref, secret = rng.choice(stored)
            pod: PodCredentials = ([secret], None)
            checks.append((name + ":v1", ref, lambda pod=pod: pod))
        else:
            ref = f"sha256:{uuid.uuid4().hex}{uuid.uuid4().hex}"
            checks.append((f"test.repo/org/{uuid.uuid4()}:v1", ref, lambda: ([], None)))
    return checks


def run(manager: PullManager, checks: list[Check], threads: int) -> float:
    """Wall-clock microseconds per check with ``threads`` threads sharing ``checks``."""
    chunks = [checks[i::threads] for i in range(threads)]
    expected = [i % 2 == 1 for i in range(len(checks))]
    answers: list[list[bool]] = [[] for _ in range(threads)]

    def work(k: int) -> None:
        out = answers[k]
        mp = manager.must_attempt_image_pull
        for image, ref, creds in chunks[k]:
            out.append(mp(image, ref, creds))

    workers = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    start = time.perf_counter()
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    elapsed = time.perf_counter() - start
    got = [a for k in range(threads) for a in answers[k]]
    want = [e for k in range(threads) for e in expected[k::threads]]
    if got != want:
        sys.exit("bench: wrong answers — the benchmark is measuring a broken manager")
    return elapsed * 1e6 / len(checks)


def bytes_per_cached_record(root: Path, n: int) -> float:
    gc.collect()
    tracemalloc.start()
    base = tracemalloc.get_traced_memory()[0]
    cache = CachedRecordStore(FileRecordStore(root, migrate=False))
    gc.collect()
    used = tracemalloc.get_traced_memory()[0] - base
    tracemalloc.stop()
    assert cache.records_authoritative
    return used / n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", default="50,2000,100000")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3, help="best of this many runs per cell")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    rows = []
    memory = {}
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
            root = Path(tmp)
            t0 = time.perf_counter()
            stored = populate(root, n)
            fill_s = time.perf_counter() - t0
            checks = requests(stored, args.requests)
            for mode in ("cache", "files"):
                t0 = time.perf_counter()
                files = FileRecordStore(root)
                manager = PullManager(
                    CachedRecordStore(files) if mode == "cache" else files,
                    PolicyEnforcer("AlwaysVerify"),
                    None,
                    metrics=Metrics(),
                )
                start_s = time.perf_counter() - t0
                run(manager, checks[:200], 1)  # warm-up
                for threads in (1, 2):
                    best = min(run(manager, checks, threads) for _ in range(args.rounds))
                    rows.append((n, mode, threads, best, start_s))
            memory[n] = bytes_per_cached_record(root, n)
            print(f"# {n} records written in {fill_s:.1f} s", file=sys.stderr)

    print(
        f"{'records':>8} {'store':>6} {'threads':>7} {'µs/check':>9} {'upstream µs':>11} "
        f"{'ratio':>6} {'start-up s':>10}"
    )
    for n, mode, threads, us, start_s in rows:
        up = UPSTREAM_US[mode]
        print(
            f"{n:>8} {mode:>6} {threads:>7} {us:>9.2f} {up:>11.1f} {up / us:>5.1f}x"
            f" {start_s:>10.2f}"
        )
    print()
    for n, b in memory.items():
        print(f"memory per cached record at {n:>6} records: {b:,.0f} bytes")
    print(
        "(upstream figures: Go, Xeon Platinum 8171M, 8 cores, 2,000 records; ratio = upstream/ours)"
    )


if __name__ == "__main__":
    main()
