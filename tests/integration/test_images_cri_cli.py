"""``pullwarden pull | images | rmi --runtime-endpoint``: the real CLI on the real containerd.

Images come from the real token-auth registry (alice may read private/alice and ns/*, bob only
ns/*, anyone public/*); containerd pulls them itself over CRI. The tests without the
``containerd`` fixture need no daemon: bad input, a missing socket, and what ``--help`` imports.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from tests.integration.containerd import Containerd
from tests.integration.infra import ALICE, BOB, Seeded
from tests.integration.test_images_cli import assert_clean_error, pullwarden

PRIVATE = "private/alice:v1"


def cri(
    containerd: Containerd, *args: str, store: Path, stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    """``pullwarden ARGS --runtime-endpoint <containerd>`` (PULLWARDEN_STORE is set, unused)."""
    return pullwarden(*args, "--runtime-endpoint", containerd.endpoint, store=store, stdin=stdin)


def pull_as(
    containerd: Containerd, ref: str, creds: tuple[str, str] | None, store: Path
) -> subprocess.CompletedProcess[str]:
    if creds is None:
        return cri(containerd, "pull", ref, store=store)
    return cri(
        containerd, "pull", ref, "-u", creds[0], "--password-stdin", store=store, stdin=creds[1]
    )


def test_pull_with_password_stdin_prints_the_runtime_s_image_id(
    containerd: Containerd, seeded: Seeded, tmp_path: Path
) -> None:
    ref = seeded.ref("token", PRIVATE)
    result = pull_as(containerd, ref, ALICE, tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == seeded.images.alice.config_digest
    assert result.stdout.startswith("sha256:")
    assert ALICE[1] not in result.stdout + result.stderr
    status = containerd.cri_status(ref)
    assert status is not None and status.id == seeded.images.alice.config_digest
    assert not (tmp_path / "index.json").exists()  # the embedded store was left alone


def test_refused_credentials_exit_3_without_the_password(
    containerd: Containerd, seeded: Seeded, tmp_path: Path
) -> None:
    ref = seeded.ref("token", PRIVATE)
    denied = pull_as(containerd, ref, BOB, tmp_path)
    assert_clean_error(denied, 3, "private/alice")
    assert BOB[1] not in denied.stdout + denied.stderr
    wrong = pull_as(containerd, ref, (ALICE[0], "not-the-password"), tmp_path)
    assert_clean_error(wrong, 3)
    assert "not-the-password" not in wrong.stdout + wrong.stderr
    assert containerd.cri_status(ref) is None


def test_an_unknown_image_exits_4(containerd: Containerd, seeded: Seeded, tmp_path: Path) -> None:
    ref = seeded.ref("token", "public/nothing-here:v1")
    assert_clean_error(pull_as(containerd, ref, None, tmp_path), 4, "public/nothing-here")


def test_images_shows_the_pulled_image_in_every_format(
    containerd: Containerd, seeded: Seeded, tmp_path: Path
) -> None:
    empty = cri(containerd, "images", store=tmp_path)
    assert empty.returncode == 0, empty.stderr
    assert empty.stdout.split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]

    ref = seeded.ref("token", PRIVATE)
    assert pull_as(containerd, ref, ALICE, tmp_path).returncode == 0
    image_id = seeded.images.alice.config_digest
    digest = seeded.digest("token", PRIVATE)
    repo = ref.rsplit(":", 1)[0]

    table = cri(containerd, "images", store=tmp_path).stdout.splitlines()
    assert table[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    assert len(table) == 2
    assert table[1].split()[:3] == [repo, "v1", image_id[7:20]]

    quiet = cri(containerd, "images", "-q", store=tmp_path)
    assert quiet.stdout.splitlines() == [image_id]

    with_digests = cri(containerd, "images", "--digests", store=tmp_path).stdout.splitlines()
    assert with_digests[0].split() == ["IMAGE", "TAG", "DIGEST", "IMAGE", "ID", "SIZE"]
    assert with_digests[1].split()[:4] == [repo, "v1", digest[7:20], image_id[7:20]]

    full = cri(containerd, "images", "--digests", "--no-trunc", store=tmp_path).stdout
    assert full.splitlines()[1].split()[:4] == [repo, "v1", digest, image_id]

    status = containerd.cri_status(ref)
    assert status is not None
    expected = {
        "id": image_id,
        "repoTags": [ref],
        "repoDigests": [f"{repo}@{digest}"],
        "pinned": False,
    }
    for output, load in (("json", json.loads), ("yaml", yaml.safe_load)):
        document = load(cri(containerd, "images", "-o", output, store=tmp_path).stdout)
        [listed] = document["images"]
        assert isinstance(listed["size"], str) and int(listed["size"]) > 0
        assert {k: v for k, v in listed.items() if k != "size"} == expected


def test_rmi_prints_every_name_of_the_image_and_removes_it(
    containerd: Containerd, seeded: Seeded, tmp_path: Path
) -> None:
    # one image (hello) under two repositories of the token registry
    ns_ref, public_ref = seeded.ref("token", "ns/hello:v1"), seeded.ref("token", "public/hello:v1")
    assert pull_as(containerd, ns_ref, BOB, tmp_path).returncode == 0
    assert pull_as(containerd, public_ref, None, tmp_path).returncode == 0
    status = containerd.cri_status(ns_ref)
    assert status is not None and sorted(status.repo_tags) == sorted([ns_ref, public_ref])
    assert len(cri(containerd, "images", "-q", store=tmp_path).stdout.splitlines()) == 1

    removed = cri(containerd, "rmi", public_ref, store=tmp_path)
    assert removed.returncode == 0, removed.stderr
    assert removed.stdout.splitlines() == [f"Deleted: {tag}" for tag in status.repo_tags]
    assert containerd.image_names() == set()
    assert containerd.cri_status(status.id) is None
    assert_clean_error(cri(containerd, "rmi", ns_ref, store=tmp_path), 4, "no such image", ns_ref)


def test_rmi_removes_the_known_images_before_exiting_4_for_the_unknown(
    containerd: Containerd, seeded: Seeded, tmp_path: Path
) -> None:
    ref = seeded.ref("token", "public/hello:v1")
    assert pull_as(containerd, ref, None, tmp_path).returncode == 0
    missing = seeded.ref("token", "public/missing:v1")
    result = cri(containerd, "rmi", missing, seeded.images.hello.config_digest, store=tmp_path)
    assert result.returncode == 4
    assert result.stdout.splitlines() == [f"Deleted: {ref}"]
    assert result.stderr.strip() == f"error: no such image: {missing}"
    assert containerd.image_names() == set()


def test_the_endpoint_may_come_from_the_environment(
    containerd: Containerd, seeded: Seeded, tmp_path: Path
) -> None:
    ref = seeded.ref("token", "public/hello:v1")
    env = {"CONTAINER_RUNTIME_ENDPOINT": containerd.endpoint}
    pulled = pullwarden("pull", "-q", ref, store=tmp_path, env=env)
    assert pulled.returncode == 0, pulled.stderr
    assert pulled.stdout.strip() == seeded.images.hello.config_digest
    listed = pullwarden("images", "-q", store=tmp_path, env=env)
    assert listed.stdout.splitlines() == [seeded.images.hello.config_digest]
    # '' selects the embedded store, which holds nothing
    local = pullwarden("images", "-q", "--runtime-endpoint", "", store=tmp_path, env=env)
    assert local.returncode == 0 and local.stdout == ""


def test_the_listing_options_work_on_the_embedded_store_too(seeded: Seeded, tmp_path: Path) -> None:
    ref = seeded.ref("token", "public/hello:v1")
    store = tmp_path / "store"
    assert pullwarden("pull", "-q", ref, store=store).returncode == 0
    image_id, digest = seeded.images.hello.config_digest, seeded.digest("token", "public/hello:v1")
    assert pullwarden("images", "-q", store=store).stdout.splitlines() == [image_id]
    table = pullwarden("images", "--digests", "--no-trunc", store=store).stdout.splitlines()
    assert table[1].split()[:4] == [ref.rsplit(":", 1)[0], "v1", digest, image_id]
    [listed] = yaml.safe_load(pullwarden("images", "-o", "yaml", store=store).stdout)["images"]
    assert (listed["id"], listed["repoTags"], listed["pinned"]) == (image_id, [ref], False)
    removed = pullwarden("rmi", image_id, store=store)
    assert removed.stdout.splitlines() == [f"Deleted: {ref}"]


# -- without a daemon ------------------------------------------------------------------------


def test_a_missing_socket_exits_7(tmp_path: Path) -> None:
    endpoint = f"unix://{tmp_path}/nothing.sock"
    for args in (["images"], ["rmi", "127.0.0.1:1/ns/x:v1"], ["pull", "127.0.0.1:1/ns/x:v1"]):
        result = pullwarden(*args, "--runtime-endpoint", endpoint, store=tmp_path)
        assert_clean_error(result, 7, "container runtime unavailable at", endpoint)


def test_store_and_runtime_endpoint_together_exit_2(tmp_path: Path) -> None:
    endpoint = f"unix://{tmp_path}/nothing.sock"
    for args in (["images"], ["rmi", "127.0.0.1:1/ns/x:v1"], ["pull", "127.0.0.1:1/ns/x:v1"]):
        both = [*args, "--store", str(tmp_path), "--runtime-endpoint", endpoint]
        assert_clean_error(pullwarden(*both, store=tmp_path), 2, "--store", "--runtime-endpoint")
        env = {"CONTAINER_RUNTIME_ENDPOINT": endpoint}
        from_env = pullwarden(*args, "--store", str(tmp_path), store=tmp_path, env=env)
        assert_clean_error(from_env, 2, "$CONTAINER_RUNTIME_ENDPOINT")


def test_embedded_store_options_exit_2_with_a_runtime(tmp_path: Path) -> None:
    endpoint = f"unix://{tmp_path}/nothing.sock"
    for extra in (["--platform", "linux/amd64"], ["--insecure-registry", "127.0.0.1:1"]):
        result = pullwarden(
            "pull", "127.0.0.1:1/ns/x:v1", *extra, "--runtime-endpoint", endpoint, store=tmp_path
        )
        assert_clean_error(result, 2, extra[0], "containerd", "certs.d")


def test_images_help_does_not_import_grpc(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from pullwarden.cli import main\n"
        "try:\n"
        "    main(['images', '--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        "rpc = sorted(m for m in sys.modules if m.startswith(('grpc', 'cri_api')))\n"
        "print(rpc, file=sys.stderr)\n"
        "print('pullwarden.cli.images' in sys.modules, file=sys.stderr)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert "--runtime-endpoint" in result.stdout
    assert result.stderr.split() == ["[]", "True"]
