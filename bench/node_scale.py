"""Whole-process cost of a node and of the operator commands with 10,000 → 200,000 records.

For each size N a kubelet root is built with N pulled records shaped like a long-lived node's
(400 namespaces): 80 % one image name → a pull Secret of its own (every uid and hash distinct,
the worst case for memory), 10 % the namespace's builder service account (KEP-4412), 10 % node-wide
(``nodePodsAccessible``), one in 50 under a second name too, times spread over the past 90 days,
plus a handful of lingering pull intents (raw image spellings no runtime reports) and the
record of the one image the node holds.  That image is pulled once from an in-process dev
registry (stopped before any timing), so ``run`` needs no network.

Then whole processes (``python -m pullwarden.cli ...``, a fresh interpreter each) are timed,
several rounds in rotating order, min and median wall time and the peak RSS of the child
(GNU ``time``):

* ``--help``: the CLI's start-up floor (imports), the same in every row;
* ``run -f pod.yaml --root ROOT``: one pod whose image is present (``IfNotPresent``; the
  decision reads its record); image GC afterwards removes no image.  ``run`` works on a root
  whose records are all newer than the GC's start, so that the ``until`` guard keeps them
  whatever is pruned; ``run (absent images)`` on the realistic root, whose records are for
  images the node no longer has (the notes say how many records a pass pruned);
* ``records ls``, ``records ls -o json``, ``records ls -o yaml``, ``records check`` on
  ``--kubelet-dir ROOT``;
* ``gc (nothing)`` and ``gc (absent images)``: an explicit ``gc`` on the same two roots.

``run`` and ``gc`` work on a fresh copy of the root every time (hard links, made outside the
timing), since they may change it.  The machine may be shared: rounds rotate the
order of the commands and medians are reported.

    python bench/node_scale.py [--sizes 10000,100000,200000] [--rounds 3] [--work DIR]
        [--only LABEL,...] [--tree before=/tmp/old/src --tree after=src]

``--tree`` compares source trees in the same rounds (each command runs once per tree, the
order rotating too), which is the fair way on a shared machine: unpack an older commit with
``git archive OLD src | tar -x -C /tmp/old``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from _bytecode import ensure_bytecode

from pullwarden.devregistry import DevRegistry
from pullwarden.records import (
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
    encode,
)
from pullwarden.runtime import build_image

GOALS_AT_100K = {"run": 2.0, "records ls": 2.0, "records check": 3.0, "gc (nothing)": 2.0}
RSS_GOAL_MIB = 200
INTENTS = 20
POD = """\
apiVersion: v1
kind: Pod
metadata: {{name: trivial, namespace: default, uid: uid-trivial}}
spec:
  containers:
  - {{name: c, image: "{image}", imagePullPolicy: IfNotPresent}}
