"""``pullwarden pull | images | rmi`` end to end, as a user runs them, against real registries."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.infra import ALICE, BOB, Registry, Seeded


def pullwarden(
    *args: str, store: Path, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "pullwarden.cli", *args]
    full_env = {**os.environ, "PULLWARDEN_STORE": str(store), **(env or {})}
    return subprocess.run(
        cmd, input=stdin, capture_output=True, text=True, env=full_env, timeout=120, check=False
    )


def assert_clean_error(result: subprocess.CompletedProcess[str], code: int, *words: str) -> None:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    for word in words:
        assert word in lines[0]


def test_pull_with_password_stdin_then_list_and_remove(seeded: Seeded, tmp_path: Path) -> None:
    ref = seeded.ref("token", "private/alice:v1")
    store = tmp_path / "store"
    result = pullwarden(
        "pull", ref, "-u", ALICE[0], "--password-stdin", store=store, stdin=ALICE[1]
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == seeded.images.alice.config_digest
    assert ALICE[1] not in result.stdout + result.stderr

    listed = pullwarden("images", "-o", "json", store=store)
    images = json.loads(listed.stdout)["images"]
    assert [i["repoTags"] for i in images] == [[ref]]
    table = pullwarden("images", store=store).stdout.splitlines()
    assert table[0].split() == ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"]
    repo, tag, short_id = table[1].split()[:3]
    assert (repo, tag) == (ref.rsplit(":", 1)[0], "v1")
    assert seeded.images.alice.config_digest.startswith("sha256:" + short_id)

    removed = pullwarden("rmi", ref, store=store)
    assert removed.returncode == 0 and "Deleted" in removed.stdout
    assert json.loads(pullwarden("images", "-o", "json", store=store).stdout)["images"] == []
    assert_clean_error(pullwarden("rmi", ref, store=store), 4, "no such image")


def test_pull_with_docker_config(seeded: Seeded, tmp_path: Path) -> None:
    registry = seeded.registries["token"]
    auth = base64.b64encode(f"{ALICE[0]}:{ALICE[1]}".encode()).decode()
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"auths": {registry.host: {"auth": auth}}}))
    ref = seeded.ref("token", "private/alice:v1")
    result = pullwarden("pull", "-q", ref, "--docker-config", str(config), store=tmp_path / "s")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == seeded.images.alice.config_digest


def test_refused_credentials_exit_3(seeded: Seeded, tmp_path: Path) -> None:
    ref = seeded.ref("token", "private/alice:v1")
    denied = pullwarden("pull", ref, "-u", BOB[0], "--password-stdin", store=tmp_path, stdin=BOB[1])
    assert_clean_error(denied, 3, "private/alice")
    wrong = pullwarden(
        "pull", ref, "-u", ALICE[0], "--password-stdin", store=tmp_path, stdin="not-the-password"
    )
    assert_clean_error(wrong, 3)
    assert "not-the-password" not in wrong.stderr


def test_unknown_image_exit_4(seeded: Seeded, tmp_path: Path) -> None:
    result = pullwarden("pull", seeded.ref("noauth", "ns/nothing-here:v1"), store=tmp_path)
    assert_clean_error(result, 4, "ns/nothing-here")


def test_unreachable_registry_exit_5(fresh_registry: Registry, tmp_path: Path) -> None:
    ref = fresh_registry.ref("ns/hello:v1")
    fresh_registry.stop()
    assert_clean_error(pullwarden("pull", ref, store=tmp_path), 5, fresh_registry.host)


def test_bad_input_exit_2(tmp_path: Path) -> None:
    assert_clean_error(pullwarden("pull", "127.0.0.1:1/Bad/Name:v1", store=tmp_path), 2)
    assert_clean_error(
        pullwarden("pull", "127.0.0.1:1/x:v1", "--platform", "linux", store=tmp_path), 2
    )
    bad_config = tmp_path / "config.json"
    bad_config.write_text("{not json")
    assert_clean_error(
        pullwarden("pull", "127.0.0.1:1/x:v1", "--docker-config", str(bad_config), store=tmp_path),
        2,
    )


def test_tls_registry_with_ca_file(seeded: Seeded, tmp_path: Path) -> None:
    registry = seeded.registries["tls"]
    ref = seeded.ref("tls", "ns/hello:v1")
    assert registry.ca_file is not None
    result = pullwarden("pull", "-q", ref, "--ca-file", str(registry.ca_file), store=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == seeded.images.hello.config_digest


def _private_key_pem() -> bytes:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", ("holds no certificate",)),
        (b"this is not a certificate\n", ("holds no certificate",)),
        (None, ("holds no certificate",)),  # a private key only
        (b"-----BEGIN CERTIFICATE-----\nbm9wZQ==\n-----END CERTIFICATE-----\n", ("certificate",)),
    ],
    ids=["empty", "garbage", "private-key", "broken-pem"],
)
@pytest.mark.parametrize("with_host", [False, True], ids=["file", "host=file"])
def test_ca_file_without_a_certificate_is_bad_input(
    tmp_path: Path, content: bytes | None, words: tuple[str, ...], with_host: bool
) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(_private_key_pem() if content is None else content)
    arg = f"127.0.0.1:1={ca}" if with_host else str(ca)
    # 127.0.0.1:1 refuses connections: reaching the network would exit 5, not 2
    result = pullwarden("pull", "127.0.0.1:1/ns/x:v1", "--ca-file", arg, store=tmp_path / "s")
    assert_clean_error(result, 2, str(ca), *words)


def test_unreadable_or_missing_ca_file_is_bad_input(tmp_path: Path) -> None:
    image = "127.0.0.1:1/ns/x:v1"
    result = pullwarden("pull", image, "--ca-file", str(tmp_path), store=tmp_path / "s")
    assert_clean_error(result, 2, "cannot read", str(tmp_path))
    missing = tmp_path / "missing.pem"
    result = pullwarden("pull", image, "--ca-file", str(missing), store=tmp_path / "s")
    assert_clean_error(result, 2, "does not exist", str(missing))


@pytest.mark.parametrize(
    "host", ["a b", "h:99999", f"{'a' * 64}.example", "h/path", "h?q", "user@h"]
)
@pytest.mark.parametrize("option", ["--ca-file", "--insecure-registry"])
def test_a_registry_host_that_is_no_host_is_bad_input(
    tmp_path: Path, host: str, option: str
) -> None:
    ca = tmp_path / "ca.pem"  # never read: the host is refused first
    arg = f"{host}={ca}" if option == "--ca-file" else host
    result = pullwarden("pull", "127.0.0.1:1/ns/x:v1", option, arg, store=tmp_path / "s")
    assert_clean_error(result, 2, option, f"invalid registry host {host!r}")
