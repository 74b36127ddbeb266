"""``pullwarden pull`` credentials as skopeo/podman users give them, against the real registry
with token auth: --creds, --authfile / --docker-config, the default auth file and its order,
-u with a password prompt on a terminal; and --platform that an index does not have."""

from __future__ import annotations

import base64
import json
import os
import pty
import select
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.infra import ALICE, BOB, Seeded

WRONG = "wrong-pw-7f3a91"  # a password the registry refuses; it must never be printed
AUTH_ENV = ("REGISTRY_AUTH_FILE", "DOCKER_CONFIG", "PULLWARDEN_STORE", "PULLWARDEN_ROOT")


def clean_env(home: Path, **extra: str) -> dict[str, str]:
    """The environment with no auth file settings of the caller's, and HOME at ``home``."""
    env = {k: v for k, v in os.environ.items() if k not in AUTH_ENV}
    env["HOME"] = str(home)
    env.update(extra)
    return env


def pullwarden(
    *args: str, env: dict[str, str], stdin: str = ""
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pullwarden", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


def auth_file(path: Path, host: str, user: str, password: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    path.write_text(json.dumps({"auths": {host: {"auth": auth}}}))
    return path


def one_error_line(result: subprocess.CompletedProcess[str], code: int) -> str:
    assert result.returncode == code, (result.returncode, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    return lines[0]


@pytest.fixture
def private(seeded: Seeded) -> tuple[str, str, str]:
    """(image, registry host, image id) of alice's private image on the token registry."""
    registry = seeded.registries["token"]
    return (
        seeded.ref("token", "private/alice:v1"),
        registry.host,
        seeded.images.alice.config_digest,
    )


def test_creds_user_and_password(private: tuple[str, str, str], tmp_path: Path) -> None:
    image, _host, image_id = private
    env = clean_env(tmp_path)
    store = str(tmp_path / "store")
    good = pullwarden(
        "pull", "-q", image, "--creds", f"{ALICE[0]}:{ALICE[1]}", "--store", store, env=env
    )
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip() == image_id
    assert ALICE[1] not in good.stdout + good.stderr

    wrong = pullwarden(
        "pull", "-q", image, "--creds", f"{ALICE[0]}:{WRONG}", "--store", store, env=env
    )
    one_error_line(wrong, 3)
    assert WRONG not in wrong.stdout + wrong.stderr
    denied = pullwarden("pull", "-q", image, "--creds", ":".join(BOB), "--store", store, env=env)
    assert "private/alice" in one_error_line(denied, 3)
    assert BOB[1] not in denied.stdout + denied.stderr


@pytest.mark.parametrize("option", ["--authfile", "--docker-config"])
def test_authfile_and_its_old_name(
    private: tuple[str, str, str], tmp_path: Path, option: str
) -> None:
    image, host, image_id = private
    env = clean_env(tmp_path)
    good = auth_file(tmp_path / "good.json", host, *ALICE)
    result = pullwarden(
        "pull", "-q", image, option, str(good), "--store", str(tmp_path / "s"), env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == image_id

    bad = auth_file(tmp_path / "bad.json", host, ALICE[0], WRONG)
    refused = pullwarden(
        "pull", "-q", image, option, str(bad), "--store", str(tmp_path / "s"), env=env
    )
    one_error_line(refused, 3)
    assert WRONG not in refused.stdout + refused.stderr
    missing = pullwarden("pull", image, option, str(tmp_path / "nope.json"), env=env)
    assert "nope.json" in one_error_line(missing, 2)


# Which of the three default places hold an auth file with the right password ("good"), the
# wrong one ("bad"), or none (absent); the first that exists must be the one used.
ORDER_CASES = [
    ({"registry": "good", "docker": "bad", "home": "bad"}, 0),
    ({"registry": "bad", "docker": "good", "home": "good"}, 3),
    ({"registry": "absent", "docker": "good", "home": "bad"}, 0),
    ({"registry": "absent", "docker": "bad", "home": "good"}, 3),
    ({"registry": "absent", "docker": "absent", "home": "good"}, 0),
    ({"registry": "absent", "docker": "absent", "home": "bad"}, 3),
]


@pytest.mark.parametrize(("files", "status"), ORDER_CASES)
def test_the_default_auth_file_is_the_first_that_exists(
    private: tuple[str, str, str], tmp_path: Path, files: dict[str, str], status: int
) -> None:
    image, host, image_id = private
    places = {
        "registry": tmp_path / "containers" / "auth.json",
        "docker": tmp_path / "dockercfg" / "config.json",
        "home": tmp_path / "home" / ".docker" / "config.json",
    }
    for place, kind in files.items():
        if kind != "absent":
            auth_file(places[place], host, ALICE[0], ALICE[1] if kind == "good" else WRONG)
    # The variables are set even when their file is absent: an absent file is passed over.
    env = clean_env(
        tmp_path / "home",
        REGISTRY_AUTH_FILE=str(places["registry"]),
        DOCKER_CONFIG=str(places["docker"].parent),
    )
    result = pullwarden("pull", "-q", image, "--store", str(tmp_path / "s"), env=env)
    if status == 0:
        assert result.returncode == 0, result.stderr
        assert result.stdout.strip() == image_id
    else:
        one_error_line(result, status)
    assert WRONG not in result.stdout + result.stderr


def test_no_auth_file_anywhere_is_anonymous(seeded: Seeded, tmp_path: Path) -> None:
    env = clean_env(tmp_path / "home")
    public = pullwarden(
        "pull",
        "-q",
        seeded.ref("token", "public/hello:v1"),
        "--store",
        str(tmp_path / "s"),
        env=env,
    )
    assert public.returncode == 0, public.stderr
    assert public.stdout.strip() == seeded.images.hello.config_digest
    private = pullwarden(
        "pull",
        "-q",
        seeded.ref("token", "private/alice:v1"),
        "--store",
        str(tmp_path / "s"),
        env=env,
    )
    one_error_line(private, 3)


def test_an_unreadable_default_auth_file_is_bad_input(tmp_path: Path) -> None:
    config = tmp_path / "home" / ".docker" / "config.json"
    config.parent.mkdir(parents=True)
    config.write_text("{not json")
    result = pullwarden("pull", "127.0.0.1:1/ns/x:v1", env=clean_env(tmp_path / "home"))
    line = one_error_line(result, 2)  # 127.0.0.1:1 refuses: reaching it would be exit 5
    assert "default auth file" in line and str(config) in line


@pytest.mark.parametrize(
    "args",
    [
        ["--creds", "alice:x", "-u", "alice"],
        ["--creds", "alice:x", "--password-stdin"],
        ["--password-stdin"],
        ["--creds", ":x"],
        ["-u", "alice", "--authfile", "/etc/hostname"],
    ],
    ids=["creds+u", "creds+stdin", "stdin-alone", "no-user", "u+authfile"],
)
def test_contradictory_credential_options_are_bad_input(tmp_path: Path, args: list[str]) -> None:
    store = tmp_path / "store"
    result = pullwarden(
        "pull",
        "127.0.0.1:1/ns/x:v1",
        *args,
        "--store",
        str(store),
        env=clean_env(tmp_path),
        stdin="pw\n",
    )
    one_error_line(result, 2)
    assert not store.exists()


def test_u_without_a_password_and_without_a_terminal_is_bad_input(tmp_path: Path) -> None:
    store = tmp_path / "store"
    result = pullwarden(
        "pull", "127.0.0.1:1/ns/x:v1", "-u", "alice", "--store", str(store), env=clean_env(tmp_path)
    )
    assert "--password-stdin" in one_error_line(result, 2)
    assert not store.exists()


def run_on_a_terminal(args: list[str], env: dict[str, str], answer: str) -> tuple[int, str]:
    """Run the CLI on a pseudo-terminal, type ``answer`` at the password prompt; (status,
    everything the terminal showed)."""
    pid, fd = pty.fork()
    if pid == 0:  # the child: the CLI, with the pty as its terminal
        os.execve(sys.executable, [sys.executable, "-m", "pullwarden", *args], env)
    shown = b""
    answered = False
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        ready, _, _ = select.select([fd], [], [], 1.0)
        if not ready:
            continue
        try:
            chunk = os.read(fd, 4096)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
        if not answered and b"Password" in shown:
            os.write(fd, answer.encode() + b"\n")
            answered = True
    os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), shown.decode(errors="replace")


def test_u_prompts_for_the_password_on_a_terminal(
    private: tuple[str, str, str], tmp_path: Path
) -> None:
    image, _host, image_id = private
    env = clean_env(tmp_path)
    args = ["pull", "-q", image, "-u", ALICE[0], "--store", str(tmp_path / "s")]
    status, shown = run_on_a_terminal(args, env, ALICE[1])
    assert status == 0, shown
    assert f"Password for {ALICE[0]}" in shown
    assert image_id in shown
    assert ALICE[1] not in shown  # the input is hidden: the terminal never echoes it

    status, shown = run_on_a_terminal(args, env, WRONG)
    assert status == 3, shown
    assert WRONG not in shown


def test_a_platform_the_index_lacks_is_not_found_naming_what_it_has(
    seeded: Seeded, tmp_path: Path
) -> None:
    image = seeded.ref("noauth", "ns/multi:v1")
    env = clean_env(tmp_path)
    store = str(tmp_path / "s")
    missing = pullwarden(
        "pull", "-q", image, "--platform", "linux/s390x", "--store", store, env=env
    )
    line = one_error_line(missing, 4)
    assert "linux/s390x" in line
    assert "linux/amd64" in line and "linux/arm64/v8" in line
    listed = pullwarden("images", "-q", "--store", store, env=env)
    assert listed.stdout == ""  # nothing was committed

    arm = pullwarden("pull", "-q", image, "--platform", "linux/arm64/v8", "--store", store, env=env)
    assert arm.returncode == 0, arm.stderr
    assert arm.stdout.strip() == seeded.images.multi_arm64.config_digest


def test_creds_without_a_password_prompts_on_a_terminal(
    private: tuple[str, str, str], tmp_path: Path
) -> None:
    image, _host, image_id = private
    args = ["pull", "-q", image, "--creds", ALICE[0], "--store", str(tmp_path / "s")]
    status, shown = run_on_a_terminal(args, clean_env(tmp_path), ALICE[1])
    assert status == 0, shown
    assert image_id in shown and ALICE[1] not in shown
    no_tty = pullwarden(*args, env=clean_env(tmp_path))
    assert "no password" in one_error_line(no_tty, 2)