"""


@dataclass(frozen=True, slots=True)
class Command:
    label: str
    args: tuple[str, ...]
    root: str  # "none", "real" (read-only use), "real-copy" or "fresh-copy"


COMMANDS = (
    Command("--help", ("--help",), "none"),
    Command("run", ("run", "-f", "{pod}", "--root", "{root}"), "fresh-copy"),
    Command("run (absent images)", ("run", "-f", "{pod}", "--root", "{root}"), "real-copy"),
    Command("records ls", ("records", "ls", "--kubelet-dir", "{root}"), "real"),
    Command(
        "records ls -o json", ("records", "ls", "-o", "json", "--kubelet-dir", "{root}"), "real"
    ),
    Command(
        "records ls -o yaml", ("records", "ls", "-o", "yaml", "--kubelet-dir", "{root}"), "real"
    ),
    Command("records check", ("records", "check", "--kubelet-dir", "{root}"), "real"),
    Command("gc (nothing)", ("gc", "--root", "{root}"), "fresh-copy"),
    Command("gc (absent images)", ("gc", "--root", "{root}"), "real-copy"),
)


@dataclass(slots=True)
class Samples:
    seconds: list[float] = field(default_factory=list)
    rss_kib: list[int] = field(default_factory=list)
    notes: set[str] = field(default_factory=set)


def write_object(directory: Path, key: str, data: bytes) -> None:
    name = "sha256-" + hashlib.sha256(key.encode()).hexdigest()
    fd = os.open(directory / name, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def team_uid(team: str, what: str) -> str:
    return str(uuid.UUID(bytes=hashlib.md5(f"{team}/{what}".encode()).digest()))


def synthetic_record(rng: random.Random, i: int, now: datetime, fresh: bool) -> ImagePulledRecord:
    team = f"team-{i % 400}"
    name = f"registry-{i % 7}.example/{team}/app-{i}"
    ref = "sha256:" + rng.randbytes(32).hex()
    if fresh:
        when = now + timedelta(days=1, seconds=i % 3600)
    else:
        when = now - timedelta(seconds=rng.randrange(90 * 86400))
    kind = i % 20
    if kind < 16:  # one name, one pull Secret
        creds = ImagePullCredentials(
            kubernetes_secrets=(
                ImagePullSecret(
                    str(uuid.UUID(int=rng.getrandbits(128))),
                    team,
                    "regcred",
                    rng.randbytes(32).hex(),
                ),
            )
        )
    elif kind < 18:  # a service account's plugin credentials
        creds = ImagePullCredentials(
            kubernetes_service_accounts=(
                ImagePullServiceAccount(team_uid(team, "builder"), team, "builder"),
            )
        )
    else:  # node-wide credentials
        creds = ImagePullCredentials(node_pods_accessible=True)
    mapping = {name: creds}
    if i % 50 == 0:  # an image pulled under a second name too
        mapping[f"mirror.example/{team}/app-{i}"] = creds
    return ImagePulledRecord(ref, when, mapping)


def build_root(seed: Path, target: Path, n: int, *, fresh: bool) -> None:
    """``seed`` (a node root holding the pod's image and its record) plus n synthetic records."""
    shutil.copytree(seed, target, symlinks=True)
    pulled = target / "image_manager" / "pulled"
    pulling = target / "image_manager" / "pulling"
    rng = random.Random(n * 2 + fresh)
    now = datetime.now(UTC).replace(microsecond=0)
    for i in range(n):
        record = synthetic_record(rng, i, now, fresh)
        write_object(pulled, record.image_ref, encode(record))
    for i in range(INTENTS):
        intent = ImagePullIntent(f"team-{i}/tool:{i}")  # spellings no runtime reports
        write_object(pulling, intent.image, encode(intent))


def seed_node(work: Path) -> tuple[Path, Path]:
    """A node root that pulled one small image, and the pod manifest that uses it."""
    layout = work / "layout"
    build_image(layout, "app", files={"hello.txt": b"hello\n"})
    seed = work / "seed"
    with DevRegistry() as registry:
        registry.add_image("bench/app", "v1", layout, "app")
        pod = work / "pod.yaml"
        pod.write_text(POD.format(image=f"{registry.host}/bench/app:v1"))
        done = subprocess.run(
            [sys.executable, "-m", "pullwarden.cli", "run", "-f", str(pod), "--root", str(seed)],
            capture_output=True,
            text=True,
            check=False,
        )
    if done.returncode != 0:
        sys.exit(f"seeding the node failed:\n{done.stdout}{done.stderr}")
    return seed, pod


def hard_link_copy(source: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    subprocess.run(["cp", "-al", str(source), str(target)], check=True)


@dataclass(frozen=True, slots=True)
class Tree:
    """Which pullwarden the children run: this one, or the sources at ``src`` (PYTHONPATH)."""

    label: str
    src: Path | None = None

    def env(self) -> dict[str, str]:
        env = dict(os.environ)
        if self.src is not None:
            env["PYTHONPATH"] = os.pathsep.join(
                [str(self.src), *filter(None, [env.get("PYTHONPATH")])]
            )
        return env


TIME = shutil.which("time") or "/usr/bin/time"


def timed(argv: Sequence[str], env: dict[str, str]) -> tuple[float, int, int]:
    """Wall seconds, peak RSS (KiB) and exit status of one process.

    The peak comes from GNU time, whose own small process forks the child: a child forked
    from this (large) process would report this process's resident size as its own peak.
    """
    with tempfile.NamedTemporaryFile("r") as rss:
        start = time.perf_counter()
        done = subprocess.run(
            [TIME, "-f", "%M", "-o", rss.name, *argv],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
            check=False,
        )
        elapsed = time.perf_counter() - start
        lines = rss.read().split()
    peak = int(lines[-1]) if lines and lines[-1].isdigit() else 0
    return elapsed, peak, done.returncode


def measure(
    command: Command,
    tree: Tree,
    roots: dict[str, Path],
    pod: Path,
    scratch: Path,
    samples: Samples,
) -> None:
    root = roots.get(command.root.removesuffix("-copy"), scratch)
    if command.root.endswith("-copy"):
        hard_link_copy(root, scratch)
        root = scratch
    args = [a.format(pod=pod, root=root) for a in command.args]
    before = count_records(root) if command.root.endswith("-copy") else 0
    elapsed, rss, status = timed([sys.executable, "-m", "pullwarden.cli", *args], tree.env())
    samples.seconds.append(elapsed)
    samples.rss_kib.append(rss)
    if status != 0:
        samples.notes.add(f"exit {status}")
    if command.root.endswith("-copy"):
        samples.notes.add(f"pruned {before - count_records(root)}")


def count_records(root: Path) -> int:
    with os.scandir(root / "image_manager" / "pulled") as it:
        return sum(1 for e in it if e.name.startswith("sha256-") and not e.name.endswith(".tmp"))


Results = dict[int, dict[tuple[str, str], Samples]]


def report(results: Results, trees: Sequence[Tree]) -> None:
    width = max(len(t.label) for t in trees)
    head = (
        f"{'records':>8}  {'command':<20}{'tree':<{width}}{'min s':>8}{'median s':>10}"
        f"{'peak RSS':>10}  notes"
    )
    print(head)
    print("-" * len(head))
    for n, rows in results.items():
        for (label, tree), s in rows.items():
            med = statistics.median(s.seconds)
            rss = max(s.rss_kib) / 1024
            goal = GOALS_AT_100K.get(label)
            mark = ""
            if n == 100_000 and goal is not None:
                ok = med <= goal and rss <= RSS_GOAL_MIB
                mark = f"goal ≤ {goal:g} s, ≤ {RSS_GOAL_MIB} MiB: {'met' if ok else 'NOT met'}"
            notes = ", ".join(sorted(s.notes) + ([mark] if mark else []))
            print(
                f"{n:>8}  {label:<20}{tree:<{width}}{min(s.seconds):>8.2f}{med:>10.2f}"
                f"{rss:>7.0f} MiB  {notes}"
            )
        print()


def parse_tree(text: str) -> Tree:
    label, sep, src = text.partition("=")
    if not sep or not label or not src:
        raise argparse.ArgumentTypeError(f"expected LABEL=SRC_DIR, got {text!r}")
    return Tree(label, Path(src).resolve())


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,200000")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work", type=Path, help="scratch directory (default: a temporary one)")
    parser.add_argument(
        "--only", default="", help="comma-separated command labels to time (default: all)"
    )
    parser.add_argument(
        "--tree",
        action="append",
        type=parse_tree,
        metavar="LABEL=SRC_DIR",
        help="time the pullwarden whose sources are in SRC_DIR (e.g. an unpacked older commit's "
        "src/) beside the others, in the same rounds (repeatable; default: this one)",
    )
    args = parser.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    wanted = {s.strip() for s in args.only.split(",") if s.strip()}
    commands = [c for c in COMMANDS if not wanted or c.label in wanted]
    trees: list[Tree] = args.tree or [Tree("this")]
    # as an installed package has it (see _bytecode)
    ensure_bytecode(*(t.src for t in trees if t.src is not None))
    work = args.work or Path(tempfile.mkdtemp(prefix="node-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        seed, pod = seed_node(work)
        results: Results = {}
        for n in sizes:
            t0 = time.perf_counter()
            roots = {"real": work / f"real-{n}", "fresh": work / f"fresh-{n}"}
            build_root(seed, roots["real"], n, fresh=False)
            if any(c.root == "fresh-copy" for c in commands):
                build_root(seed, roots["fresh"], n, fresh=True)
            print(f"built {n} records in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
            rows = {(c.label, t.label): Samples() for c in commands for t in trees}
            scratch = work / "scratch"
            for round_no in range(args.rounds):
                shift = round_no % len(commands)
                turn = trees[round_no % len(trees) :] + trees[: round_no % len(trees)]
                for command in commands[shift:] + commands[:shift]:
                    for tree in turn:
                        measure(command, tree, roots, pod, scratch, rows[command.label, tree.label])
            results[n] = rows
            for r in roots.values():
                shutil.rmtree(r, ignore_errors=True)
            shutil.rmtree(scratch, ignore_errors=True)
        print(f"\nwhole processes, {args.rounds} rounds, python {sys.version.split()[0]}\n")
        report(results, trees)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
