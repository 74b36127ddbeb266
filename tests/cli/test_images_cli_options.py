"""``pullwarden pull | images | rmi`` options, on a scripted CRI server (tests/runtime/cri_fake.py).

The real containerd is in tests/integration/test_images_cri_cli.py; here the runtime hangs,
refuses one credential and not the next, or names one image twice, on demand.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from click.testing import CliRunner, Result
from cri_api.v1 import api_pb2 as api

from pullwarden.cli import main
from pullwarden.cli._common import EXIT_REGISTRY
from pullwarden.cli.images import image_rows, removed_names
from pullwarden.runtime import Image
from tests.runtime.cri_fake import ID, MANIFEST, NAME, FakeCRI, fake_cri, image

OTHER = "127.0.0.1:5000/public/app:v2"
REPO = NAME.rsplit(":", 1)[0]


@pytest.fixture
def fake() -> Iterator[FakeCRI]:
    directory = Path(tempfile.mkdtemp(prefix="pwcli.", dir="/tmp"))  # socket paths are short
    try:
        with fake_cri(directory) as server:
            server.script.status[NAME] = server.script.status[ID] = image()
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def run(*args: str, stdin: str = "") -> Result:
    return CliRunner().invoke(main, list(args), input=stdin)


def error_line(result: Result) -> str:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


# -- pull ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("signum", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_pull_interrupted_in_the_runtime_says_the_runtime_may_have_pulled_it(
    fake: FakeCRI, signum: int, status: int
) -> None:
    fake.script.hang.add("PullImage")
    process = subprocess.Popen(
        [sys.executable, "-m", "pullwarden.cli", "pull", NAME, "--runtime-endpoint", fake.endpoint],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={k: v for k, v in os.environ.items() if k != "CONTAINER_RUNTIME_ENDPOINT"},
    )
    try:
        assert fake.hung.wait(30), "the pull never reached the runtime"
        process.send_signal(signum)
        out, err = process.communicate(timeout=15)
    finally:
        process.kill()
        process.wait()
    assert process.returncode == status, err
    assert out == ""
    assert "may have pulled" in err
    assert "nothing was committed" not in err
    assert signal.Signals(signum).name in err
    assert "Traceback" not in err


def test_a_pull_from_a_host_no_resolver_takes_is_a_clear_error(tmp_path: Path) -> None:
    image = f"{'a' * 64}.example/ns/x:v1"
    result = run("pull", "--store", str(tmp_path / "store"), image)
    assert result.exit_code == EXIT_REGISTRY, result.output
    assert (
        error_line(result) == f"error: pulling {image}: invalid registry host '{'a' * 64}.example'"
    )


def docker_config(tmp_path: Path, entries: dict[str, tuple[str, str]]) -> Path:
    auths = {
        key: {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}
        for key, (user, password) in entries.items()
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps({"auths": auths}))
    return path


def refuse_first(fake: FakeCRI, count: int) -> None:
    """The first ``count`` pulls fail as containerd says a registry refused the credentials."""
    calls = [0]

    def after_pull() -> None:
        calls[0] += 1
        if calls[0] <= count:
            raise RuntimeError("failed to authorize: failed to fetch oauth token: 401 Unauthorized")

    fake.script.after_pull = after_pull


def test_each_credential_is_tried_in_order(fake: FakeCRI, tmp_path: Path) -> None:
    config = docker_config(
        tmp_path, {f"{REPO}": ("narrow", "narrow-secret"), "127.0.0.1:5000": ("wide", "wide-pw")}
    )
    refuse_first(fake, 1)
    result = run("pull", NAME, "--docker-config", str(config), "--runtime-endpoint", fake.endpoint)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.strip() == ID
    pulls = [r for m, r in fake.requests if m == "PullImage"]
    assert [p.auth.username for p in pulls] == ["narrow", "wide"]
    assert "secret" not in result.stdout + result.stderr


def test_every_credential_refused_exits_3(fake: FakeCRI, tmp_path: Path) -> None:
    refuse_first(fake, 1)
    result = run(
        "pull",
        NAME,
        "-u",
        "alice",
        "--password-stdin",
        "--runtime-endpoint",
        fake.endpoint,
        stdin="s3cret-pw\n",
    )
    assert result.exit_code == 3
    assert "401 Unauthorized" in error_line(result)
    assert "s3cret-pw" not in result.stdout + result.stderr
    assert fake.last("PullImage").auth.password == "s3cret-pw"


def test_a_runtime_that_drops_the_pull_exits_7(fake: FakeCRI) -> None:
    fake.script.fail["PullImage"] = (grpc.StatusCode.INTERNAL, "stream terminated")
    result = run("pull", NAME, "--runtime-endpoint", fake.endpoint)
    assert result.exit_code == 7
    assert "may have pulled it" in error_line(result)


@pytest.mark.parametrize(
    "extra",
    [["--platform", "linux/arm64"], ["--ca-file", "/etc/hostname"], ["--insecure-registry", "h"]],
    ids=["platform", "ca-file", "insecure-registry"],
)
def test_embedded_store_options_are_refused_with_a_runtime(fake: FakeCRI, extra: list[str]) -> None:
    result = run("pull", NAME, *extra, "--runtime-endpoint", fake.endpoint)
    assert result.exit_code == 2
    line = error_line(result)
    assert extra[0] in line and "containerd" in line
    assert fake.methods() == []  # refused before connecting


@pytest.mark.parametrize("endpoint", ["tcp://127.0.0.1:1", "relative/cri.sock"])
def test_a_malformed_endpoint_is_bad_input(endpoint: str) -> None:
    for args in (["images"], ["rmi", NAME], ["pull", NAME]):
        result = run(*args, "--runtime-endpoint", endpoint)
        assert result.exit_code == 2, result.stderr
        assert endpoint in error_line(result)


# -- images ----------------------------------------------------------------------------------


def test_images_on_a_runtime_in_every_form(fake: FakeCRI) -> None:
    other_id = "sha256:" + "e" * 64
    fake.script.images = [
        api.Image(id=ID, repo_tags=[NAME, OTHER], repo_digests=[f"{REPO}@{MANIFEST}"], size=1234),
        api.Image(id=other_id, repo_digests=[f"{REPO}@sha256:{'f' * 64}"], size=5, pinned=True),
    ]
    table = run("images", "--digests", "--runtime-endpoint", fake.endpoint).stdout.splitlines()
    assert [line.split() for line in table] == [
        ["IMAGE", "TAG", "DIGEST", "IMAGE", "ID", "SIZE"],
        [REPO, "<none>", "f" * 13, "e" * 13, "5B"],
        [REPO, "v1", "d" * 13, "c" * 13, "1.23kB"],
        ["127.0.0.1:5000/public/app", "v2", "<none>", "c" * 13, "1.23kB"],
    ]
    full = run("images", "--no-trunc", "--runtime-endpoint", fake.endpoint).stdout.splitlines()
    assert full[1].split()[2] == other_id
    quiet = run("images", "-q", "--runtime-endpoint", fake.endpoint)
    assert quiet.stdout.splitlines() == [ID, other_id]
    document = json.loads(run("images", "-o", "json", "--runtime-endpoint", fake.endpoint).stdout)
    assert document["images"][1] == {
        "id": other_id,
        "repoTags": [],
        "repoDigests": [f"{REPO}@sha256:{'f' * 64}"],
        "size": "5",
        "pinned": True,
    }


def test_quiet_with_a_document_format_is_bad_input() -> None:
    result = run("images", "-q", "-o", "json", "--runtime-endpoint", "")
    assert result.exit_code == 2
    assert "--quiet" in error_line(result)


def test_rows_of_an_untagged_and_a_nameless_image() -> None:
    untagged = Image(id=ID, repo_digests=(f"{REPO}@{MANIFEST}",), size=10)
    nameless = Image(id="sha256:" + "a" * 64)
    assert image_rows([untagged, nameless], digests=True) == [
        (REPO, "<none>", "d" * 13, "c" * 13, "10B"),
        ("<none>", "<none>", "<none>", "a" * 13, "0B"),
    ]


# -- rmi -------------------------------------------------------------------------------------


def test_rmi_of_two_names_of_one_image_removes_it_once(fake: FakeCRI) -> None:
    both = image(tags=(NAME, OTHER))
    fake.script.status.update({NAME: both, OTHER: both, ID: both})
    result = run("rmi", OTHER, NAME, "--runtime-endpoint", fake.endpoint)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines() == [f"Deleted: {NAME}", f"Deleted: {OTHER}"]
    removes = [r.image.image for m, r in fake.requests if m == "RemoveImage"]
    assert removes == [ID]


def test_rmi_removes_the_others_then_exits_4(fake: FakeCRI) -> None:
    result = run("rmi", "127.0.0.1:5000/ns/gone:v1", NAME, "--runtime-endpoint", fake.endpoint)
    assert result.exit_code == 4
    assert result.stdout.splitlines() == [f"Deleted: {NAME}"]
    assert error_line(result) == "error: no such image: 127.0.0.1:5000/ns/gone:v1"


def test_an_untagged_image_is_deleted_by_its_digest_names_or_its_id() -> None:
    digests = (f"{REPO}@{MANIFEST}", f"127.0.0.1:5000/public/app@{MANIFEST}")
    assert removed_names(Image(id=ID, repo_digests=digests)) == digests
    assert removed_names(Image(id=ID)) == (ID,)
    assert removed_names(Image(id=ID, repo_tags=(OTHER, NAME), repo_digests=digests)) == (
        OTHER,
        NAME,
    )
