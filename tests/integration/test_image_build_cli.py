"""``pullwarden image build`` as a newcomer runs it: an OCI layout that the real skopeo reads,
the same digests on every build, ``--push`` to the real token-auth registry, and a pull of the
pushed image that gives the image id the build printed."""

from __future__ import annotations

import gzip
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.integration.infra import ALICE, BOB, Registry, Seeded, Skopeo

LAZY_PROBE = (
    "import sys\n"
    "from pullwarden.cli import main\n"
    "try:\n"
    "    main(['image', 'build', '--help'])\n"
    "except SystemExit:\n"
    "    pass\n"
    "heavy = ('httpx', 'rich', 'yaml', 'grpc', 'pullwarden.runtime._registry',\n"
    "         'pullwarden.runtime._layout', 'pullwarden.cli.images')\n"
    "print(sorted(m for m in sys.modules if m.startswith(heavy) and sys.modules[m]),"
    " file=sys.stderr)\n"
)


def pullwarden(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG")}
    return subprocess.run(
        [sys.executable, "-m", "pullwarden", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env={**base, **(env or {})},
        timeout=120,
        check=False,
    )


def built(*args: str, stdin: str = "") -> dict[str, Any]:
    result = pullwarden("image", "build", *args, "-o", "json", stdin=stdin)
    assert result.returncode == 0, (result.returncode, result.stderr)
    document: dict[str, Any] = json.loads(result.stdout)
    return document


def skopeo_inspect(layout: Path, name: str, *extra: str) -> dict[str, Any]:
    done = subprocess.run(
        ["skopeo", "inspect", *extra, f"oci:{layout}:{name}"],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    document: dict[str, Any] = json.loads(done.stdout)
    return document


def layer_files(layout: Path, digest: str) -> dict[str, bytes]:
    blob = (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def error_line(result: subprocess.CompletedProcess[str], code: int = 2) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def site(tmp_path: Path) -> Path:
    root = tmp_path / "site"
    (root / "css").mkdir(parents=True)
    (root / "index.html").write_text("<h1>hello</h1>\n")
    (root / "css" / "main.css").write_text("h1 { color: teal }\n")
    return root


def test_a_directory_becomes_one_layer_that_skopeo_reads(
    skopeo: Skopeo, site: Path, tmp_path: Path
) -> None:
    layout = tmp_path / "oci"
    doc = built(str(site), "--tag", "demo/site:v1", "--layout", str(layout))
    assert doc["name"] == "demo/site:v1"
    inspected = skopeo_inspect(layout, "demo/site:v1")
    assert inspected["Digest"] == doc["manifestDigest"]
    assert inspected["Layers"] == doc["layers"] and len(doc["layers"]) == 1
    assert (inspected["Os"], inspected["Architecture"]) == ("linux", "amd64")
    config = skopeo_inspect(layout, "demo/site:v1", "--config")
    assert config["config"]["Cmd"] == ["/bin/true"]
    assert layer_files(layout, doc["layers"][0]) == {
        "css/main.css": b"h1 { color: teal }\n",
        "index.html": b"<h1>hello</h1>\n",
    }
    # the table names the same digests
    table = pullwarden(
        "image", "build", str(site), "--tag", "demo/site:v1", "--layout", str(layout)
    )
    assert table.returncode == 0, table.stderr
    assert f"Manifest digest: {doc['manifestDigest']}" in table.stdout
    assert f"Image id:        {doc['imageId']}" in table.stdout
    assert f"oci:{layout}:demo/site:v1" in table.stdout


def test_the_same_inputs_give_the_same_digests(site: Path, tmp_path: Path) -> None:
    first = built(str(site), "--tag", "demo/site:v1", "--layout", str(tmp_path / "a"))
    again = built(str(site), "--tag", "demo/site:v1", "--layout", str(tmp_path / "a"))
    elsewhere = built(str(site), "--tag", "demo/site:v1", "--layout", str(tmp_path / "b"))
    os.utime(site / "index.html", (1, 1))  # mtimes do not count
    touched = built(str(site), "--tag", "demo/site:v1", "--layout", str(tmp_path / "c"))
    for doc in (again, elsewhere, touched):
        assert (doc["manifestDigest"], doc["imageId"]) == (
            first["manifestDigest"],
            first["imageId"],
        )
    index = json.loads((tmp_path / "a" / "index.json").read_text())
    assert len(index["manifests"]) == 1  # the rebuild replaced its entry

    (site / "index.html").write_text("<h1>changed</h1>\n")
    changed = built(str(site), "--tag", "demo/site:v1", "--layout", str(tmp_path / "d"))
    assert changed["manifestDigest"] != first["manifestDigest"]
    assert changed["imageId"] != first["imageId"]


def test_files_platform_cmd_and_random_layers(skopeo: Skopeo, tmp_path: Path) -> None:
    app = tmp_path / "app.py"
    app.write_text("print('hi')\n")
    conf = tmp_path / "conf.toml"
    conf.write_text("level = 3\n")
    layout = tmp_path / "oci"
    args = [
        "--file", str(app), "--file", f"{conf}:etc/app/conf.toml",
        "--platform", "linux/arm64/v8", "--cmd", "python3 /app.py --level 'three four'",
        "--layers", "2", "--layer-size", "3000", "--tag", "demo/app:v2", "--layout", str(layout),
    ]  # fmt: skip
    doc = built(*args)
    assert len(doc["layers"]) == 3 and doc["platform"] == "linux/arm64/v8"
    assert layer_files(layout, doc["layers"][0]) == {
        "app.py": b"print('hi')\n",
        "etc/app/conf.toml": b"level = 3\n",
    }
    randoms = [layer_files(layout, d) for d in doc["layers"][1:]]
    assert [len(b) for f in randoms for b in f.values()] == [3000, 3000]
    assert randoms[0] != randoms[1]
    config = skopeo_inspect(layout, "demo/app:v2", "--config")
    assert (config["os"], config["architecture"], config["variant"]) == ("linux", "arm64", "v8")
    assert config["config"]["Cmd"] == ["python3", "/app.py", "--level", "three four"]
    assert skopeo_inspect(layout, "demo/app:v2")["Digest"] == doc["manifestDigest"]
    assert built(*args)["manifestDigest"] == doc["manifestDigest"]

    as_json = built(
        "--cmd", '["/bin/sh", "-c", "echo hi"]', "--tag", "x:1", "--layout", str(layout)
    )
    config = skopeo_inspect(layout, "x:1", "--config")
    assert config["config"]["Cmd"] == ["/bin/sh", "-c", "echo hi"]
    assert as_json["layers"] and skopeo_inspect(layout, "demo/app:v2")  # the first is still there


def test_push_to_the_token_registry_then_pull_gives_the_printed_id(
    seeded: Seeded, site: Path, tmp_path: Path
) -> None:
    registry: Registry = seeded.registries["token"]
    target = registry.ref("ns/built-site:v1")
    layout = tmp_path / "oci"
    doc = built(
        str(site), "--layout", str(layout), "--push", target,
        "-u", ALICE[0], "--password-stdin", stdin=ALICE[1] + "\n",
    )  # fmt: skip
    assert doc["name"] == target  # --tag defaults to the push target
    assert doc["pushed"] == f"{target}@{doc['manifestDigest']}"
    store = tmp_path / "store"
    pulled = pullwarden("pull", "-q", target, "--creds", ":".join(ALICE), "--store", str(store))
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == doc["imageId"]
    listed = json.loads(pullwarden("images", "-o", "json", "--store", str(store)).stdout)
    [image] = listed["images"]
    assert image["repoDigests"] == [f"{target.rsplit(':', 1)[0]}@{doc['manifestDigest']}"]

    # bob may only pull ns/*: the push is refused, and no password is shown
    refused = pullwarden(
        "image", "build", str(site), "--layout", str(layout), "--push", target,
        "--creds", ":".join(BOB),
    )  # fmt: skip
    assert ALICE[1] not in refused.stdout + refused.stderr
    assert BOB[1] not in refused.stdout + refused.stderr
    assert target.split("/", 1)[1].split(":")[0] in error_line(refused, 3)
    wrong = pullwarden(
        "image", "build", str(site), "--layout", str(layout), "--push", target,
        "--creds", f"{ALICE[0]}:not-alices-pw-93c1",
    )  # fmt: skip
    error_line(wrong, 3)
    assert "not-alices-pw-93c1" not in wrong.stdout + wrong.stderr


def test_push_with_an_authfile(seeded: Seeded, tmp_path: Path) -> None:
    import base64

    registry: Registry = seeded.registries["token"]
    target = registry.ref("ns/built-hello:v1")
    config = tmp_path / "auth.json"
    auth = base64.b64encode(":".join(ALICE).encode()).decode()
    config.write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    doc = built("--layout", str(tmp_path / "oci"), "--push", target, "--authfile", str(config))
    pulled = pullwarden(
        "pull", "-q", target, "--authfile", str(config), "--store", str(tmp_path / "s")
    )
    assert pulled.stdout.strip() == doc["imageId"], pulled.stderr


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["{tmp}/missing", "--tag", "a:b"], ["does not exist"]),
        (["--tag", "Bad Name:v1"], ["--tag"]),
        (["--tag", "demo/UPPER:v1"], ["--tag"]),
        (["--tag", "a@sha256:" + "0" * 64], ["digest"]),
        (["--tag", "a:b", "--platform", "linux"], ["platform"]),
        (["--tag", "a:b", "--cmd", "[1, 2]"], ["--cmd"]),
        (["--tag", "a:b", "--cmd", "'unclosed"], ["--cmd"]),
        (["--tag", "a:b", "--layer-size", "10"], ["--layers"]),
        (["--tag", "a:b", "--file", "{tmp}/nope.txt"], ["nope.txt"]),
        (["--tag", "a:b", "--file", "{tmp}/f.txt:../up"], ["'..'"]),
        (["--push", "demo/app:v1"], ["REGISTRY/REPOSITORY:TAG"]),
        (["--push", "127.0.0.1:1/demo/app"], ["REGISTRY/REPOSITORY:TAG"]),
        (["--tag", "a:b", "--creds", "u:p"], ["--push"]),
        (["--push", "127.0.0.1:1/d/a:v1", "--creds", "u:p", "-u", "u"], ["--creds"]),
        (["--push", "127.0.0.1:1/d/a:v1", "-u", "u"], ["--password-stdin"]),
        ([], ["--tag"]),
    ],
    ids=[
        "missing-dir", "bad-tag", "uppercase", "digest-tag", "platform", "cmd-json",
        "cmd-quote", "layer-size-alone", "missing-file", "dest-escapes", "push-no-registry",
        "push-no-tag", "creds-without-push", "creds-and-u", "u-no-password", "nothing",
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_writes_nothing(
    tmp_path: Path, args: list[str], words: list[str]
) -> None:
    (tmp_path / "f.txt").write_text("f\n")
    layout = tmp_path / "oci"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = pullwarden("image", "build", *argv, "--layout", str(layout), stdin="")
    line = error_line(result)
    for word in words:
        assert word in line
    assert not layout.exists()
    assert "u:p" not in line  # a password given with --creds is never echoed back


def test_a_layout_that_is_some_other_directory_is_refused(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep\n")
    result = pullwarden("image", "build", "--tag", "a:b", "--layout", str(mine))
    assert "OCI layout" in error_line(result)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    a_file = tmp_path / "file"
    a_file.write_text("")
    assert "not a directory" in error_line(
        pullwarden("image", "build", "--tag", "a:b", "--layout", str(a_file))
    )


def test_an_unreachable_push_registry_is_exit_5_after_the_layout_is_written(
    tmp_path: Path,
) -> None:
    layout = tmp_path / "oci"
    result = pullwarden(
        "image", "build", "--tag", "a:b", "--layout", str(layout), "--push", "127.0.0.1:1/d/a:v1"
    )
    assert "127.0.0.1:1" in error_line(result, 5)
    assert (layout / "index.json").is_file()


def test_help_explains_itself_and_loads_no_registry_client() -> None:
    text = pullwarden("image", "build", "--help").stdout
    for phrase in ("OCI layout", "--file SRC[:DEST]", "--push", "skopeo", "Exit status"):
        assert phrase in text
    group = pullwarden("image", "--help").stdout
    assert "build" in group
    done = subprocess.run(
        [sys.executable, "-c", LAZY_PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stderr.strip() == "[]"


def test_push_reads_the_default_auth_file(seeded: Seeded, tmp_path: Path) -> None:
    import base64

    registry: Registry = seeded.registries["token"]
    target = registry.ref("ns/built-default:v1")
    home = tmp_path / "home"
    (home / ".docker").mkdir(parents=True)
    auth = base64.b64encode(":".join(ALICE).encode()).decode()
    (home / ".docker" / "config.json").write_text(
        json.dumps({"auths": {registry.host: {"auth": auth}}})
    )
    args = ["image", "build", "--layout", str(tmp_path / "oci"), "--push", target, "-o", "json"]
    anonymous = pullwarden(*args, env={"HOME": str(tmp_path / "nobody")})
    error_line(anonymous, 3)
    pushed = pullwarden(*args, env={"HOME": str(home)})
    assert pushed.returncode == 0, pushed.stderr
    assert json.loads(pushed.stdout)["pushed"].startswith(target + "@sha256:")
