"""The README's quick-start commands, read from README.md and run for real from a fresh clone."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest

from pullwarden.cli import main

REPO = Path(__file__).resolve().parents[2]


def quickstart_commands(readme: str) -> list[str]:
    """The commands of the first ``sh`` block under "## Quick start", comments dropped."""
    section = readme.split("\n## Quick start\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```sh\n(.*?)^```", section, re.S | re.M)
    assert block is not None, "README.md: no ```sh block under ## Quick start"
    commands = []
    for line in block.group(1).splitlines():
        command = line.split("#", 1)[0].strip()
        if command:
            commands.append(command)
    return commands


def test_the_quickstart_block_is_found() -> None:
    commands = quickstart_commands((REPO / "README.md").read_text())
    assert len(commands) >= 2
    assert any("scripts/demo" in c for c in commands)
    assert any("scripts/test" in c for c in commands)
    # Parsing is not a formality: a block it cannot find is an error.
    with pytest.raises(AssertionError):
        quickstart_commands("# x\n\n## Quick start\n\nno block\n\n## Next\n")


def test_demo_checks_its_own_expectations() -> None:
    from click.testing import CliRunner

    result = CliRunner().invoke(main, ["demo", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "every step behaved as KEP-2535 says" in result.output


def outside_any_venv(environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of a fresh shell: no virtual environment active or on PATH, none named
    for the scripts (so they make their own .venv in the clone, as on a fresh machine)."""
    env = dict(environ)
    for name in ("VIRTUAL_ENV", "PULLWARDEN_VENV", "PULLWARDEN_STORE", "PYTHONPATH"):
        env.pop(name, None)
    path = env.get("PATH", "").split(os.pathsep)
    env["PATH"] = os.pathsep.join(d for d in path if not (Path(d).parent / "pyvenv.cfg").exists())
    return env


@pytest.mark.slow
def test_readme_commands_from_a_fresh_clone(tmp_path: Path) -> None:
    if not (REPO / ".git").exists() or shutil.which("git") is None:
        pytest.skip("needs the git checkout")
    if os.environ.get("PULLWARDEN_QUICKSTART_NESTED"):
        pytest.skip("already inside the quick-start test")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True, timeout=120)
    commands = quickstart_commands((clone / "README.md").read_text())
    env = outside_any_venv(os.environ)
    env["PULLWARDEN_QUICKSTART_NESTED"] = "1"
    env["HOME"] = str(tmp_path / "home")  # whatever the scripts keep under ~ stays in here
    (tmp_path / "home").mkdir()

    def sh(command: str, timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["bash", "-c", command],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    ran = set()
    for command in commands:
        argv = shlex.split(command)
        if argv[0].endswith("scripts/demo"):
            demo = sh(command, 900)
            assert demo.returncode == 0, demo.stderr[-2000:]
            assert "every step behaved as KEP-2535 says" in demo.stdout
            stamp = clone / ".venv" / ".pullwarden-demo-stamp"
            assert stamp.is_file(), "the demo made no .venv of its own in the checkout"
            # Run again: nothing changed, so nothing is reinstalled.
            installed = stamp.stat().st_mtime_ns
            again = sh(command, 900)
            assert again.returncode == 0, again.stderr[-2000:]
            assert stamp.stat().st_mtime_ns == installed, "the second demo reinstalled"
        elif argv[0].endswith("scripts/test"):
            # The README's command, narrowed to one small module: the whole suite from inside
            # the suite would run everything twice.
            tests = sh(f"{command} tests/test_locks.py", 1200)
            assert tests.returncode == 0, (tests.stdout[-2000:], tests.stderr[-2000:])
            assert " passed" in tests.stdout
            assert (clone / ".venv" / ".pullwarden-test-stamp").is_file()
        else:
            pytest.fail(f"README quick start: no check for {command!r}")
        ran.add(Path(argv[0]).name)
    assert ran == {"demo", "test"}
