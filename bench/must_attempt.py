"""Microseconds per ``must_attempt_image_pull`` and per ``decide()``, 50 → 200,000 records.

Each size stores N pulled records (one name → one secret each, like a node after N private pulls).

The *mixed* table answers 4,000 checks per run: half hit a stored imageRef with the pod's matching
secret (the deepest "allowed" path: record, name, credentials, hash match), half ask about an
imageRef nobody recorded under ``AlwaysVerify`` (the "must pull" path, which also probes the
intent).  Cache against plain files; serial, then with two threads sharing the manager.
Upstream's Go figures (Xeon 8171M, 8 cores) are printed beside ours.  Also reports the memory one
cached record costs.

The *decision* table is the node's path: record hits only, serial, through the cache with
``Protections.all()`` (as :class:`~pullwarden.node.Node` builds it), every one of the N distinct
image/imageRef pairs checked in turn (so a per-key memo smaller than the key set cannot help;
the process-wide name memo is reset and warmed with a size's own names before its checks, as
each size stands for one node),
``decide()`` beside the plain ``must_attempt_image_pull``; a column checks 50 of the N keys
over and over (hot in the CPU caches), which separates work that grows with the number of keys
from memory latency; the last gives each check new copies of the caller's strings, as a node's
are (read from the runtime, the pod's secrets just gathered: equal to the record's, other
objects, and hot), so that only the manager's own memory is cold.  Each pass runs at least
``--decide-checks`` checks; rounds rotate the order of sizes and of the columns, and each cell
is the median over rounds (the spread is printed too).
The last lines give the flatness (max/min over sizes) of each column, how often the image-name
trimming memo hit (the cache keeps each record's key for the image it last served, so a hit
may not trim at all), and what the callers' own objects alone cost per check at each size: the
part of the growth no pull manager can remove.

    python bench/must_attempt.py [--table all|mixed|decision] [--sizes 50,2000,100000]
        [--decide-sizes 50,2000,100000,200000] [--requests 4000] [--decide-rounds 7]
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
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
from pullwarden.pullmanager import PodCredentials, Protections, PullManager
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullSecret,
)
from pullwarden.records._cache import CachedRecordStore
from pullwarden.reference import trim_tag_digest

UPSTREAM_US = {"cache": 14.5, "files": 66.0}
Check = tuple[str, str, Callable[[], PodCredentials]]
NodeCheck = tuple[str, str, Callable[[], PodCredentials], tuple[str, ...]]
DECISION_GOAL_US = 5.0


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


def hit_checks(stored: list[tuple[str, str, ImagePullSecret]], minimum: int) -> list[NodeCheck]:
    """Every stored pair once, shuffled, repeated up to ``minimum`` checks; all are record hits."""
    rng = random.Random(11)
    one_pass: list[NodeCheck] = []
    for name, ref, secret in stored:
        pod: PodCredentials = ([secret], None)
        image = name + ":v1"
        one_pass.append((image, ref, lambda pod=pod: pod, (image,)))
    rng.shuffle(one_pass)
    return one_pass * max(1, -(-minimum // len(one_pass)))


def pass_must_attempt(manager: PullManager, checks: list[NodeCheck]) -> float:
    """µs per ``must_attempt_image_pull`` over ``checks`` (all must be allowed)."""
    mp = manager.must_attempt_image_pull
    wrong = 0
    start = time.perf_counter()
    for image, ref, creds, names in checks:
        wrong += mp(image, ref, creds, image_names=names)
    elapsed = time.perf_counter() - start
    if wrong:
        sys.exit("bench: must_attempt_image_pull refused a record hit")
    return elapsed * 1e6 / len(checks)


def pass_caller(checks: list[NodeCheck]) -> float:
    """µs per check spent on the caller's own objects alone: no manager, the same touches.

    Every check reads what any decision must read of its arguments (the imageRef and image
    strings, the pod's credentials and each field of its secrets); with N distinct keys these
    are as cold as the records, so this is the part of a column's growth that no pull manager
    can remove.
    """
    start = time.perf_counter()
    for image, ref, creds, _ in checks:
        hash(image), hash(ref)
        for secret in creds()[0]:
            len(secret.uid), len(secret.namespace), len(secret.name), len(secret.credential_hash)
    return (time.perf_counter() - start) * 1e6 / len(checks)


def pass_decide(manager: PullManager, checks: list[NodeCheck]) -> float:
    """µs per ``decide()`` over ``checks``, reading ``must_pull`` as the node does."""
    decide = manager.decide
    wrong = 0
    start = time.perf_counter()
    for image, ref, creds, names in checks:
        wrong += decide(image, ref, creds, image_names=names).must_pull
    elapsed = time.perf_counter() - start
    if wrong:
        sys.exit("bench: decide() refused a record hit")
    return elapsed * 1e6 / len(checks)


def _copy(text: str) -> str:
    """An equal string that is another object, just allocated (so hot in the CPU caches)."""
    return text[:1] + text[1:]


def pass_decide_fresh(manager: PullManager, checks: list[NodeCheck], batch: int = 64) -> float:
    """µs per ``decide()`` when the caller's objects are new, as a node's are.

    A node checks an imageRef it has just read from the runtime for a pod whose credentials it
    has just gathered: its strings are fresh, equal to the record's but other objects, and in
    the CPU caches, while the records are not.  So every ``batch`` checks get new copies of
    their image, imageRef and secret strings (untimed), then are timed; only the manager's own
    memory is cold.
    """
    decide = manager.decide
    wrong = 0
    elapsed = 0.0
    for at in range(0, len(checks), batch):
        fresh = []
        for image, ref, creds, _ in checks[at : at + batch]:
            secrets = [
                ImagePullSecret(
                    _copy(s.uid), _copy(s.namespace), _copy(s.name), _copy(s.credential_hash)
                )
                for s in creds()[0]
            ]
            pod: PodCredentials = (secrets, None)
            image = _copy(image)
            fresh.append((image, _copy(ref), lambda pod=pod: pod, (image,)))
        start = time.perf_counter()
        for image, ref, creds, names in fresh:
            wrong += decide(image, ref, creds, image_names=names).must_pull
        elapsed += time.perf_counter() - start
    if wrong:
        sys.exit("bench: decide() refused a record hit")
    return elapsed * 1e6 / len(checks)


# column → (call, which checks: every key in turn, or 50 of them over and over)
COLUMNS: dict[str, tuple[Callable[[PullManager, list[NodeCheck]], float], str]] = {
    "must_attempt": (pass_must_attempt, "all"),
    "decide": (pass_decide, "all"),
    "decide, 50 hot": (pass_decide, "hot"),
    "decide, fresh callers": (pass_decide_fresh, "all"),
}


def _memo_info() -> tuple[int, int] | None:
    """(hits, misses) of the image-name trimming memo, when it has one."""
    info = getattr(trim_tag_digest, "cache_info", None)
    return None if info is None else info()[:2]


def decision_table(
    roots: dict[int, Path],
    stored: dict[int, list[tuple[str, str, ImagePullSecret]]],
    sizes: list[int],
    rounds: int,
    minimum: int,
) -> None:
    managers = {}
    checks: dict[tuple[int, str], list[NodeCheck]] = {}
    for n in sizes:
        t0 = time.perf_counter()
        managers[n] = PullManager(
            CachedRecordStore(FileRecordStore(roots[n])),
            PolicyEnforcer("AlwaysVerify"),
            None,
            metrics=Metrics(),
            protections=Protections.all(),
        )
        checks[n, "all"] = hit_checks(stored[n], minimum)
        checks[n, "hot"] = hit_checks(random.Random(n).sample(stored[n], min(50, n)), minimum)
        print(
            f"# decision: {n} records loaded in {time.perf_counter() - t0:.1f} s", file=sys.stderr
        )
    for n in sizes:  # warm-up: every key once through each call
        for call, which in COLUMNS.values():
            call(managers[n], checks[n, which][: len(stored[n])])
    samples: dict[tuple[int, str], list[float]] = {(n, c): [] for n in sizes for c in COLUMNS}
    memo: dict[int, float | None] = {}
    names = list(COLUMNS)
    for r in range(rounds):
        order = sizes[r % len(sizes) :] + sizes[: r % len(sizes)]
        columns = names[r % len(names) :] + names[: r % len(names)]
        for n in order:
            # Each size stands for a node of its own: the process-wide name memo starts from
            # this node's names (one untimed pass), not from the other sizes' left-overs.
            clear = getattr(trim_tag_digest, "cache_clear", None)
            if clear is not None:
                clear()
                pass_decide(managers[n], checks[n, "all"][: len(stored[n])])
            for c in columns if r % 2 == 0 else columns[::-1]:
                call, which = COLUMNS[c]
                gc.collect()
                before = _memo_info()
                samples[n, c].append(call(managers[n], checks[n, which]))
                after = _memo_info()
                if c == "decide" and before is not None and after is not None:
                    # The cache keeps each record's key for the image it last served, so a hit
                    # may not trim at all ("not called").
                    hits, misses = after[0] - before[0], after[1] - before[1]
                    memo[n] = hits / (hits + misses) if hits + misses else None
        print(f"# decision: round {r + 1}/{rounds} done", file=sys.stderr)

    med = {k: statistics.median(v) for k, v in samples.items()}
    print(
        f"record hits, serial, cache + Protections.all(), AlwaysVerify; median of {rounds} rounds "
        "(min–max), µs per check; every key in turn, and 50 of the N keys over and over (hot)"
    )
    print(
        f"{'records':>8} {'checks':>7} {'must_attempt µs':>22} {'decide µs':>22} "
        f"{'decide/must':>11} {'decide, 50 hot µs':>22} {'decide, fresh callers µs':>25}"
    )
    for n in sizes:
        cells = []
        for c in names:
            lo, hi = min(samples[n, c]), max(samples[n, c])
            cells.append(f"{med[n, c]:>6.2f} ({lo:.2f}–{hi:.2f})")
        ratio = med[n, "decide"] / med[n, "must_attempt"]
        print(
            f"{n:>8} {len(checks[n, 'all']):>7} {cells[0]:>22} {cells[1]:>22} {ratio:>10.2f}x "
            f"{cells[2]:>22} {cells[3]:>25}"
        )
    for c in names:
        values = [med[n, c] for n in sizes]
        print(f"flatness of {c} (max/min over sizes): {max(values) / min(values):.2f}x")
    if memo:
        rates = ", ".join(
            f"{n}: {'not called' if rate is None else f'{rate:.0%}'}" for n, rate in memo.items()
        )
        print(f"trim_tag_digest memo hits during decide (every key in turn): {rates}")
    caller = {n: statistics.median(pass_caller(checks[n, "all"]) for _ in range(3)) for n in sizes}
    floor = ", ".join(f"{n}: {us:.2f} µs" for n, us in caller.items())
    print(f"the callers' own objects alone, every key in turn (no manager): {floor}")
    worst = max(med[n, "decide"] for n in sizes)
    worst_ratio = max(med[n, "decide"] / med[n, "must_attempt"] for n in sizes)
    print(
        f"goals: decide ≤ {DECISION_GOAL_US:.0f} µs at every size (worst {worst:.2f}), flat within "
        f"1.5x, decide/must_attempt ≤ 1.5x (worst {worst_ratio:.2f}x)"
    )


def mixed_table(
    roots: dict[int, Path],
    stored: dict[int, list[tuple[str, str, ImagePullSecret]]],
    sizes: list[int],
    count: int,
    rounds: int,
) -> None:
    rows = []
    memory = {}
    for n in sizes:
        root = roots[n]
        checks = requests(stored[n], count)
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
                best = min(run(manager, checks, threads) for _ in range(rounds))
                rows.append((n, mode, threads, best, start_s))
        memory[n] = bytes_per_cached_record(root, n)

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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--table", choices=("all", "mixed", "decision"), default="all")
    ap.add_argument("--sizes", default="50,2000,100000", help="record counts of the mixed table")
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--rounds", type=int, default=3, help="best of this many runs per mixed cell")
    ap.add_argument(
        "--decide-sizes",
        default="50,2000,100000,200000",
        help="record counts of the decision table",
    )
    ap.add_argument("--decide-rounds", type=int, default=7, help="median of this many passes")
    ap.add_argument("--decide-checks", type=int, default=40_000, help="at least this many a pass")
    args = ap.parse_args()
    mixed = [int(s) for s in args.sizes.split(",")] if args.table != "decision" else []
    decision = [int(s) for s in args.decide_sizes.split(",")] if args.table != "mixed" else []

    with tempfile.TemporaryDirectory(prefix="pw-bench-") as tmp:
        roots: dict[int, Path] = {}
        stored = {}
        for n in sorted({*mixed, *decision}):
            roots[n] = Path(tmp) / str(n)
            t0 = time.perf_counter()
            stored[n] = populate(roots[n], n)
            print(f"# {n} records written in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        if mixed:
            mixed_table(roots, stored, mixed, args.requests, args.rounds)
        if mixed and decision:
            print()
        if decision:
            decision_table(roots, stored, decision, args.decide_rounds, args.decide_checks)


if __name__ == "__main__":
    main()
