"""``records ls --namespace/--secret/--image`` and ``-o wide``; ``records show`` by digest
prefix and by image name (any spelling).  The expected answers are read off the records
``make_root`` writes (see its docstring)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.cli._records_support import (
    HASH,
    IMAGE,
    KEY,
    NGINX_REF,
    REF,
    TOOL_REF,
    make_root,
    one_error_line,
    pw,
    pw_json,
    tree,
)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path / "node")


def ls(root: Path, *args: str) -> tuple[list[str], list[str]]:
    """(imageRefs, intent images) that ``records ls ARGS -o json`` lists, sorted."""
    data = pw_json("records", "ls", "--root", str(root), *args)
    assert data["errors"] == []
    refs = sorted(r["imageRef"] for r in data["pulledRecords"])
    return refs, sorted(i["image"] for i in data["pullIntents"])


def table_refs(root: Path, *args: str) -> list[str]:
    out = pw("records", "ls", "--root", str(root), *args).stdout
    return sorted(line.split()[0] for line in out.splitlines() if line.startswith("sha256:"))


# -- ls filters -----------------------------------------------------------------------------------


def test_no_filter_lists_everything(root: Path) -> None:
    assert ls(root) == (
        sorted([REF, NGINX_REF, TOOL_REF]),
        ["nginx:1.27", "registry.example/team-a/app:v2"],
    )


@pytest.mark.parametrize(
    ("namespace", "refs"),
    [("team-a", [REF]), ("team-d", [REF]), ("web", [NGINX_REF]), ("ci", [TOOL_REF]), ("x", [])],
)
def test_namespace_selects_secrets_and_service_accounts(
    root: Path, namespace: str, refs: list[str]
) -> None:
    assert ls(root, "--namespace", namespace) == (refs, [])  # intents hold no credentials
    assert table_refs(root, "--namespace", namespace) == refs


@pytest.mark.parametrize(
    ("secret", "refs"),
    [("team-a/regcred", [REF]), ("team-d/deploy", [REF]), ("web/hub", [NGINX_REF])],
)
def test_secret_selects_by_namespace_and_name(root: Path, secret: str, refs: list[str]) -> None:
    assert ls(root, "--secret", secret) == (refs, [])
    assert table_refs(root, "--secret", secret) == refs


def test_secret_needs_both_parts_to_match_one_secret(root: Path) -> None:
    assert ls(root, "--secret", "team-a/deploy") == ([], [])
    assert ls(root, "--secret", "ci/builder") == ([], [])  # a service account, not a secret


@pytest.mark.parametrize(
    "spelling", ["nginx", "nginx:1.25", "library/nginx", "docker.io/library/nginx:latest"]
)
def test_image_takes_any_spelling(root: Path, spelling: str) -> None:
    # the record holds "nginx" and "docker.io/library/nginx": both are the same image
    assert ls(root, "--image", spelling) == ([NGINX_REF], ["nginx:1.27"])
    assert table_refs(root, "--image", spelling) == [NGINX_REF]


def test_image_with_another_registry_or_path_is_another_image(root: Path) -> None:
    assert ls(root, "--image", IMAGE) == ([REF], ["registry.example/team-a/app:v2"])
    assert ls(root, "--image", "registry.example/team-a") == ([], [])
    assert ls(root, "--image", "quay.io/library/nginx") == ([], [])


def test_filters_combine_on_one_image_name_of_the_record(root: Path) -> None:
    # REF holds team-a/app for team-a/regcred and team-a/other for team-d/deploy
    assert ls(root, "--image", KEY, "--secret", "team-a/regcred") == ([REF], [])
    assert ls(root, "--image", KEY, "--secret", "team-d/deploy") == ([], [])
    assert ls(root, "--image", "registry.example/team-a/other", "--namespace", "team-d") == (
        [REF],
        [],
    )
    assert ls(root, "--image", "nginx", "--namespace", "web") == ([NGINX_REF], [])
    assert ls(root, "--namespace", "team-a", "--secret", "team-d/deploy") == ([], [])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--image", "Not A Name"], "--image 'Not A Name': invalid image name"),
        (["--secret", "team-a"], "expected NAMESPACE/NAME"),
        (["--secret", "a/b/c"], "expected NAMESPACE/NAME"),
        (["--namespace", ""], "--namespace"),
    ],
)
def test_bad_filters_are_one_line(root: Path, args: list[str], words: str) -> None:
    before = tree(root)
    line = one_error_line(pw("records", "ls", "--root", str(root), *args, code=None))
    assert words in line
    assert tree(root) == before


def test_ls_wide_shows_who_and_where_without_full_hashes(root: Path) -> None:
    out = pw("records", "ls", "--root", str(root), "-o", "wide").stdout
    lines = out.splitlines()
    assert lines[0].split()[-1] == "FILE"
    row = next(line for line in lines if line.startswith(REF))
    assert f"team-a/regcred({HASH[:8]})" in row and "team-d/deploy(" in row
    assert row.split()[-1].endswith("/image_manager/pulled/" + row.split()[-1].rsplit("/", 1)[1])
    assert HASH not in out
    tool = next(line for line in lines if line.startswith(TOOL_REF))
    assert "ci/builder" in tool
    assert table_refs(root, "-o", "wide", "--namespace", "ci") == [TOOL_REF]


# -- show ---------------------------------------------------------------------------------------


def show(root: Path, what: str, code: int = 0) -> Any:
    return json.loads(
        pw("records", "show", what, "--root", str(root), "-o", "json", code=code).stdout
    )


@pytest.mark.parametrize("prefix", ["sha256:4d4d", "4d4d", "4d4d4d4d4d", TOOL_REF])
def test_show_by_a_unique_digest_prefix(root: Path, prefix: str) -> None:
    got = show(root, prefix)
    assert got["kind"] == "ImagePulledRecord" and got["imageRef"] == TOOL_REF


def test_a_prefix_of_several_is_exit_2_listing_them(root: Path) -> None:
    for prefix in ("3c3c", "sha256:3c3c"):
        line = one_error_line(pw("records", "show", prefix, "--root", str(root), code=None))
        assert REF in line and NGINX_REF in line and "more digits" in line
    assert show(root, "3c3c3")["imageRef"] == REF
    assert show(root, "3c3c5")["imageRef"] == NGINX_REF


def test_show_by_image_name_lists_every_record_and_intent_for_it(root: Path) -> None:
    for spelling in ("nginx:latest", "docker.io/library/nginx", "library/nginx:9"):
        got = show(root, spelling)
        assert [(o["kind"], o.get("imageRef", o.get("image"))) for o in got] == [
            ("ImagePulledRecord", NGINX_REF),
            ("ImagePullIntent", "nginx:1.27"),
        ]
    text = pw("records", "show", "nginx", "--root", str(root)).stdout
    assert text.count("File:") == 2 and f"ImageRef:      {NGINX_REF}" in text
    # a name is always a list, even of one
    assert [o["imageRef"] for o in show(root, "registry.example/ci/tool:v3")] == [TOOL_REF]


def test_show_exact_intent_and_ref_stay_single_objects(root: Path) -> None:
    assert show(root, "nginx:1.27") == {
        "file": show(root, "nginx:1.27")["file"],
        "kind": "ImagePullIntent",
        "image": "nginx:1.27",
    }
    assert show(root, REF)["imageRef"] == REF


def test_show_of_nothing_found_exits_1(root: Path) -> None:
    for what in ("quay.io/other/image", "ffff", "sha256:" + "f" * 64):
        result = pw("records", "show", what, "--root", str(root), code=1)
        assert "no pulled record or pull intent" in result.stderr


def test_show_help_describes_the_lookup() -> None:
    out = pw("records", "show", "--help").stdout
    for words in ("a file path", "an imageRef", "digest prefix", "4 hex digits", "exit 2"):
        assert words in out
    assert "any spelling" in out and "list, even of one" in out
