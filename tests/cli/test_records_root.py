"""``records``: where the records are (--root, -d/--kubelet-dir, $PULLWARDEN_ROOT, the default
root of ``pullwarden run``), that reading never creates anything, and the shared -o/--dry-run
spellings.  Every command runs as a process, as an operator runs it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.cli._records_support import (
    IMAGE,
    REF,
    make_root,
    one_error_line,
    pw,
    pw_json,
    tree,
)

UNTIL = "2100-01-01T00:00:00Z"
SOME_REF = "sha256:" + "ab" * 32

# Every subcommand that must not write, with what it needs besides the root.
READ_ONLY: list[list[str]] = [
    ["ls"],
    ["ls", "-o", "json"],
    ["show", REF],
    ["explain", "--image", IMAGE, "--image-ref", REF],
    ["who-can", IMAGE],
    ["check"],
    ["prune", "--all", "--until", UNTIL],
    ["prune", "--all", "--until", UNTIL, "--dry-run"],
    ["migrate"],
    ["migrate", "--dry-run"],
]


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
@pytest.mark.parametrize("spelling", ["--root", "-d", "--kubelet-dir", "env"])
def test_a_root_that_does_not_exist_is_one_line_and_creates_nothing(
    tmp_path: Path, args: list[str], spelling: str
) -> None:
    missing = tmp_path / "no-such-root"
    if spelling == "env":
        result = pw("records", *args, code=None, env={"PULLWARDEN_ROOT": str(missing)})
    else:
        result = pw("records", *args, spelling, str(missing), code=None)
    line = one_error_line(result)
    assert str(missing) in line and "does not exist" in line
    assert "pass --root" in line and "-d /var/lib/kubelet" in line
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("args", READ_ONLY, ids=" ".join)
def test_a_root_without_image_manager_holds_no_records_and_stays_empty(
    tmp_path: Path, args: list[str]
) -> None:
    root = tmp_path / "node"
    root.mkdir()
    before = tree(root)
    result = pw("records", *args, "--root", str(root), code=None)
    # show finds nothing (1); everything else answers (0)
    assert result.returncode == (1 if args[0] == "show" else 0), result.stderr
    assert tree(root) == before
    assert list(root.iterdir()) == []


def test_an_empty_root_lists_nothing(tmp_path: Path) -> None:
    out = pw("records", "ls", "--root", str(tmp_path)).stdout
    assert out.splitlines() == [
        "IMAGE REF  NAMES  SECRETS  SERVICE ACCOUNTS  NODE-WIDE  LAST UPDATED"
    ]
    data = pw_json("records", "ls", "--root", str(tmp_path))
    assert data == {"pulledRecords": [], "pullIntents": [], "errors": []}
    check = pw("records", "check", "--root", str(tmp_path)).stdout
    assert "does not exist yet: no records" in check
    assert list(tmp_path.iterdir()) == []


def test_apply_on_a_root_without_records_creates_nothing(tmp_path: Path) -> None:
    pw("records", "prune", "--root", str(tmp_path), "--all", "--until", UNTIL, "--apply")
    pw("records", "migrate", "--root", str(tmp_path), "--apply")
    assert list(tmp_path.iterdir()) == []


def test_a_root_that_is_a_file_is_an_error(tmp_path: Path) -> None:
    f = tmp_path / "file"
    f.write_text("x")
    line = one_error_line(pw("records", "ls", "--root", str(f), code=None))
    assert "is not a directory" in line


def listed_refs(*args: str, env: dict[str, str] | None = None) -> list[str]:
    data = pw_json("records", "ls", *args, env=env)
    return sorted(r["imageRef"] for r in data["pulledRecords"])


def test_root_kubelet_dir_d_and_the_environment_are_one_option(tmp_path: Path) -> None:
    root = make_root(tmp_path / "node")
    other = tmp_path / "other"
    other.mkdir()
    expected = listed_refs("--root", str(root))
    assert len(expected) == 3
    assert listed_refs("-d", str(root)) == expected
    assert listed_refs("--kubelet-dir", str(root)) == expected
    assert listed_refs(env={"PULLWARDEN_ROOT": str(root)}) == expected
    # the command line wins over the environment
    assert listed_refs("--root", str(other), env={"PULLWARDEN_ROOT": str(root)}) == []


def test_the_default_root_is_the_one_run_uses(tmp_path: Path) -> None:
    data_home = tmp_path / "data"
    root = make_root(data_home / "pullwarden" / "node")
    env = {"XDG_DATA_HOME": str(data_home), "PULLWARDEN_ROOT": ""}
    assert len(listed_refs(env=env)) == 3
    env = {"XDG_DATA_HOME": str(tmp_path / "elsewhere"), "PULLWARDEN_ROOT": ""}
    line = one_error_line(pw("records", "ls", code=None, env=env))
    assert str(tmp_path / "elsewhere" / "pullwarden" / "node") in line
    assert root.is_dir()


def test_the_group_help_states_the_root_rule() -> None:
    out = pw("records", "--help").stdout
    for words in ("--root DIR", "-d/--kubelet-dir", "-d /var/lib/kubelet", "$PULLWARDEN_ROOT"):
        assert words in out
    assert "pullwarden/node" in out and "pullwarden run" in out
    assert "creates no file or directory" in out
    ls_help = pw("records", "ls", "--help").stdout
    assert "-d, --root, --kubelet-dir DIR" in ls_help and "PULLWARDEN_ROOT" in ls_help


# -- -o: table|json|yaml, text still accepted ----------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ["ls"],
        ["show", REF],
        ["check"],
        ["explain", "--image", IMAGE, "--image-ref", REF],
        ["who-can", IMAGE],
    ],
    ids=lambda a: a[0],
)
def test_every_printing_command_takes_table_json_yaml_and_text(
    tmp_path: Path, args: list[str]
) -> None:
    root = str(make_root(tmp_path / "node"))
    table = pw("records", *args, "--root", root, "-o", "table").stdout
    assert pw("records", *args, "--root", root).stdout == table  # the default
    assert pw("records", *args, "--root", root, "-o", "text").stdout == table  # the old name
    as_json = json.loads(pw("records", *args, "--root", root, "-o", "json").stdout)
    as_yaml = yaml.safe_load(pw("records", *args, "--root", root, "-o", "yaml").stdout)
    assert as_yaml == as_json and (as_json or args == ["check"])
    with pytest.raises(json.JSONDecodeError):
        json.loads(table)
    help_text = pw("records", args[0], "--help").stdout
    assert "[table|json|yaml" in help_text and "text|" not in help_text


def test_an_unknown_output_format_is_a_usage_error(tmp_path: Path) -> None:
    result = pw("records", "ls", "--root", str(tmp_path), "-o", "xml", code=2)
    assert "xml" in result.stderr and "table" in result.stderr


# -- --dry-run ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args", [["prune", "--keep-image-ref", SOME_REF, "--until", UNTIL], ["migrate"]]
)
def test_dry_run_is_the_default_spelt_out_and_contradicts_apply(
    tmp_path: Path, args: list[str]
) -> None:
    root = make_root(tmp_path / "node")
    before = tree(root)
    preview = pw("records", *args, "--root", str(root)).stdout
    assert pw("records", *args, "--root", str(root), "--dry-run").stdout == preview
    line = one_error_line(
        pw("records", *args, "--root", str(root), "--dry-run", "--apply", code=None)
    )
    assert "--dry-run" in line and "--apply" in line
    assert tree(root) == before


def test_prune_says_one_line_per_record_removed_or_to_remove(tmp_path: Path) -> None:
    root = make_root(tmp_path / "node")
    args = ["records", "prune", "--root", str(root), "--keep-image-ref", REF, "--until", UNTIL]
    preview = pw(*args, "--dry-run").stdout.splitlines()
    would = [line for line in preview if line.startswith("would remove ")]
    assert len(would) == 2 and all(REF not in line for line in would)
    assert preview[-1] == "2 record(s) to remove"
    done = pw(*args, "--apply").stdout.splitlines()
    assert [line.split(":")[0] for line in done if line.startswith("removed ")] == [
        line.split(":")[0].replace("would remove", "removed") for line in would
    ]
    assert done[-1] == "2 record(s) removed"
    assert listed_refs("--root", str(root)) == [REF]
