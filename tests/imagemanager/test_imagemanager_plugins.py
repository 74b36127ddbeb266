"""Credential provider plugins in the image manager: composition, records, events (spec §2.5).

Real plugin processes (tests/credentials/plugins/), a fake image service that decides which user
may pull.  The keyring for one request is the pod's Secrets, then the node's docker config, then
the plugins'; plugin credentials without a token are node-wide, with one they are the pod's
service account's.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pullwarden.credentials import (
    CredentialPlugins,
    CredentialProvider,
    CredentialProviderConfig,
    TokenAttributes,
    TrackedCredential,
)
from pullwarden.objects import Container, Pod, ServiceAccount
from pullwarden.testing import FakeClock
from tests.imagemanager.doubles import (
    FakeImageService,
    Rig,
    StaticKeyring,
    dockerconfig_secret,
    make_rig,
    only_users,
)

PLUGINS = Path(__file__).resolve().parents[1] / "credentials" / "plugins"
REGISTRY = "registry.example"
IMAGE = f"{REGISTRY}/team/app:v1"
REPO = f"{REGISTRY}/team/app"
V1 = "credentialprovider.kubelet.k8s.io/v1"
PASSWORD = "plugin-Pa55word-91c3"
SECRET = dockerconfig_secret("team-a", "regcred", "uid-s", REGISTRY, "secret-user", "pw")
ACCOUNT = ServiceAccount("sa-uid-1", "team-a", "builder")


class FixedTokens:
    """A token source that hands out one token per service account."""

    def token(self, *, pod: Pod, service_account: ServiceAccount, audience: str) -> str:
        return f"token-for-{service_account.namespace}-{service_account.name}-{audience}"


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "bin"
    directory.mkdir()
    for name, script in [("static", "static_creds.py"), ("broken", "bad_plugin.py")]:
        shutil.copy(PLUGINS / script, directory / name)
        (directory / name).chmod(0o755)
    return directory


def static(name: str = "static", *, token: TokenAttributes | None = None) -> CredentialProvider:
    return CredentialProvider(
        name=name,
        match_images=("*.example",),
        default_cache_duration=0.0,
        api_version=V1,
        args=("--username", "plugin-user", "--password", PASSWORD),
        token_attributes=token,
    )


def rig_with(
    tmp_path: Path,
    clock: FakeClock,
    bin_dir: Path,
    *providers: CredentialProvider,
    users: tuple[str | None, ...] = ("plugin-user",),
    node: list[TrackedCredential] | None = None,
) -> Rig:
    rig = make_rig(
        tmp_path,
        clock,
        service=FakeImageService(clock=clock, check=only_users(*users)),
        node_keyring=StaticKeyring(node or []),
    )
    rig.manager.plugins = CredentialPlugins(
        CredentialProviderConfig(providers), bin_dir, tokens=FixedTokens()
    )
    return rig


def pod(uid: str = "pod-uid-1", account: str = "builder") -> Pod:
    return Pod(
        uid,
        "team-a",
        f"p-{uid}",
        containers=(Container("c", IMAGE, "IfNotPresent"),),
        service_account_name=account,
    )


def test_plugins_come_after_the_pod_secrets_and_the_node_config(
    tmp_path: Path, clock: FakeClock, bin_dir: Path
) -> None:
    node = [TrackedCredential("node-user", "node-pw")]
    rig = rig_with(tmp_path, clock, bin_dir, static(), node=node)
    with rig.manager:
        result = rig.manager.ensure_image_exists(pod(), pod().containers[0], [SECRET])
    assert result.error is None
    assert [p.username for p in rig.service.pulls] == ["secret-user", "node-user", "plugin-user"]
    assert result.credential == "node-wide credentials from credential provider static"
    record = rig.record(result.image_ref)
    assert record is not None and record.credential_mapping[REPO].node_pods_accessible


def test_a_token_plugin_s_credentials_belong_to_the_pod_s_service_account(
    tmp_path: Path, clock: FakeClock, bin_dir: Path
) -> None:
    bound = static(token=TokenAttributes("registry.example", "ServiceAccount", True, (), ()))
    rig = rig_with(tmp_path, clock, bin_dir, bound)
    with rig.manager:
        first = rig.manager.ensure_image_exists(pod(), pod().containers[0], [], ACCOUNT)
        again = rig.manager.ensure_image_exists(pod("pod-uid-2"), pod().containers[0], [], ACCOUNT)
        other = ServiceAccount("sa-uid-9", "team-a", "other")
        stranger = rig.manager.ensure_image_exists(
            pod("pod-uid-3", "other"), pod().containers[0], [], other
        )
    assert first.credential == "service account team-a/builder from credential provider static"
    record = rig.record(first.image_ref)
    assert record is not None
    accounts = record.credential_mapping[REPO].kubernetes_service_accounts
    assert {(a.uid, a.namespace, a.name) for a in accounts} == {
        ("sa-uid-1", "team-a", "builder"),
        ("sa-uid-9", "team-a", "other"),  # added by the stranger's own verified pull
    }
    # the same service account is verified by the record, without a pull
    assert (again.pulled, again.verified_by) == (False, "serviceAccount")
    # another service account gets credentials from the plugin too, so it must pull (verify)
    assert stranger.pulled and stranger.verified_by == "pull"
    assert len(rig.service.pulls) == 2


def test_a_failing_plugin_is_a_warning_event_and_the_pull_goes_on(
    tmp_path: Path, clock: FakeClock, bin_dir: Path
) -> None:
    broken = CredentialProvider(
        name="broken",
        match_images=("*.example",),
        default_cache_duration=0.0,
        api_version=V1,
        args=("exit1",),
    )
    rig = rig_with(tmp_path, clock, bin_dir, broken, users=("secret-user",))
    with rig.manager:
        result = rig.manager.ensure_image_exists(pod(), pod().containers[0], [SECRET])
    assert result.error is None and result.credential == "secret team-a/regcred"
    warnings = [e for e in rig.events.events if e.reason == "CredentialProviderFailed"]
    assert len(warnings) == 1 and warnings[0].type == "Warning"
    assert "credential provider broken gave no credentials" in warnings[0].message
    assert "s3cr3t" not in " ".join(e.message for e in rig.events.events)


def test_without_an_issuer_a_token_plugin_fails_clearly(
    tmp_path: Path, clock: FakeClock, bin_dir: Path
) -> None:
    bound = static(token=TokenAttributes("registry.example", "Token", True, (), ()))
    rig = rig_with(tmp_path, clock, bin_dir, bound)
    rig.manager.plugins = CredentialPlugins(CredentialProviderConfig((bound,)), bin_dir)
    with rig.manager:
        result = rig.manager.ensure_image_exists(pod(), pod().containers[0], [], ACCOUNT)
    assert result.error == "ErrImagePull"
    [warning] = [e for e in rig.events.events if e.reason == "CredentialProviderFailed"]
    assert "issuer" in warning.message or "token" in warning.message
