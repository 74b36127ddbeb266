"""The run's seed (tests/conftest.py): printed, reported on failure, and it replays the run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import random

from hypothesis import given, strategies as st


def test_draws(rng: random.Random) -> None:
    print("drew", [rng.randrange(1 << 30) for _ in range(3)])
    assert False, "fails on purpose"


@given(st.integers(0, 1 << 60))
def test_property(n: int) -> None:
    print("tried", n)
    assert n < 1 << 59
"""


def pytest_run(tmp_path: Path, seed: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # this directory is the rootdir
    (tmp_path / "test_probe.py").write_text(PROBE)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("PULLWARDEN_TEST_SEED", None)
    if seed is not None:
        env["PULLWARDEN_TEST_SEED"] = seed
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.conftest", "-p", "no:cacheprovider",
         "-rA", "-s", *args, "test_probe.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip


def drawn(output: str) -> str:
    found = re.search(r"drew (\[[^\]]*\])", output, re.M)
    assert found is not None, output
    return found.group(1)


def test_a_failure_reports_the_seed_and_the_seed_replays_it(tmp_path: Path) -> None:
    first = pytest_run(tmp_path, "12345")
    assert first.returncode == 1, first.stdout
    assert "random seed: 12345 (repeat with PULLWARDEN_TEST_SEED=12345)" in first.stdout
    # Both failures carry the seed in their report.
    assert first.stdout.count("PULLWARDEN_TEST_SEED=12345 replays this run") == 2, first.stdout
    again = pytest_run(tmp_path, "12345")
    assert drawn(again.stdout) == drawn(first.stdout)
    tried = re.findall(r"tried (\d+)$", first.stdout, re.M)
    assert tried and tried == re.findall(r"tried (\d+)$", again.stdout, re.M)
    other = pytest_run(tmp_path, "54321")
    assert drawn(other.stdout) != drawn(first.stdout)


def test_without_a_seed_one_is_drawn_and_printed(tmp_path: Path) -> None:
    done = pytest_run(tmp_path, None)
    found = re.search(r"random seed: (\d+) \(repeat with PULLWARDEN_TEST_SEED=\1\)", done.stdout)
    assert found is not None, done.stdout
    replay = pytest_run(tmp_path, found.group(1))
    assert drawn(replay.stdout) == drawn(done.stdout)


def test_an_explicit_hypothesis_seed_is_kept_and_reported(tmp_path: Path) -> None:
    done = pytest_run(tmp_path, "7", "--hypothesis-seed=99")
    assert "hypothesis ran with --hypothesis-seed=99" in done.stdout, done.stdout


def test_a_bad_seed_is_a_usage_error(tmp_path: Path) -> None:
    done = pytest_run(tmp_path, "lucky")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "PULLWARDEN_TEST_SEED='lucky' is not an integer" in done.stderr
