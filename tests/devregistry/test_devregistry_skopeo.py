"""Interoperability: the real skopeo pushes to, inspects and pulls from DevRegistry.

Skipped when skopeo is missing, unless ``PULLWARDEN_REQUIRE_REAL=1`` (then it fails).
Credentials reach skopeo through an auth file, never its command line.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from pullwarden.devregistry import AccessRule, DevRegistry
from pullwarden.runtime import Platform, build_image, build_index, read_blob

USERS = {"alice": "alice-secret-pw", "bob": "bob-secret-pw"}
RULES = (
    AccessRule("alice", "ns/*", frozenset({"pull", "push"})),
    AccessRule("bob", "ns/*", frozenset({"pull"})),
)


@pytest.fixture(scope="module")
def skopeo_binary() -> str:
    found = shutil.which("skopeo")
    if found is None:
        reason = "skopeo is not installed (apt-get install -y --no-install-recommends skopeo)"
        if os.environ.get("PULLWARDEN_REQUIRE_REAL") == "1":
            pytest.fail(f"{reason}; PULLWARDEN_REQUIRE_REAL=1 forbids skipping", pytrace=False)
        pytest.skip(reason)
    return found


class Skopeo:
    def __init__(self, binary: str, workdir: Path, registry: DevRegistry) -> None:
        self.binary = binary
        self.workdir = workdir
        self.registry = registry
        (workdir / "policy.json").write_text(
            json.dumps({"default": [{"type": "insecureAcceptAnything"}]})
        )
        (workdir / "registries.conf").write_text("")

    def run(self, *args: str, user: str | None = None) -> subprocess.CompletedProcess[bytes]:
        auths = {}
        if user is not None:
            secret = base64.b64encode(f"{user}:{USERS[user]}".encode()).decode()
            auths[self.registry.host] = {"auth": secret}
        authfile = self.workdir / "auth.json"
        authfile.write_text(json.dumps({"auths": auths}))
        authfile.chmod(0o600)
        command = [
            self.binary,
            "--policy",
            str(self.workdir / "policy.json"),
            "--registries-conf",
            str(self.workdir / "registries.conf"),
            args[0],
            "--authfile",
            str(authfile),
            *args[1:],
        ]
        return subprocess.run(command, capture_output=True, timeout=120, check=False)


@pytest.mark.parametrize("mode", ["token", "basic"])
def test_skopeo_pushes_inspects_and_pulls(skopeo_binary: str, tmp_path: Path, mode: str) -> None:
    layout = tmp_path / "layout"
    amd = build_image(layout, "amd", files={"a.txt": b"amd64\n"})
    arm = build_image(
        layout, "arm", files={"b.txt": b"arm64\n"}, platform=Platform("linux", "arm64", "v8")
    )
    index_digest = build_index(layout, "multi", [amd, arm])
    with DevRegistry(users=USERS, auth=mode, rules=RULES) as reg:  # type: ignore[arg-type]
        skopeo = Skopeo(skopeo_binary, tmp_path, reg)
        dest = f"docker://{reg.host}/ns/app"
        pushed = skopeo.run(
            "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:amd", f"{dest}:v1",
            user="alice",
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr.decode()
        pushed = skopeo.run(
            "copy", "-q", "--all", "--dest-tls-verify=false", f"oci:{layout}:multi",
            f"{dest}:multi", user="alice",
        )  # fmt: skip
        assert pushed.returncode == 0, pushed.stderr.decode()
        assert reg.count("PUT", "/manifests/", status=201) == 4  # v1, two children, the index

        inspected = skopeo.run("inspect", "--tls-verify=false", f"{dest}:v1", user="bob")
        assert inspected.returncode == 0, inspected.stderr.decode()
        assert json.loads(inspected.stdout)["Digest"] == amd.manifest_digest
        raw = skopeo.run("inspect", "--raw", "--tls-verify=false", f"{dest}:multi", user="bob")
        assert raw.returncode == 0, raw.stderr.decode()
        assert raw.stdout == read_blob(layout, index_digest)

        pulled = skopeo.run(
            "copy", "-q", "--src-tls-verify=false", f"{dest}:v1", f"oci:{tmp_path / 'out'}:v1",
            user="bob",
        )  # fmt: skip
        assert pulled.returncode == 0, pulled.stderr.decode()
        assert read_blob(tmp_path / "out", amd.layer_digests[0])

        # bob may pull but not push; nobody gets in without credentials
        refused = skopeo.run(
            "copy", "-q", "--dest-tls-verify=false", f"oci:{layout}:arm", f"{dest}:bob",
            user="bob",
        )  # fmt: skip
        assert refused.returncode != 0
        anonymous = skopeo.run("inspect", "--tls-verify=false", f"{dest}:v1")
        assert anonymous.returncode != 0
        assert b"secret-pw" not in refused.stderr + anonymous.stderr
        assert reg.server_errors == []
