"""The pull manager (spec §5), run against the real file store, with and without the cache."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path

import pytest

from pullwarden.metrics import Metrics
from pullwarden.policy import PolicyEnforcer, VerificationPolicy
from pullwarden.pullmanager import PodCredentials, Protections, PullManager, merge_credentials
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
)
from pullwarden.records._cache import CachedRecordStore
from pullwarden.testing import FakeClock
from tests.support import T0, FakeImage, FakeImageLister

IMAGE = "registry.example/team/app:v1"
KEY = "registry.example/team/app"
REF = "sha256:" + "ab" * 32
ALICE = ImagePullSecret("uid-a", "team-a", "alice-cred", "hash-a")
BOB = ImagePullSecret("uid-b", "team-b", "bob-cred", "hash-b")
BUILDER = ImagePullServiceAccount("sa-uid-1", "team-a", "builder")


def secrets(*s: ImagePullSecret) -> ImagePullCredentials:
    return ImagePullCredentials(kubernetes_secrets=s)


NODE = ImagePullCredentials(node_pods_accessible=True)


class PodCreds:
    """A get_pod_credentials callable that counts its calls."""

    def __init__(
        self,
        secrets: Iterable[ImagePullSecret] = (),
        sa: ImagePullServiceAccount | None = None,
        fail: bool = False,
    ) -> None:
        self.secrets = list(secrets)
        self.sa = sa
        self.fail = fail
        self.calls = 0

    def __call__(self) -> PodCredentials:
        self.calls += 1
        if self.fail:
            raise RuntimeError("secret lookup failed")
        return self.secrets, self.sa


@pytest.fixture(params=[True, False], ids=["cache", "files"])
def cached(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


def record(mapping: dict[str, ImagePullCredentials], ref: str = REF) -> ImagePulledRecord:
    return ImagePulledRecord(ref, T0 - timedelta(days=1), mapping)


def build(
    root: Path,
    *,
    cached: bool = True,
    policy: str = "NeverVerifyPreloadedImages",
    allowlist: Iterable[str] = (),
    records: Iterable[ImagePulledRecord] = (),
    intents: Iterable[str] = (),
    images: Iterable[FakeImage] = (),
    clock: FakeClock | None = None,
    protections: Protections | None = None,
    store: FileRecordStore | None = None,
) -> PullManager:
    store = store or FileRecordStore(root)
    for r in records:
        store.write_pulled_record(r)
    for i in intents:
        store.write_intent(ImagePullIntent(i))
    return PullManager(
        CachedRecordStore(store) if cached else store,
        PolicyEnforcer(policy, allowlist),
        FakeImageLister(list(images)),
        clock=clock or FakeClock(T0),
        metrics=Metrics(),
        protections=protections,
    )


def on_disk(root: Path, ref: str = REF) -> ImagePulledRecord | None:
    return FileRecordStore(root, migrate=False).get_pulled_record(ref)


def checks(pm: PullManager, result: str) -> float:
    value = pm.metrics.value("kubelet_imagemanager_image_mustpull_checks_total", {"result": result})
    return value or 0.0


# -- MustAttemptImagePull: the scenarios of spec §9.1 in our own data ------------------------------


def test_exact_secret_is_allowed_without_write(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached, records=[record({KEY: secrets(ALICE)})])
    before = (tmp_path / "image_manager/pulled").stat().st_mtime_ns
    creds = PodCreds([ALICE])
    assert pm.must_attempt_image_pull(IMAGE, REF, creds) is False
    assert creds.calls == 1
    assert on_disk(tmp_path) == record({KEY: secrets(ALICE)})
    assert (tmp_path / "image_manager/pulled").stat().st_mtime_ns == before
    assert checks(pm, "credentialRecordFound") == 1


def test_recorded_but_pod_has_no_secrets_must_pull(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached, records=[record({KEY: secrets(ALICE)})])
    creds = PodCreds()
    assert pm.must_attempt_image_pull(IMAGE, REF, creds) is True
    assert creds.calls == 1
    assert checks(pm, "mustAuthenticate") == 1


def test_rotated_secret_same_coordinates_is_allowed_and_hash_updated(
    tmp_path: Path, cached: bool, clock: FakeClock
) -> None:
    pm = build(tmp_path, cached=cached, records=[record({KEY: secrets(ALICE)})], clock=clock)
    rotated = ImagePullSecret(ALICE.uid, ALICE.namespace, ALICE.name, "hash-a2")
    decision = pm.decide(IMAGE, REF, PodCreds([rotated]))
    assert decision.must_pull is False
    assert decision.verified_by == "secretCoordinates"
    stored = on_disk(tmp_path)
    assert stored is not None
    assert stored.credential_mapping[KEY].kubernetes_secrets == (rotated,)
    assert stored.last_updated_time == clock.now()


def test_other_secret_with_other_uid_must_pull(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached, records=[record({KEY: secrets(ALICE)})])
    recreated = ImagePullSecret("uid-other", ALICE.namespace, ALICE.name, "hash-other")
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds([recreated])) is True
    assert on_disk(tmp_path) == record({KEY: secrets(ALICE)})


def test_different_secret_must_pull(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached, records=[record({KEY: secrets(ALICE)})])
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds([BOB])) is True


def test_different_secret_same_hash_is_allowed_and_added(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached, records=[record({KEY: secrets(ALICE)})])
    twin = ImagePullSecret("uid-t", "team-t", "copy-of-alice", ALICE.credential_hash)
    decision = pm.decide(IMAGE, REF, PodCreds([twin]))
    assert (decision.must_pull, decision.verified_by, decision.matched_secret) == (
        False,
        "secretHash",
        ALICE,
    )
    stored = on_disk(tmp_path)
    assert stored is not None
    # sorted by namespace: team-a before team-t
    assert stored.credential_mapping[KEY].kubernetes_secrets == (ALICE, twin)


def test_same_secret_recorded_under_other_name_must_pull(tmp_path: Path, cached: bool) -> None:
    pm = build(
        tmp_path, cached=cached, records=[record({"registry.example/other": secrets(ALICE)})]
    )
    creds = PodCreds([ALICE])
    decision = pm.decide(IMAGE, REF, creds)
    assert decision.must_pull is True
    assert decision.result == "mustAuthenticate"
    assert creds.calls == 0
    assert decision.mapping_keys == ("registry.example/other",)


def test_empty_mapping_must_pull(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached, records=[record({})])
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds([ALICE])) is True


def test_empty_credentials_entry_must_pull_without_asking(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached, records=[record({KEY: ImagePullCredentials()})])
    creds = PodCreds([ALICE])
    assert pm.must_attempt_image_pull(IMAGE, REF, creds) is True
    assert creds.calls == 0


def test_no_image_ref_must_pull_without_metric(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached)
    creds = PodCreds()
    assert pm.must_attempt_image_pull(IMAGE, "", creds) is True
    assert creds.calls == 0
    assert all(checks(pm, r) == 0 for r in ("mustAuthenticate", "error"))


@pytest.mark.parametrize(
    ("policy", "must_pull", "result"),
    [
        ("NeverVerifyPreloadedImages", False, "credentialPolicyAllowed"),
        ("AlwaysVerify", True, "mustAuthenticate"),
        ("NeverVerify", False, "credentialPolicyAllowed"),
        ("NeverVerifyAllowlistedImages", True, "mustAuthenticate"),
    ],
)
def test_preloaded_image_by_policy(
    tmp_path: Path, cached: bool, policy: str, must_pull: bool, result: str
) -> None:
    pm = build(tmp_path, cached=cached, policy=policy)
    creds = PodCreds([ALICE])
    decision = pm.decide(IMAGE, REF, creds)
    assert (decision.must_pull, decision.result) == (must_pull, result)
    assert decision.pulled_by_kubelet is False
    assert creds.calls == 0


def test_allowlisted_preloaded_image_is_allowed(tmp_path: Path, cached: bool) -> None:
    pm = build(
        tmp_path,
        cached=cached,
        policy="NeverVerifyAllowlistedImages",
        allowlist=["registry.example/team/*"],
    )
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds()) is False


@pytest.mark.parametrize(
    ("policy", "must_pull"), [("NeverVerifyPreloadedImages", True), ("NeverVerify", False)]
)
def test_only_intent_on_disk(tmp_path: Path, cached: bool, policy: str, must_pull: bool) -> None:
    pm = build(tmp_path, cached=cached, policy=policy, intents=[IMAGE])
    decision = pm.decide(IMAGE, REF, PodCreds([ALICE]))
    assert decision.must_pull is must_pull
    assert decision.pulled_by_kubelet is True


def test_in_flight_intent_counts_as_pulled_by_kubelet(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached)
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds()) is False
    pm.record_pull_intent(IMAGE)
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds()) is True


def test_node_accessible_record(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached, records=[record({KEY: NODE})])
    for creds in (PodCreds(), PodCreds([ALICE]), PodCreds(sa=BUILDER)):
        decision = pm.decide(IMAGE, REF, creds)
        assert (decision.must_pull, decision.verified_by) == (False, "nodeWide")
        assert creds.calls == 0


def test_empty_hash_recorded_other_pod_secret_must_pull(tmp_path: Path, cached: bool) -> None:
    failed = ImagePullSecret("uid-a", "team-a", "alice-cred", "")
    pm = build(tmp_path, cached=cached, records=[record({KEY: secrets(failed)})])
    other = ImagePullSecret("uid-b", "team-b", "bob-cred", "")
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds([other])) is True


def test_empty_hash_recorded_same_pod_secret_allowed(tmp_path: Path, cached: bool) -> None:
    failed = ImagePullSecret("uid-a", "team-a", "alice-cred", "")
    pm = build(tmp_path, cached=cached, records=[record({KEY: secrets(failed)})])
    decision = pm.decide(IMAGE, REF, PodCreds([failed]))
    assert (decision.must_pull, decision.verified_by) == (False, "secretCoordinates")


def test_service_account_exact_allowed(tmp_path: Path, cached: bool) -> None:
    mapping = {KEY: ImagePullCredentials(kubernetes_service_accounts=(BUILDER,))}
    pm = build(tmp_path, cached=cached, records=[record(mapping)])
    decision = pm.decide(IMAGE, REF, PodCreds(sa=BUILDER))
    assert (decision.must_pull, decision.verified_by) == (False, "serviceAccount")


@pytest.mark.parametrize(
    "pod_sa",
    [
        None,
        ImagePullServiceAccount("sa-uid-2", "team-a", "builder"),
        ImagePullServiceAccount("sa-uid-1", "team-b", "builder"),
        ImagePullServiceAccount("sa-uid-1", "team-a", "deployer"),
    ],
    ids=["no-sa", "other-uid", "other-namespace", "other-name"],
)
def test_service_account_mismatch_must_pull(
    tmp_path: Path, cached: bool, pod_sa: ImagePullServiceAccount | None
) -> None:
    mapping = {KEY: ImagePullCredentials(kubernetes_service_accounts=(BUILDER,))}
    pm = build(tmp_path, cached=cached, records=[record(mapping)])
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds(sa=pod_sa)) is True


def test_service_account_under_other_name_must_pull(tmp_path: Path, cached: bool) -> None:
    mapping = {"registry.example/x": ImagePullCredentials(kubernetes_service_accounts=(BUILDER,))}
    pm = build(tmp_path, cached=cached, records=[record(mapping)])
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds(sa=BUILDER)) is True


def test_mixed_record_secret_or_sa_suffices(tmp_path: Path, cached: bool) -> None:
    mixed = ImagePullCredentials(
        kubernetes_secrets=(ALICE,), kubernetes_service_accounts=(BUILDER,)
    )
    pm = build(tmp_path, cached=cached, records=[record({KEY: mixed})])
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds([BOB], sa=BUILDER)) is False
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds([ALICE])) is False
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds([BOB])) is True


def test_pod_credential_error_is_counted_and_raised(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached, records=[record({KEY: secrets(ALICE)})])
    with pytest.raises(RuntimeError, match="secret lookup failed"):
        pm.must_attempt_image_pull(IMAGE, REF, PodCreds(fail=True))
    assert checks(pm, "error") == 1


def test_untrimmable_image_must_pull(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached, records=[record({KEY: secrets(ALICE)})])
    decision = pm.decide("registry.example/team/", REF, PodCreds([ALICE]))
    assert (decision.must_pull, decision.result) == (True, "error")


def test_hundred_secret_limit(tmp_path: Path, cached: bool) -> None:
    many = tuple(ImagePullSecret(f"u{i:03}", "ns", f"s{i:03}", f"h{i:03}") for i in range(100))
    pm = build(tmp_path, cached=cached, records=[record({KEY: secrets(*many)})])
    # a hash match still grants access at the limit, without a write
    twin = ImagePullSecret("u-new", "ns", "twin", "h050")
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds([twin])) is False
    # a coordinate-only match (rotation) no longer does
    rotated = ImagePullSecret("u007", "ns", "s007", "h-rotated")
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds([rotated])) is True
    stored = on_disk(tmp_path)
    assert stored is not None and stored.credential_mapping[KEY].kubernetes_secrets == many


def test_below_limit_rotation_accepted(tmp_path: Path, cached: bool) -> None:
    many = tuple(ImagePullSecret(f"u{i:03}", "ns", f"s{i:03}", f"h{i:03}") for i in range(99))
    pm = build(tmp_path, cached=cached, records=[record({KEY: secrets(*many)})])
    rotated = ImagePullSecret("u007", "ns", "s007", "h-rotated")
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds([rotated])) is False


def test_decide_without_write_never_writes(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached, records=[record({KEY: secrets(ALICE)})])
    twin = ImagePullSecret("uid-t", "team-t", "copy", ALICE.credential_hash)
    decision = pm.decide(IMAGE, REF, PodCreds([twin]), write=False)
    assert decision.must_pull is False
    assert decision.record_update == secrets(twin)
    assert on_disk(tmp_path) == record({KEY: secrets(ALICE)})


# -- fail safe -----------------------------------------------------------------------------------

BROKEN = [
    b"{not json",
    b'{"kind":"ImagePulledRecord","apiVersion":"kubelet.config.k8s.io/v1beta1","imag',
    b'{"kind":"KubeletConfiguration","apiVersion":"kubelet.config.k8s.io/v1beta1"}\n',
    b'{"kind":"ImagePulledRecord","apiVersion":"kubelet.config.k8s.io/v1beta1",'
    b'"lastUpdatedTime":"2025-01-01T00:00:00Z","imageRef":"%s","preloaded":true}\n',
    b'{"kind":"ImagePulledRecord","apiVersion":"kubelet.config.k8s.io/v2",'
    b'"lastUpdatedTime":"2025-01-01T00:00:00Z","imageRef":"%s"}\n',
]


@pytest.mark.parametrize("content", BROKEN, ids=["garbage", "truncated", "foreign", "field", "v2"])
@pytest.mark.parametrize("policy", ["NeverVerifyPreloadedImages", "NeverVerify", "AlwaysVerify"])
def test_bad_record_file_means_must_pull(
    tmp_path: Path, cached: bool, content: bytes, policy: str
) -> None:
    store = FileRecordStore(tmp_path)
    path = Path(store.record_path(REF))
    path.write_bytes(content.replace(b"%s", REF.encode()))
    pm = build(tmp_path, cached=cached, policy=policy)
    creds = PodCreds([ALICE])
    decision = pm.decide(IMAGE, REF, creds)
    assert (decision.must_pull, decision.result) == (True, "error")
    assert creds.calls == 0
    # a later successful pull replaces the broken file
    pm.record_pull_intent(IMAGE)
    pm.record_image_pulled(IMAGE, REF, secrets(ALICE))
    assert on_disk(tmp_path) is not None
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds([ALICE])) is False


def test_unreadable_intent_means_must_pull(tmp_path: Path, cached: bool) -> None:
    store = FileRecordStore(tmp_path)
    store.write_intent(ImagePullIntent(IMAGE))
    Path(store.intent_path(IMAGE)).write_bytes(b"\x00garbage")
    pm = build(tmp_path, cached=cached, policy="NeverVerify")
    decision = pm.decide(IMAGE, REF, PodCreds())
    assert (decision.must_pull, decision.result) == (True, "error")


# -- intents and records (§5.1–5.3, §5.5) --------------------------------------------------------


def test_intent_counting(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached)
    store = FileRecordStore(tmp_path, migrate=False)
    pm.record_pull_intent(IMAGE)
    pm.record_pull_intent(IMAGE)
    assert pm.intents_in_flight(IMAGE) == 2
    pm.record_image_pull_failed(IMAGE)
    assert store.intent_exists(IMAGE)
    pm.record_image_pulled(IMAGE, REF, secrets(ALICE))
    assert not store.intent_exists(IMAGE)
    assert pm.intents_in_flight(IMAGE) == 0


def test_record_pulled_new_and_merge(tmp_path: Path, cached: bool, clock: FakeClock) -> None:
    pm = build(tmp_path, cached=cached, clock=clock)
    pm.record_pull_intent(IMAGE)
    pm.record_image_pulled(IMAGE, REF, secrets(BOB))
    assert on_disk(tmp_path) == ImagePulledRecord(REF, T0, {KEY: secrets(BOB)})
    clock.advance(60)
    pm.record_pull_intent(IMAGE)
    pm.record_image_pulled(IMAGE, REF, secrets(ALICE))
    assert on_disk(tmp_path) == ImagePulledRecord(REF, clock.now(), {KEY: secrets(ALICE, BOB)})
    clock.advance(60)
    pm.record_pull_intent(IMAGE)
    pm.record_image_pulled(IMAGE, REF, secrets(ALICE))
    stored = on_disk(tmp_path)
    assert stored is not None and stored.last_updated_time == T0 + timedelta(seconds=60)


def test_record_pulled_familiar_names(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached)
    pm.record_pull_intent("testing@sha256:" + "f2" * 32)
    pm.record_image_pulled("testing@sha256:" + "f2" * 32, REF, NODE)
    pm.record_pull_intent("secretorg/myimage:customtag")
    pm.record_image_pulled("secretorg/myimage:customtag", REF, secrets(ALICE))
    stored = on_disk(tmp_path)
    assert stored is not None
    assert set(stored.credential_mapping) == {"testing", "secretorg/myimage"}


def test_record_pulled_failure_keeps_intent(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached)
    pm.record_pull_intent(IMAGE)
    pulled = tmp_path / "image_manager" / "pulled"
    os.chmod(pulled, 0o500)
    try:
        if os.access(pulled, os.W_OK):  # root ignores directory modes
            pytest.skip("cannot make the directory read-only as this user")
        pm.record_image_pulled(IMAGE, REF, secrets(ALICE))
    finally:
        os.chmod(pulled, 0o700)
    assert pm.intents_in_flight(IMAGE) == 1
    assert FileRecordStore(tmp_path, migrate=False).intent_exists(IMAGE)


def test_record_write_failure_keeps_intent_with_failing_store(tmp_path: Path) -> None:
    class Failing(FileRecordStore):
        def write_pulled_record(self, record: ImagePulledRecord) -> None:
            from pullwarden.errors import RecordWriteError

            raise RecordWriteError("disk full")

    pm = PullManager(Failing(tmp_path), PolicyEnforcer(), None, metrics=Metrics())
    pm.record_pull_intent(IMAGE)
    pm.record_image_pulled(IMAGE, REF, secrets(ALICE))
    assert pm.intents_in_flight(IMAGE) == 1
    assert FileRecordStore(tmp_path, migrate=False).intent_exists(IMAGE)


# -- merging (§5.5, Test_pulledRecordMergeNewCreds in our own data) ------------------------------

SA2 = ImagePullServiceAccount("sa-uid-0", "team-a", "aaa")


@pytest.mark.parametrize(
    ("existing", "new", "expected"),
    [
        (None, secrets(ALICE), secrets(ALICE)),
        (secrets(ALICE), secrets(ALICE), None),
        (secrets(BOB), secrets(ALICE), secrets(ALICE, BOB)),
        (secrets(ALICE, BOB), NODE, NODE),
        (
            secrets(ALICE),
            secrets(ImagePullSecret(ALICE.uid, ALICE.namespace, ALICE.name, "new")),
            secrets(ImagePullSecret(ALICE.uid, ALICE.namespace, ALICE.name, "new")),
        ),
        (
            secrets(ALICE),
            secrets(ImagePullSecret("x", "a-first", "y", ALICE.credential_hash)),
            secrets(ImagePullSecret("x", "a-first", "y", ALICE.credential_hash), ALICE),
        ),
        (
            None,
            ImagePullCredentials(kubernetes_service_accounts=(BUILDER,)),
            ImagePullCredentials(kubernetes_service_accounts=(BUILDER,)),
        ),
        (
            ImagePullCredentials(kubernetes_service_accounts=(BUILDER,)),
            ImagePullCredentials(kubernetes_service_accounts=(SA2,)),
            ImagePullCredentials(kubernetes_service_accounts=(SA2, BUILDER)),
        ),
        (
            ImagePullCredentials(kubernetes_service_accounts=(BUILDER,)),
            ImagePullCredentials(kubernetes_service_accounts=(BUILDER,)),
            None,
        ),
        (
            secrets(ALICE),
            ImagePullCredentials(kubernetes_service_accounts=(BUILDER,)),
            ImagePullCredentials(
                kubernetes_secrets=(ALICE,), kubernetes_service_accounts=(BUILDER,)
            ),
        ),
        (
            ImagePullCredentials(kubernetes_service_accounts=(BUILDER,)),
            secrets(ALICE),
            ImagePullCredentials(
                kubernetes_secrets=(ALICE,), kubernetes_service_accounts=(BUILDER,)
            ),
        ),
        (
            ImagePullCredentials(
                kubernetes_secrets=(ALICE,), kubernetes_service_accounts=(BUILDER,)
            ),
            NODE,
            NODE,
        ),
        (NODE, secrets(ALICE), None),
        (NODE, ImagePullCredentials(kubernetes_service_accounts=(BUILDER,)), None),
        (secrets(ALICE), None, None),
        (secrets(ALICE), ImagePullCredentials(), None),
        (None, secrets(BOB, ALICE), secrets(BOB, ALICE)),  # a new key is stored as given
        (
            ImagePullCredentials(kubernetes_service_accounts=(BUILDER,)),
            ImagePullCredentials(
                kubernetes_service_accounts=(
                    ImagePullServiceAccount("sa-uid-0", "team-a", "builder"),
                )
            ),
            ImagePullCredentials(
                kubernetes_service_accounts=(
                    ImagePullServiceAccount("sa-uid-0", "team-a", "builder"),
                    BUILDER,
                )
            ),
        ),
    ],
)
def test_merge_credentials(
    existing: ImagePullCredentials | None,
    new: ImagePullCredentials | None,
    expected: ImagePullCredentials | None,
) -> None:
    assert merge_credentials(existing, new) == expected


def test_new_record_with_nil_credentials_has_empty_mapping(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached)
    pm.record_pull_intent(IMAGE)
    pm.record_image_pulled(IMAGE, REF, None)
    assert on_disk(tmp_path) == ImagePulledRecord(REF, T0, {})


# -- start-up housekeeping (§5.7) and pruning (§5.6) ---------------------------------------------


def test_initialize_turns_matching_intents_into_records(tmp_path: Path, cached: bool) -> None:
    digest_name = "registry.example/team/app@sha256:" + "cd" * 32
    images = [
        FakeImage(REF, repo_tags=[IMAGE]),
        FakeImage("sha256:" + "ef" * 32, repo_digests=[digest_name]),
    ]
    pm = build(tmp_path, cached=cached, intents=[IMAGE, digest_name, "nginx"], images=images)
    store = FileRecordStore(tmp_path, migrate=False)
    assert [i.image for i in store.list_intents().items] == ["nginx"]
    assert on_disk(tmp_path) == ImagePulledRecord(REF, T0, {})
    assert on_disk(tmp_path, "sha256:" + "ef" * 32) == ImagePulledRecord(
        "sha256:" + "ef" * 32, T0, {}
    )
    # the lingering familiar-name intent keeps "nginx" counted as pulled by the kubelet
    assert pm.decide("nginx", "sha256:" + "99" * 32, PodCreds()).pulled_by_kubelet is True


def test_initialize_leaves_existing_record_unchanged(tmp_path: Path, cached: bool) -> None:
    existing = record({KEY: secrets(ALICE)})
    build(
        tmp_path,
        cached=cached,
        records=[existing],
        intents=[IMAGE],
        images=[FakeImage(REF, repo_tags=[IMAGE])],
    )
    assert on_disk(tmp_path) == existing
    assert FileRecordStore(tmp_path, migrate=False).list_intents().items == []


def test_initialize_survives_runtime_failure(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    store.write_intent(ImagePullIntent(IMAGE))
    lister = FakeImageLister([FakeImage(REF, repo_tags=[IMAGE])], fail=True)
    PullManager(store, PolicyEnforcer(), lister, metrics=Metrics())
    assert lister.calls == 1
    assert store.intent_exists(IMAGE)


def test_initialize_without_intents_does_not_list_images(tmp_path: Path) -> None:
    lister = FakeImageLister()
    PullManager(FileRecordStore(tmp_path), PolicyEnforcer(), lister, metrics=Metrics())
    assert lister.calls == 0


def test_prune(tmp_path: Path, cached: bool, clock: FakeClock) -> None:
    refs = [f"sha256:{i:064x}" for i in range(4)]
    old = [ImagePulledRecord(r, T0 - timedelta(hours=1), {}) for r in refs[:3]]
    fresh = ImagePulledRecord(refs[3], T0 + timedelta(hours=1), {})
    pm = build(tmp_path, cached=cached, records=[*old, fresh], clock=clock)
    removed = pm.prune_unknown_records([refs[0]], until=T0)
    assert sorted(removed) == sorted(refs[1:3])
    left = FileRecordStore(tmp_path, migrate=False).list_pulled_records().items
    assert sorted(r.image_ref for r in left) == [refs[0], refs[3]]
    assert pm.prune_unknown_records([refs[3]], until=T0 + timedelta(hours=2)) == [refs[0]]


def test_prune_everything_on_empty_list(tmp_path: Path, cached: bool) -> None:
    refs = [f"sha256:{i:064x}" for i in range(3)]
    pm = build(tmp_path, cached=cached, records=[ImagePulledRecord(r, T0, {}) for r in refs])
    assert sorted(pm.prune_unknown_records([], until=T0 + timedelta(seconds=1))) == refs
    assert FileRecordStore(tmp_path, migrate=False).list_pulled_records().items == []
    assert pm.must_attempt_image_pull(IMAGE, refs[0], PodCreds()) is False  # preloaded again


# -- policy wiring and concurrency ---------------------------------------------------------------


def test_policy_enum_accepted(tmp_path: Path) -> None:
    pm = PullManager(
        FileRecordStore(tmp_path),
        PolicyEnforcer(VerificationPolicy.ALWAYS_VERIFY),
        None,
        metrics=Metrics(),
    )
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds()) is True


def test_concurrent_pulls_keep_a_consistent_record(tmp_path: Path, cached: bool) -> None:
    pm = build(tmp_path, cached=cached)
    pod_secrets = [ImagePullSecret(f"u{i}", "ns", f"s{i}", f"h{i}") for i in range(40)]

    def worker(chunk: list[ImagePullSecret]) -> None:
        for s in chunk:
            pm.record_pull_intent(IMAGE)
            pm.record_image_pulled(IMAGE, REF, secrets(s))

    threads = [threading.Thread(target=worker, args=(pod_secrets[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    stored = on_disk(tmp_path)
    assert stored is not None
    assert set(stored.credential_mapping[KEY].kubernetes_secrets) == set(pod_secrets)
    assert pm.intents_in_flight(IMAGE) == 0
    assert not FileRecordStore(tmp_path, migrate=False).intent_exists(IMAGE)


def test_gauges_come_from_the_store_protocol(tmp_path: Path) -> None:
    """Every store declares its gauges; the cache adds its usage to the files' counts."""
    files = FileRecordStore(tmp_path)
    cached = PullManager(
        CachedRecordStore(files, intents_size=10), PolicyEnforcer(), None, metrics=Metrics()
    )
    cached.record_pull_intent(IMAGE)
    value = cached.metrics.value
    assert value("kubelet_imagemanager_ondisk_pullintents", {}) == 1
    assert value("kubelet_imagemanager_inmemory_pullintents_usage_percent", {}) == 10
    plain = PullManager(FileRecordStore(tmp_path / "plain"), PolicyEnforcer(), None)
    plain.record_pull_intent(IMAGE)
    assert plain.metrics.value("kubelet_imagemanager_ondisk_pullintents", {}) == 1
    assert plain.metrics.value("kubelet_imagemanager_inmemory_pullintents_usage_percent", {}) == 0
