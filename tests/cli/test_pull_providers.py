"""`pullwarden pull` with credential provider plugins (node-wide ones: a pull has no pod)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from pullwarden.devregistry import DevRegistry
from pullwarden.runtime import build_image

PLUGINS = Path(__file__).resolve().parents[1] / "credentials" / "plugins"
PASSWORD = "plugin-Pa55word-77e1"


@pytest.fixture
def registry(tmp_path: Path) -> Iterator[DevRegistry]:
    layout = tmp_path / "layout"
    build_image(layout, "app", files={"app.txt": b"private\n"})
    with DevRegistry(users={"robot": PASSWORD}, auth="basic") as reg:
        reg.add_image("team/app", "v1", layout, "app")
        yield reg


def provider_files(tmp_path: Path, host: str, password: str) -> tuple[Path, Path]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    shutil.copy(PLUGINS / "static_creds.py", bin_dir / "static")
    (bin_dir / "static").chmod(0o755)
    config = tmp_path / "providers.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubelet.config.k8s.io/v1",
                "kind": "CredentialProviderConfig",
                "providers": [
                    {
                        "name": "static",
                        "matchImages": [host],  # globs are for names: a port must be exact
                        "defaultCacheDuration": "1m",
                        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
                        "args": ["--username", "robot", "--password", password],
                    }
                ],
            }
        )
    )
    return config, bin_dir


def pull(tmp_path: Path, image: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "pullwarden.cli",
            "pull",
            "-q",
            "--store",
            str(tmp_path / "s"),
            *extra,
            image,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_node_wide_plugin_supplies_the_credentials(registry: DevRegistry, tmp_path: Path) -> None:
    image = f"{registry.host}/team/app:v1"
    config, bin_dir = provider_files(tmp_path, registry.host, PASSWORD)
    assert pull(tmp_path, image).returncode == 3  # anonymous: refused
    done = pull(
        tmp_path,
        image,
        "--image-credential-provider-config",
        str(config),
        "--image-credential-provider-bin-dir",
        str(bin_dir),
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().startswith("sha256:")
    assert PASSWORD not in done.stdout + done.stderr


def test_a_wrong_plugin_password_is_refused_without_showing_it(
    registry: DevRegistry, tmp_path: Path
) -> None:
    config, bin_dir = provider_files(tmp_path, registry.host, "Wr0ng-pa55word-x1")
    done = pull(
        tmp_path,
        f"{registry.host}/team/app:v1",
        "--image-credential-provider-config",
        str(config),
        "--image-credential-provider-bin-dir",
        str(bin_dir),
    )
    assert done.returncode == 3
    assert "Wr0ng" not in done.stdout + done.stderr and "Traceback" not in done.stderr


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (
            ["--image-credential-provider-config", "CONFIG"],
            "needs --image-credential-provider-bin-dir",
        ),
        (["--image-credential-provider-bin-dir", "BIN"], "need --image-credential-provider-config"),
        (["--service-account-issuer", "x"], "go together"),
    ],
)
def test_flag_combinations_are_checked(
    registry: DevRegistry, tmp_path: Path, flags: list[str], words: str
) -> None:
    config, bin_dir = provider_files(tmp_path, registry.host, PASSWORD)
    args = [f.replace("CONFIG", str(config)).replace("BIN", str(bin_dir)) for f in flags]
    done = pull(tmp_path, f"{registry.host}/team/app:v1", *args)
    assert done.returncode == 2 and words in done.stderr


def test_a_bad_provider_config_exits_2_naming_the_file(
    registry: DevRegistry, tmp_path: Path
) -> None:
    config, bin_dir = provider_files(tmp_path, registry.host, PASSWORD)
    config.write_text(
        "apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\n"
        "providers: [{name: static, defaultCacheDuration: 1m, "
        "apiVersion: credentialprovider.kubelet.k8s.io/v1}]\n"
    )
    done = pull(
        tmp_path,
        f"{registry.host}/team/app:v1",
        "--image-credential-provider-config",
        str(config),
        "--image-credential-provider-bin-dir",
        str(bin_dir),
    )
    assert done.returncode == 2
    assert str(config) in done.stderr and "matchImages" in done.stderr
