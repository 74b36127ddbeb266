"""``pullwarden registry serve``: argument errors, and a real run stopped by a signal."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pullwarden.cli.registry import registry
from pullwarden.errors import DeniedError, UnauthorizedError
from pullwarden.runtime import AuthConfig, RegistryClient, build_image

# Runs the group directly: wiring it into ``pullwarden`` is cli/__init__.py's business.
SERVE = [sys.executable, "-c", "from pullwarden.cli.registry import registry; registry()", "serve"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--host", "0.0.0.0"], "loopback only"),
        (["--host", "10.1.2.3"], "loopback only"),
        (["--user", "alice"], "expected NAME:PASSWORD"),
        (["--user", "alice:pw", "--user", "alice:pw2"], "given twice"),
        (["--user", "alice:pw", "--auth", "none"], "need auth 'basic' or 'token'"),
        (["--user", "alice:pw", "--allow", "alice"], "expected USER=REPOGLOB"),
        (["--user", "alice:pw", "--allow", "alice=ns/*:delete"], "actions must be"),
        (["--import", "nowhere"], "expected LAYOUT_DIR:REF_NAME=REPO:TAG"),
        (["--import", "/nonexistent/layout:v1=ns/app:v1"], "--import /nonexistent/layout:v1"),
        (["--auth", "ldap"], "Invalid value for '--auth'"),
    ],
)
def test_bad_arguments_are_one_line_errors(args: list[str], message: str) -> None:
    result = CliRunner().invoke(registry, ["serve", "--port", "0", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert "Traceback" not in result.output
    assert "pw2" not in result.output


def test_a_password_never_appears_in_an_error() -> None:
    result = CliRunner().invoke(registry, ["serve", "--user", ":hunter2-password"])
    assert result.exit_code == 2
    assert "hunter2" not in result.output


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_serve_runs_until_signalled(tmp_path: Path, stop_signal: signal.Signals) -> None:
    layout = tmp_path / "layout"
    image = build_image(layout, "v1", files={"hello.txt": b"hi\n"})
    data = tmp_path / "data"
    command = [
        *SERVE, "--port", "0", "--dir", str(data),
        "--user", "alice:alice-secret-pw", "--user", "bob:bob-secret-pw",
        "--allow", "alice=ns/*:pull,push", "--allow", "*=public/*",
        "--import", f"{layout}:v1=ns/app:v1",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("http://127.0.0.1:"), url
        host = url.removeprefix("http://")
        lines = []
        while (line := proc.stdout.readline().decode()) and "Ctrl-C" not in line:
            lines.append(line)
        listing = "".join(lines)
        assert "auth: token" in listing and "users: alice, bob" in listing
        assert f"image: {host}/ns/app:v1 {image.manifest_digest}" in listing
        with RegistryClient(retries=0) as client:
            ref = f"{host}/ns/app:v1"
            alice = AuthConfig("alice", "alice-secret-pw")
            assert client.head_manifest(ref, alice) == image.manifest_digest
            with pytest.raises(DeniedError):
                client.head_manifest(ref, AuthConfig("bob", "bob-secret-pw"))
            with pytest.raises(UnauthorizedError):
                client.head_manifest(ref, AuthConfig("alice", "wrong"))
        proc.send_signal(stop_signal)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err.decode()
    assert b"stopped" in err
    assert b"secret-pw" not in out + err + listing.encode()
    assert (data / "repositories" / "ns" / "app" / "_tags" / "v1").read_text() == (
        image.manifest_digest
    )


def test_serve_reports_a_busy_port(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run(
            [*SERVE, "--port", str(port)], capture_output=True, timeout=30, check=False
        )
    assert result.returncode == 1
    assert b"cannot listen on 127.0.0.1:" in result.stderr
    assert b"Traceback" not in result.stderr
