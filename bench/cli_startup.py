"""Start-up of the ``pullwarden`` commands as whole processes, beside skopeo and ctr (issue 11).

Each command is the console script of this interpreter's installation (``bin/pullwarden`` next
to ``sys.executable``, as a user's ``pullwarden`` resolves in an activated virtual environment;
``python -m pullwarden.cli`` when there is none), spawned and waited for; wall time from spawn to
exit.  Rounds rotate the order of the commands so that no command always runs first or after the
same neighbour; each row gives the minimum and the median over the rounds, in milliseconds.

Peers in the same run: ``skopeo --help``, ``ctr --help`` (when installed), and two floors for any
Python tool on this machine: ``python -c pass`` (with ``site``, so with whatever ``.pth`` files the
installation has) and ``python -I -S -c pass``.

The records commands run on an empty node root (a directory with an empty ``image_manager/``).
The package's bytecode is written first, as an installed package has it (``_bytecode``).

    python bench/cli_startup.py [--rounds 15]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _bytecode import ensure_bytecode

GOALS_MS = {
    "pullwarden --help": 120.0,
    "pullwarden records ls": 120.0,
    "pullwarden records explain": 150.0,
}
IMAGE_REF = "sha256:" + "ab" * 32


def pullwarden() -> list[str]:
    script = Path(sys.executable).parent / "pullwarden"
    if script.is_file() and os.access(script, os.X_OK):
        return [str(script)]
    return [sys.executable, "-m", "pullwarden.cli"]


def commands(root: Path) -> dict[str, list[str]]:
    pw = pullwarden()
    table = {
        "pullwarden --help": [*pw, "--help"],
        "pullwarden --version": [*pw, "--version"],
        "pullwarden records ls": [*pw, "records", "ls", "-d", str(root)],
        "pullwarden records explain": [
            *pw,
            "records",
            "explain",
            "-d",
            str(root),
            "--image",
            "registry.example/team/app:v1",
            "--image-ref",
            IMAGE_REF,
        ],
        "pullwarden run --help": [*pw, "run", "--help"],
        "pullwarden pull --help": [*pw, "pull", "--help"],
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -I -S -c pass": [sys.executable, "-I", "-S", "-c", "pass"],
    }
    for peer, args in (("skopeo", ["--help"]), ("ctr", ["--help"])):
        path = shutil.which(peer)
        if path is not None:
            table[f"{peer} --help"] = [path, *args]
    return table


def once(argv: list[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"bench: {' '.join(argv)} exited {done.returncode}: {done.stderr.decode()}")
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    ensure_bytecode()  # as an installed package has it (see _bytecode)
    with tempfile.TemporaryDirectory(prefix="pw-startup-") as tmp:
        root = Path(tmp, "node")
        (root / "image_manager").mkdir(parents=True)
        table = commands(root)
        names = list(table)
        for argv in table.values():  # warm the page cache and any byte-code caches
            once(argv)
        samples: dict[str, list[float]] = {name: [] for name in names}
        for r in range(args.rounds):
            shift = r % len(names)
            for name in names[shift:] + names[:shift]:
                samples[name].append(once(table[name]))
    print(f"whole processes, {args.rounds} rounds, order rotated; wall ms")
    print(f"{'command':32} {'min':>7} {'median':>7} {'goal':>6}")
    missed = []
    for name in names:
        lo, med = min(samples[name]), statistics.median(samples[name])
        goal = GOALS_MS.get(name)
        mark = ""
        if goal is not None:
            mark = f"{goal:6.0f}" + ("" if med <= goal else "  missed")
            if med > goal:
                missed.append(name)
        print(f"{name:32} {lo:7.1f} {med:7.1f} {mark}")
    skopeo = samples.get("skopeo --help")
    if skopeo:
        base = statistics.median(skopeo)
        help_ratio = statistics.median(samples["pullwarden --help"]) / base
        print(f"pullwarden --help / skopeo --help (medians): {help_ratio:.1f}x")
    print("goals: " + ("all met" if not missed else "missed: " + ", ".join(missed)))


if __name__ == "__main__":
    main()
