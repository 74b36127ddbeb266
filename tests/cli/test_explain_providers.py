"""`records explain --image-credential-provider-config`: a service account only counts through a
provider with tokenAttributes that matches the image (spec §2.6)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pullwarden.cli import main
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullServiceAccount,
)

REF = "sha256:" + "a" * 64
IMAGE = "registry.example/ci/tool:v1"
ACCOUNT = "ci/builder/sa-1"
BASE = ("records", "explain", "--kubelet-dir")


@pytest.fixture
def kubelet(tmp_path: Path) -> Path:
    FileRecordStore(tmp_path).write_pulled_record(
        ImagePulledRecord(
            REF,
            datetime(2026, 1, 2, tzinfo=UTC),
            {
                "registry.example/ci/tool": ImagePullCredentials(
                    kubernetes_service_accounts=(ImagePullServiceAccount("sa-1", "ci", "builder"),)
                )
            },
        )
    )
    return tmp_path


def providers(path: Path, *, token: bool, match: str = "*.example") -> Path:
    provider: dict[str, object] = {
        "name": "cloud",
        "matchImages": [match],
        "defaultCacheDuration": "10m",
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
    }
    if token:
        provider["tokenAttributes"] = {
            "serviceAccountTokenAudience": "registry.example",
            "cacheType": "ServiceAccount",
            "requireServiceAccount": True,
        }
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kubelet.config.k8s.io/v1",
                "kind": "CredentialProviderConfig",
                "providers": [provider],
            }
        )
    )
    return path


def explain(kubelet: Path, *extra: str) -> dict[str, object]:
    result = CliRunner().invoke(
        main,
        [
            *BASE,
            str(kubelet),
            "--image",
            IMAGE,
            "--image-ref",
            REF,
            "--service-account",
            ACCOUNT,
            "-o",
            "json",
            *list(extra),
        ],
    )
    assert result.exit_code == 0, result.output
    return dict(json.loads(result.output))


def test_without_providers_the_service_account_is_taken_as_given(kubelet: Path) -> None:
    assert explain(kubelet)["mustPull"] is False


def test_a_token_provider_for_the_image_offers_the_service_account(
    kubelet: Path, tmp_path: Path
) -> None:
    got = explain(
        kubelet,
        "--image-credential-provider-config",
        str(providers(tmp_path / "p.yaml", token=True)),
    )
    assert got["mustPull"] is False
    assert any("belong to the pod's service account" in n for n in got["providers"])  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("token", "match", "words"),
    [(False, "*.example", "node-wide"), (True, "other.example", "no provider matches")],
    ids=["node-wide-only", "no-match"],
)
def test_without_a_matching_token_provider_the_service_account_is_not_offered(
    kubelet: Path, tmp_path: Path, token: bool, match: str, words: str
) -> None:
    config = providers(tmp_path / "p.yaml", token=token, match=match)
    got = explain(kubelet, "--image-credential-provider-config", str(config))
    assert got["mustPull"] is True
    notes = " ".join(got["providers"])  # type: ignore[arg-type]
    assert words in notes and "is not offered for verification" in notes


def test_a_bad_provider_config_is_an_error_naming_the_file(kubelet: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: kubelet.config.k8s.io/v1\nkind: CredentialProviderConfig\n")
    result = CliRunner().invoke(
        main,
        [
            *BASE,
            str(kubelet),
            "--image",
            IMAGE,
            "--image-ref",
            REF,
            "--image-credential-provider-config",
            str(bad),
        ],
    )
    assert result.exit_code == 2 and str(bad) in result.output
