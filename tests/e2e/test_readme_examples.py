"""The README's Tour and library example, read from README.md and run exactly as written."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TOUR_PORT = 5000  # the Tour's registry, as examples/pods.yaml names it


def block(readme: str, section: str, language: str, nth: int = 0) -> str:
    """The ``nth`` (from 0) fenced ``language`` block under ``## section``."""
    part = readme.split(f"\n## {section}\n", 1)[1].split("\n## ", 1)[0]
    found = re.findall(rf"^```{language}\n(.*?)^```", part, re.S | re.M)
    assert len(found) > nth, f"README.md: no ```{language} block {nth} under ## {section}"
    return str(found[nth])


def test_blocks_are_found_and_a_missing_one_is_an_error() -> None:
    readme = (REPO / "README.md").read_text()
    assert "pullwarden run" in block(readme, "Tour", "sh")
    assert "PullManager" in block(readme, "As a library", "python")
    with pytest.raises(AssertionError):
        block("# x\n\n## Tour\n\nno block\n\n## Next\n", "Tour", "sh")


def port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_the_tour_runs_as_written(tmp_path: Path) -> None:
    if not port_free(TOUR_PORT):
        if os.environ.get("PULLWARDEN_REQUIRE_REAL"):
            pytest.fail(f"port {TOUR_PORT} is in use: the README's Tour cannot run")
        pytest.skip(f"port {TOUR_PORT} is in use")
    script = block((REPO / "README.md").read_text(), "Tour", "sh")
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["TMPDIR"] = str(tmp_path)  # where the Tour's mktemp -d puts everything
    env["HOME"] = str(tmp_path / "home")  # no docker config of the machine's user
    for name in ("PULLWARDEN_ROOT", "PULLWARDEN_STORE", "CONTAINER_RUNTIME_ENDPOINT"):
        env.pop(name, None)
    proc = subprocess.Popen(
        ["bash", "-e", "-c", script],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # the registry it starts goes with it, whatever happens
    )
    try:
        out, err = proc.communicate(timeout=300)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, (out[-3000:], err[-3000:])

    (tour,) = [p for p in tmp_path.iterdir() if p.name.startswith("tmp.")]
    # Team A pulled with its secret; team B was refused although the image is on the node.
    assert re.search(r"team-a/app\s+app\s+\S+\s+Ready\s+pulled with secret team-a/regcred", out)
    assert re.search(r"team-b/app\s+app\s+\S+\s+ErrImagePull\s+image is on the node", out)
    assert "run: exit status 1" in out
    # The restarted node answered team A from its record, without pulling.
    second = json.loads((tour / "second.json").read_text())
    by_pod = {p["namespace"]: p["containers"][0] for p in second["pods"]}
    assert by_pod["team-a"]["verifiedBy"] == "secretHash" and not by_pod["team-a"]["pulled"]
    assert by_pod["team-a"]["credential"]["name"] == "regcred"
    assert by_pod["team-b"]["outcome"] == "ErrImagePull"
    # The operator commands told the same story.
    assert "secret team-a/regcred" in out and "MUST PULL" in out
    assert "kubelet_imagemanager_ondisk_pulledrecords 1.0" in out
    # The dry runs changed nothing: the record and the image are still there.
    assert len(list((tour / "node" / "image_manager" / "pulled").iterdir())) == 1
    images = subprocess.run(
        [sys.executable, "-m", "pullwarden", "images", "--store", str(tour / "node" / "images")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "localhost:5000/private/app" in images.stdout


def test_the_library_example_runs_as_written() -> None:
    code = block((REPO / "README.md").read_text(), "As a library", "python")
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("True no-match ")


def test_the_transport_example_runs_as_written() -> None:
    code = block((REPO / "README.md").read_text(), "As a library", "python", 1)
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "GET https://registry.example/v2/team-a/app/manifests/v1",
        "pulling registry.example/team-a/app:v1: not found: manifest unknown",
    ]
