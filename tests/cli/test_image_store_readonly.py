"""`images` and `rmi` only read: a store that is not there is never created.

A store the user named with --store that does not exist is exit 2 with one line; the default
store ($PULLWARDEN_STORE, else the default root's) before the first pull lists as empty.  Only
`pull` makes a store.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


def pullwarden(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pullwarden", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def fresh_user(home: Path, **extra: str) -> dict[str, str]:
    """A user with nothing of pullwarden's yet: no store variables, HOME and XDG dirs fresh."""
    drop = ("PULLWARDEN_STORE", "PULLWARDEN_ROOT", "CONTAINER_RUNTIME_ENDPOINT", "XDG_DATA_HOME")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    env["HOME"] = str(home)
    env.update(extra)
    return env


def everything_under(path: Path) -> list[Path]:
    return sorted(path.rglob("*"))


def error_line(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert result.stdout == ""
    return lines[0]


@pytest.mark.parametrize(
    "args",
    [["images"], ["images", "-o", "json"], ["rmi", "abcd1234"], ["rmi", "--all"]],
    ids=["images", "images-json", "rmi", "rmi-all"],
)
def test_a_named_store_that_is_not_there_is_bad_input(tmp_path: Path, args: list[str]) -> None:
    env = fresh_user(tmp_path / "home")
    typo = tmp_path / "typo" / "store"
    line = error_line(pullwarden(*args, "--store", str(typo), env=env))
    assert line == f"error: no image store at {typo} (`pullwarden pull` makes one)"
    # $PULLWARDEN_STORE is the default store: not there yet, it lists as empty
    by_env = pullwarden(*args, env={**env, "PULLWARDEN_STORE": str(typo)})
    assert by_env.returncode == (4 if args == ["rmi", "abcd1234"] else 0), by_env.stderr
    assert not (tmp_path / "typo").exists()
    assert not (tmp_path / "home").exists()


def test_a_directory_that_holds_no_store_is_not_written_to(tmp_path: Path) -> None:
    env = fresh_user(tmp_path / "home")
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine\n")
    for args in (["images"], ["rmi", "--all"], ["rmi", "--dry-run", "x"]):
        assert "no image store" in error_line(pullwarden(*args, "--store", str(other), env=env))
    assert everything_under(other) == [other / "notes.txt"]


def test_the_default_store_before_any_pull_is_empty_and_not_created(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    for env in (fresh_user(home), fresh_user(home, XDG_DATA_HOME=str(tmp_path / "xdg"))):
        listed = pullwarden("images", env=env)
        assert listed.returncode == 0, listed.stderr
        assert listed.stdout.split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
        document = pullwarden("images", "-o", "json", env=env)
        assert document.returncode == 0 and document.stdout.strip() == '{\n  "images": []\n}'
        missing = pullwarden("rmi", "127.0.0.1:1/ns/x:v1", env=env)
        assert missing.returncode == 4
        assert missing.stderr.strip() == "error: no such image: 127.0.0.1:1/ns/x:v1"
        emptied = pullwarden("rmi", "--all", env=env)
        assert (emptied.returncode, emptied.stdout, emptied.stderr) == (0, "", "")
    assert everything_under(home) == []
    assert not (tmp_path / "xdg").exists()
