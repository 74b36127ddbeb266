"""[KubeletEnsureSecretPulledImages]: present images and the pod's credentials (spec §1.4, §2.6).

These run the real pull manager on real record files; the records a case needs are written
by pulling the image first with the credentials the case is about.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from pullwarden.credentials import ServiceAccountSource, TrackedCredential, credential_hash
from pullwarden.records import ImagePullCredentials, ImagePullSecret, ImagePullServiceAccount
from pullwarden.testing import FakeClock
from tests.imagemanager.doubles import (
    FakeImageService,
    Rig,
    StaticKeyring,
    dockerconfig_secret,
    make_pod,
    make_rig,
    only_users,
)

REGISTRY = "registry.example"
IMAGE = f"{REGISTRY}/team/app:v1"
KEY = f"{REGISTRY}/team/app"

# Secret "pull-cred" in namespace team-a as created once, and the same name recreated (new UID,
# new password).
ORIGINAL = dockerconfig_secret("team-a", "pull-cred", "uid-1", REGISTRY, "deployer", "s3cret")
RECREATED = dockerconfig_secret("team-a", "pull-cred", "uid-2", REGISTRY, "deployer", "rotated")
# The same credentials as ORIGINAL kept in a Secret of another namespace.
COPY = dockerconfig_secret("team-b", "copied-cred", "uid-3", REGISTRY, "deployer", "s3cret")
STRANGER = dockerconfig_secret("team-c", "guess", "uid-4", REGISTRY, "mallory", "guess")


def rig_with_pulled_image(tmp_path: Path, clock: FakeClock, **kwargs: object) -> tuple[Rig, str]:
    """A rig whose image was pulled by team-a/web with ORIGINAL (so a record names it)."""
    service = FakeImageService(clock=clock, check=only_users("deployer", "sa-user", "node-user"))
    rig = make_rig(tmp_path, clock, service=service, **kwargs)  # type: ignore[arg-type]
    first = rig.ensure(IMAGE, "IfNotPresent", secrets=[ORIGINAL])
    assert first.ok and first.pulled and first.credential == "secret team-a/pull-cred"
    rig.service.reset_calls()
    rig.events.clear()
    return rig, first.image_ref


def test_pull_records_the_secret_that_succeeded(tmp_path: Path, clock: FakeClock) -> None:
    rig, ref = rig_with_pulled_image(tmp_path, clock)
    with rig.manager:
        record = rig.record(ref)
    assert record is not None
    assert record.credential_mapping == {
        KEY: ImagePullCredentials(
            kubernetes_secrets=(
                ImagePullSecret(
                    "uid-1", "team-a", "pull-cred", credential_hash("deployer", "s3cret")
                ),
            )
        )
    }


def test_image_recorded_under_another_name_must_be_pulled(tmp_path: Path, clock: FakeClock) -> None:
    rig, _ref = rig_with_pulled_image(tmp_path, clock)
    # the same content under a name the record does not know
    rig.service.images[f"{REGISTRY}/other/app:v1"] = rig.service.images[IMAGE]
    with rig.manager:
        result = rig.ensure(f"{REGISTRY}/other/app:v1", "IfNotPresent", secrets=[ORIGINAL])
    assert result.ok and result.pulled and result.verified_by == "pull"
    assert rig.service.calls == ["status", "pull", "status"]
    assert rig.events.reasons() == ["Pulling", "Pulled"]
    assert rig.requests("ifnotpresent", "true", "true") == 1


def test_unknown_secret_must_pull(tmp_path: Path, clock: FakeClock) -> None:
    rig, ref = rig_with_pulled_image(tmp_path, clock)
    pod = make_pod(uid="pod-2", name="web-2")
    with rig.manager:
        result = rig.ensure(IMAGE, "IfNotPresent", pod=pod, secrets=[RECREATED])
    assert result.error is None and result.pulled
    assert rig.service.pulls[0].username == "deployer"
    assert rig.requests("ifnotpresent", "true", "true") == 1
    record = rig.record(ref)
    assert record is not None
    coordinates = {(s.uid, s.name) for s in record.credential_mapping[KEY].kubernetes_secrets}
    assert coordinates == {("uid-1", "pull-cred"), ("uid-2", "pull-cred")}


def test_unknown_secret_with_never_fails_without_revealing_the_image(
    tmp_path: Path, clock: FakeClock
) -> None:
    rig, _ref = rig_with_pulled_image(tmp_path, clock)
    pod = make_pod(uid="pod-2", name="web-2")
    with rig.manager:
        result = rig.ensure(IMAGE, "Never", pod=pod, secrets=[STRANGER])
        absent = rig.ensure(f"{REGISTRY}/team/absent:v1", "Never", pod=pod, secrets=[STRANGER])
    assert result.error == absent.error == "ErrImageNeverPull"
    assert result.message == (f'Container image "{IMAGE}" is not present with pull policy of Never')
    assert absent.message == result.message.replace("app:v1", "absent:v1")
    assert rig.events.reasons() == ["ErrImageNeverPull", "ErrImageNeverPull"]
    assert "pull" not in rig.service.calls
    assert rig.requests("never", "true", "true") == 1
    assert rig.requests("never", "false", "unknown") == 1


def test_one_matching_secret_among_several_is_enough(tmp_path: Path, clock: FakeClock) -> None:
    rig, _ref = rig_with_pulled_image(tmp_path, clock)
    with rig.manager:
        result = rig.ensure(IMAGE, "IfNotPresent", secrets=[STRANGER, ORIGINAL])
    assert result.ok and not result.pulled
    assert (result.verified_by, result.credential) == ("secretHash", "secret team-a/pull-cred")
    assert rig.service.calls == ["status"]
    assert rig.events.messages() == [
        f'Container image "{IMAGE}" already present on machine and can be accessed by the pod'
    ]
    assert rig.requests("ifnotpresent", "true", "false") == 1


def test_same_credentials_in_another_secret_match_by_hash(tmp_path: Path, clock: FakeClock) -> None:
    rig, ref = rig_with_pulled_image(tmp_path, clock)
    pod = make_pod(uid="pod-b", namespace="team-b", name="other")
    with rig.manager:
        result = rig.ensure(IMAGE, "Never", pod=pod, secrets=[COPY])
    assert result.ok and not result.pulled
    assert (result.verified_by, result.credential) == ("secretHash", "secret team-b/copied-cred")
    record = rig.record(ref)
    assert record is not None
    assert [s.namespace for s in record.credential_mapping[KEY].kubernetes_secrets] == [
        "team-a",
        "team-b",
    ]


def test_rotated_secret_matches_by_coordinates(tmp_path: Path, clock: FakeClock) -> None:
    rig, ref = rig_with_pulled_image(tmp_path, clock)
    rotated = dockerconfig_secret("team-a", "pull-cred", "uid-1", REGISTRY, "deployer", "new-pw")
    with rig.manager:
        result = rig.ensure(IMAGE, "IfNotPresent", secrets=[rotated])
    assert result.ok and not result.pulled
    assert (result.verified_by, result.credential) == (
        "secretCoordinates",
        "secret team-a/pull-cred",
    )
    record = rig.record(ref)
    assert record is not None
    (secret,) = record.credential_mapping[KEY].kubernetes_secrets
    assert secret.credential_hash == credential_hash("deployer", "new-pw")


def test_no_credentials_at_all_must_pull_and_is_denied(tmp_path: Path, clock: FakeClock) -> None:
    rig, _ref = rig_with_pulled_image(tmp_path, clock)
    pod = make_pod(uid="pod-2", name="web-2")
    with rig.manager:
        result = rig.ensure(IMAGE, "IfNotPresent", pod=pod)
    assert result.error == "ErrImagePull" and result.pulled
    assert result.message == f"pull access denied for {IMAGE} (anonymous)"
    assert [p.username for p in rig.service.pulls] == [None]


def test_node_credentials_pull_without_secret_tracking(tmp_path: Path, clock: FakeClock) -> None:
    node = StaticKeyring([TrackedCredential("node-user", "node-pass")])
    rig, ref = rig_with_pulled_image(tmp_path, clock, node_keyring=node)
    pod = make_pod(uid="pod-2", name="web-2")
    with rig.manager:
        result = rig.ensure(IMAGE, "IfNotPresent", pod=pod)
        assert result.ok and result.pulled and result.credential == "node credentials"
        record = rig.record(ref)
        assert record is not None
        assert record.credential_mapping[KEY] == ImagePullCredentials(node_pods_accessible=True)
        # from now on any pod may use the image
        third = rig.ensure(IMAGE, "Never", pod=make_pod(uid="pod-3", name="web-3"))
    assert third.ok and (third.verified_by, third.credential) == ("nodeWide", "")
    assert node.lookups == [KEY, KEY]  # looked up once per call that needed it


SA = ServiceAccountSource("sa-uid-123", "team-a", "builder")
SA_CRED = TrackedCredential("sa-user", "sa-token", source=SA, credential_hash="sa-hash")


def test_service_account_credentials_are_recorded_and_then_match(
    tmp_path: Path, clock: FakeClock
) -> None:
    rig = make_rig(
        tmp_path,
        clock,
        node_keyring=StaticKeyring([SA_CRED]),
        service=FakeImageService(clock=clock, check=only_users("sa-user")),
    )
    with rig.manager:
        first = rig.ensure(IMAGE, "IfNotPresent")
        assert first.ok and first.credential == "service account team-a/builder"
        record = rig.record(first.image_ref)
        assert record is not None
        assert record.credential_mapping[KEY] == ImagePullCredentials(
            kubernetes_service_accounts=(
                ImagePullServiceAccount("sa-uid-123", "team-a", "builder"),
            )
        )
        second = rig.ensure(IMAGE, "IfNotPresent", pod=make_pod(uid="pod-2"))
    assert second.ok and not second.pulled
    assert (second.verified_by, second.credential) == (
        "serviceAccount",
        "service account team-a/builder",
    )


def test_mixed_credentials_without_a_match_must_pull(tmp_path: Path, clock: FakeClock) -> None:
    other_sa = TrackedCredential(
        "sa-user", "sa-token", source=ServiceAccountSource("sa-uid-456", "team-a", "builder")
    )
    rig, _ref = rig_with_pulled_image(tmp_path, clock, node_keyring=StaticKeyring([other_sa]))
    pod = make_pod(uid="pod-2", name="web-2")
    with rig.manager:
        result = rig.ensure(IMAGE, "IfNotPresent", pod=pod, secrets=[STRANGER])
    assert result.ok and result.pulled
    # the pod's secret is tried first and refused; the service account's credentials succeed
    assert [p.username for p in rig.service.pulls] == ["mallory", "sa-user"]
    assert result.credential == "service account team-a/builder"
    assert rig.requests("ifnotpresent", "true", "true") == 1


@pytest.mark.parametrize(
    ("policy", "allowlist", "verified_by", "pulls"),
    [
        ("NeverVerify", (), "neverVerify", 0),
        ("AlwaysVerify", (), "pull", 1),
        ("NeverVerifyAllowlistedImages", (f"{REGISTRY}/team/*",), "allowlisted", 0),
        ("NeverVerifyAllowlistedImages", (), "pull", 1),
    ],
)
def test_verification_policies_for_a_preloaded_image(
    tmp_path: Path,
    clock: FakeClock,
    policy: str,
    allowlist: tuple[str, ...],
    verified_by: str,
    pulls: int,
) -> None:
    rig = make_rig(tmp_path, clock, policy=policy, allowlist=allowlist)
    rig.service.add(IMAGE)
    with rig.manager:
        result = rig.ensure(IMAGE, "IfNotPresent")
    assert result.ok and result.verified_by == verified_by
    assert rig.service.calls.count("pull") == pulls


def test_pod_credentials_are_looked_up_at_most_once(tmp_path: Path, clock: FakeClock) -> None:
    node = StaticKeyring([TrackedCredential("node-user", "node-pass")])
    rig, _ref = rig_with_pulled_image(tmp_path, clock, node_keyring=node)
    node.lookups.clear()
    with rig.manager:
        # the record holds a secret, so the pull manager asks for the pod's credentials, finds
        # no match, and the pull then uses the very same lookup
        result = rig.ensure(IMAGE, "IfNotPresent", pod=make_pod(uid="pod-2"))
        assert result.ok and result.pulled
        assert node.lookups == [KEY]
        node.lookups.clear()
        # preloaded image: no question about credentials, no lookup at all
        rig.service.add(f"{REGISTRY}/team/preloaded:v1")
        assert rig.ensure(f"{REGISTRY}/team/preloaded:v1", "IfNotPresent").ok
    assert node.lookups == []


def test_undecodable_secret_fails_the_request(tmp_path: Path, clock: FakeClock) -> None:
    rig, _ref = rig_with_pulled_image(tmp_path, clock)
    broken = dockerconfig_secret("team-a", "broken", "uid-9", REGISTRY, "u", "p")
    broken = type(broken)(
        broken.uid, broken.namespace, broken.name, broken.type, {".dockerconfigjson": b"{nope"}
    )
    with rig.manager:
        result = rig.ensure(IMAGE, "IfNotPresent", secrets=[broken])
        missing = rig.ensure(f"{REGISTRY}/team/absent:v1", "IfNotPresent", secrets=[broken])
    for r in (result, missing):
        assert r.error == "ErrImagePull" and not r.pulled
        assert "image pull secret team-a/broken" in r.message
    assert rig.requests("ifnotpresent", "true", "unknown") == 1  # the pull manager's error
    assert rig.requests("ifnotpresent", "false", "true") == 2  # the setup's pull and this one
    assert "pull" not in rig.service.calls
