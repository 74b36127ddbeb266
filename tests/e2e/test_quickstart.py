"""The README's two quick-start commands, run for real from a fresh clone."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pullwarden.cli import main

REPO = Path(__file__).resolve().parents[2]


def test_demo_checks_its_own_expectations() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["demo", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "every step behaved as KEP-2535 says" in result.output


@pytest.mark.slow
def test_readme_commands_from_a_fresh_clone(tmp_path: Path) -> None:
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git checkout")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    readme = (clone / "README.md").read_text()
    assert "./scripts/demo" in readme and "./scripts/test" in readme
    env = {**os.environ, "PULLWARDEN_VENV": str(tmp_path / "venv")}
    env.pop("PULLWARDEN_STORE", None)
    demo = subprocess.run(
        ["./scripts/demo", "--quiet"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "every step behaved as KEP-2535 says" in demo.stdout
    # The test command, on one small module (running the whole suite from inside it would recurse).
    tests = subprocess.run(
        ["./scripts/test", "tests/test_locks.py"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert tests.returncode == 0, (tests.stdout[-2000:], tests.stderr[-2000:])
    assert " passed" in tests.stdout
