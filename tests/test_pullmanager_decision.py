"""The ``Decision`` that ``PullManager.decide`` returns: every field per step, worked out lazily.

The node calls ``decide()`` on every container start and reads only ``must_pull`` and who
verified; the sentences are for operators.  These tests pin every field's value (so rendering
them on demand cannot change one), the value semantics a frozen dataclass gave, that ``decide()``
itself renders no sentence, the lock order of the check (spec §7.2) and that checking many
distinct keys leaves nothing behind per key.  Timing lives in ``bench/must_attempt.py``.
"""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

import pullwarden._locks as locks_module
from pullwarden._locks import StripedLocks
from pullwarden.policy import PolicyEnforcer
from pullwarden.pullmanager import Decision, PullManager, Step, VerifiedBy
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullSecret,
)
from pullwarden.records._cache import CachedRecordStore
from tests.support import T0, unshared
from tests.test_pullmanager import (
    ALICE,
    BOB,
    BUILDER,
    IMAGE,
    KEY,
    NODE,
    REF,
    PodCreds,
    build,
    record,
    secrets,
)

PRELOADED = "NeverVerifyPreloadedImages"
PULLED = f"policy {PRELOADED}: the image was pulled by the kubelet, so credentials must be verified"
ALWAYS = "policy AlwaysVerify: credentials are always verified for images already on the node"


FIELDS = (
    "must_pull",
    "result",
    "reason",
    "step",
    "image",
    "image_ref",
    "policy",
    "policy_reason",
    "pulled_by_kubelet",
    "record_found",
    "mapping_key",
    "mapping_keys",
    "matched_secret",
    "pod_secret",
    "matched_service_account",
    "verified_by",
    "credentials_requested",
    "record_update",
    "error",
    "intent_image",
)


def fields(d: Decision) -> dict[str, object]:
    return {name: getattr(d, name) for name in FIELDS}


def test_the_fields_in_order() -> None:
    # the order of repr and pattern matching, as when Decision was a dataclass
    assert Decision.__match_args__ == FIELDS


def test_secret_hash_match_every_field(tmp_path: Path) -> None:
    pm = build(tmp_path, records=[record({KEY: secrets(ALICE), "other.example/x": NODE})])
    d = pm.decide(IMAGE, REF, PodCreds([ALICE]))
    assert fields(d) == {
        "must_pull": False,
        "result": "credentialRecordFound",
        "reason": "pod secret team-a/alice-cred matches the recorded secret team-a/alice-cred by "
        "credential hash",
        "step": Step.SECRET,
        "image": IMAGE,
        "image_ref": REF,
        "policy": PRELOADED,
        "policy_reason": PULLED,
        "pulled_by_kubelet": True,
        "record_found": True,
        "mapping_key": KEY,
        "mapping_keys": ("other.example/x", KEY),  # the record's order
        "matched_secret": ALICE,
        "pod_secret": ALICE,
        "matched_service_account": None,
        "verified_by": VerifiedBy.SECRET_HASH,
        "credentials_requested": True,
        "record_update": None,
        "error": "",
        "intent_image": "",
    }
    assert type(d.verified_by) is VerifiedBy and type(d.step) is Step


def test_rotated_secret_every_field(tmp_path: Path) -> None:
    pm = build(tmp_path, records=[record({KEY: secrets(ALICE)})])
    rotated = ImagePullSecret(ALICE.uid, ALICE.namespace, ALICE.name, "hash-a2")
    d = pm.decide(IMAGE, REF, PodCreds([BOB, rotated]), write=False)
    assert fields(d) == {
        "must_pull": False,
        "result": "credentialRecordFound",
        "reason": "pod secret team-a/alice-cred matches the recorded secret team-a/alice-cred by "
        "coordinates (the secret was rotated)",
        "step": Step.SECRET,
        "image": IMAGE,
        "image_ref": REF,
        "policy": PRELOADED,
        "policy_reason": PULLED,
        "pulled_by_kubelet": True,
        "record_found": True,
        "mapping_key": KEY,
        "mapping_keys": (KEY,),
        "matched_secret": ALICE,
        "pod_secret": rotated,
        "matched_service_account": None,
        "verified_by": VerifiedBy.SECRET_COORDINATES,
        "credentials_requested": True,
        "record_update": secrets(rotated),
        "error": "",
        "intent_image": "",
    }


def test_no_image_ref_every_field(tmp_path: Path) -> None:
    creds = PodCreds([ALICE])
    d = build(tmp_path).decide(IMAGE, "", creds)
    assert fields(d) == {
        "must_pull": True,
        "result": None,
        "reason": "the image is not present on the node (no imageRef)",
        "step": Step.NO_REF,
        "image": IMAGE,
        "image_ref": "",
        "policy": PRELOADED,
        "policy_reason": "",
        "pulled_by_kubelet": None,
        "record_found": False,
        "mapping_key": "",
        "mapping_keys": (),
        "matched_secret": None,
        "pod_secret": None,
        "matched_service_account": None,
        "verified_by": VerifiedBy.NONE,
        "credentials_requested": False,
        "record_update": None,
        "error": "",
        "intent_image": "",
    }
    assert creds.calls == 0


def test_preloaded_image_allowed_by_policy(tmp_path: Path) -> None:
    d = build(tmp_path).decide(IMAGE, REF, PodCreds())
    preloaded = (
        f"policy {PRELOADED}: the image was not pulled by the kubelet (it is preloaded), so "
        "credentials need not be verified"
    )
    assert (d.must_pull, d.result, d.step, d.verified_by) == (
        False,
        "credentialPolicyAllowed",
        Step.POLICY,
        VerifiedBy.PRELOADED,
    )
    assert d.reason == d.policy_reason == preloaded
    assert (d.pulled_by_kubelet, d.record_found, d.mapping_keys) == (False, False, ())


@pytest.mark.parametrize(
    ("mapping", "intents", "step", "reason"),
    [
        (None, (), Step.NO_RECORD, "nothing is recorded for this image (it counts as preloaded)"),
        (
            None,
            (IMAGE,),
            Step.NO_RECORD,
            "a pull of this image is in flight or was interrupted (pull intent) and no "
            "credentials are recorded for it yet",
        ),
        (
            {"registry.example/other": secrets(ALICE)},
            (),
            Step.NO_NAME,
            f"the record of {REF} has no credentials for the name 'registry.example/team/app'",
        ),
        (
            {KEY: ImagePullCredentials()},
            (),
            Step.NO_CREDENTIALS,
            "the record holds no credentials for 'registry.example/team/app'",
        ),
        (
            {KEY: secrets(ALICE)},
            (),
            Step.NO_MATCH,
            "none of the pod's credentials is recorded for 'registry.example/team/app'; a pull "
            "(manifest only) must prove they can access the image",
        ),
    ],
    ids=["preloaded", "intent", "no-name", "no-credentials", "no-match"],
)
def test_must_pull_reasons(
    tmp_path: Path,
    mapping: dict[str, ImagePullCredentials] | None,
    intents: tuple[str, ...],
    step: Step,
    reason: str,
) -> None:
    records = [] if mapping is None else [record(mapping)]
    pm = build(tmp_path, policy="AlwaysVerify", records=records, intents=intents)
    d = pm.decide(IMAGE, REF, PodCreds([BOB]))
    assert (d.must_pull, d.result, d.step, d.verified_by) == (
        True,
        "mustAuthenticate",
        step,
        VerifiedBy.NONE,
    )
    assert (d.reason, d.policy, d.policy_reason) == (reason, "AlwaysVerify", ALWAYS)
    assert d.record_found is (mapping is not None)
    assert d.mapping_key == ("" if mapping is None else KEY)
    assert d.mapping_keys == tuple(mapping or ())
    assert d.credentials_requested is (step is Step.NO_MATCH)


def test_node_wide_and_service_account_reasons(tmp_path: Path) -> None:
    pm = build(tmp_path, records=[record({KEY: NODE})])
    d = pm.decide(IMAGE, REF, PodCreds())
    assert (d.must_pull, d.step, d.verified_by, d.credentials_requested) == (
        False,
        Step.NODE_WIDE,
        VerifiedBy.NODE_WIDE,
        False,
    )
    assert d.reason == (
        "the record says 'registry.example/team/app' was pulled with node-wide or anonymous access"
    )

    by_sa = ImagePullCredentials(kubernetes_service_accounts=(BUILDER,))
    pm = build(tmp_path / "sa", records=[record({KEY: by_sa})])
    d = pm.decide(IMAGE, REF, PodCreds([ALICE], sa=BUILDER))
    assert (d.must_pull, d.step, d.verified_by, d.matched_service_account) == (
        False,
        Step.SERVICE_ACCOUNT,
        VerifiedBy.SERVICE_ACCOUNT,
        BUILDER,
    )
    assert (d.matched_secret, d.pod_secret) == (None, None)
    assert d.reason == "the pod's service account team-a/builder pulled it"


def test_errors_are_in_words(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    Path(store.record_path(REF)).write_bytes(b"{not json")
    d = build(tmp_path).decide(IMAGE, REF, PodCreds())
    assert (d.must_pull, d.result, d.step, d.record_found) == (
        True,
        "error",
        Step.READ_ERROR,
        False,
    )
    assert d.error
    assert (
        d.reason
        == f"the pull records could not be read, so credentials must be verified: {d.error}"
    )
    assert (d.pulled_by_kubelet, d.policy_reason) == (None, "")

    pm = build(tmp_path / "bad-name", records=[record({KEY: secrets(ALICE)})])
    d = pm.decide("registry.example/team/", REF, PodCreds([ALICE]))
    assert (d.must_pull, d.result, d.step, d.mapping_key) == (True, "error", Step.BAD_NAME, "")
    assert d.error
    assert d.reason == f"the image name cannot be trimmed: {d.error}"


def test_value_semantics_of_a_frozen_dataclass(tmp_path: Path) -> None:
    pm = build(tmp_path, records=[record({KEY: secrets(ALICE)})])
    a = pm.decide(IMAGE, REF, PodCreds([ALICE]))
    b = pm.decide(IMAGE, REF, PodCreds([ALICE]))
    other = pm.decide(IMAGE, REF, PodCreds([BOB]))
    assert a is not b
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1
    assert a != other
    assert a != "not a decision"
    assert repr(a).startswith("Decision(must_pull=False, result='credentialRecordFound', reason=")
    assert repr(a).endswith(", error='', intent_image='')")
    with pytest.raises(AttributeError):
        a.must_pull = True  # type: ignore[misc]
    match a:
        case Decision(must_pull, result):
            assert (must_pull, result) == (False, "credentialRecordFound")


class CountingEnforcer(PolicyEnforcer):
    __slots__ = ("explained",)

    def __init__(self, policy: str) -> None:
        super().__init__(policy)
        self.explained = 0

    def explain(self, image: str, pulled_by_kubelet: bool) -> str:
        self.explained += 1
        return super().explain(image, pulled_by_kubelet)


def test_decide_renders_no_sentence_until_one_is_read(tmp_path: Path) -> None:
    enforcer = CountingEnforcer("AlwaysVerify")
    store = CachedRecordStore(FileRecordStore(tmp_path))
    store.write_pulled_record(record({KEY: secrets(ALICE)}))
    pm = PullManager(store, enforcer, None)
    d = pm.decide(IMAGE, REF, PodCreds([ALICE]))
    assert (d.must_pull, d.verified_by, d.pod_secret) == (False, VerifiedBy.SECRET_HASH, ALICE)
    assert enforcer.explained == 0
    assert d.policy_reason == ALWAYS
    assert enforcer.explained == 1


def test_decide_agrees_with_must_attempt(tmp_path: Path) -> None:
    mapping = {KEY: secrets(ALICE)}
    for i, creds in enumerate([[ALICE], [BOB], []]):
        pm = build(tmp_path / str(i), policy="AlwaysVerify", records=[record(mapping)])
        want = pm.must_attempt_image_pull(IMAGE, REF, PodCreds(creds))
        assert pm.decide(IMAGE, REF, PodCreds(creds)).must_pull is want


# -- locks (spec §7.2) ---------------------------------------------------------------------------


class Trace:
    def __init__(self) -> None:
        self.events: list[tuple[str, str, tuple[str, ...]]] = []  # (set, key, sets held)
        self.held: list[str] = []


class TracedLocks:
    """Wraps one of the manager's lock sets and notes every acquisition with what was held."""

    def __init__(self, name: str, inner: StripedLocks, trace: Trace) -> None:
        self.name, self.inner, self.trace = name, inner, trace

    @contextmanager
    def lock(self, key: str) -> Iterator[None]:
        self.trace.events.append((self.name, key, tuple(self.trace.held)))
        with self.inner.lock(key):
            self.trace.held.append(self.name)
            try:
                yield
            finally:
                self.trace.held.pop()

    @contextmanager
    def all(self) -> Iterator[None]:
        self.trace.events.append((self.name, "*", tuple(self.trace.held)))
        with self.inner.all():
            self.trace.held.append(self.name)
            try:
                yield
            finally:
                self.trace.held.pop()


def traced(pm: PullManager, monkeypatch: pytest.MonkeyPatch) -> Trace:
    trace = Trace()
    managed: Any = pm
    monkeypatch.setattr(pm, "_pulled_locks", TracedLocks("pulled", managed._pulled_locks, trace))
    monkeypatch.setattr(pm, "_intent_locks", TracedLocks("intent", managed._intent_locks, trace))
    return trace


def test_check_takes_the_pulled_lock_then_the_intent_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pm = build(tmp_path, records=[record({KEY: secrets(ALICE)})])
    trace = traced(pm, monkeypatch)
    pm.decide(IMAGE, REF, PodCreds([ALICE]))
    pm.must_attempt_image_pull(IMAGE, REF, PodCreds([ALICE]))
    nested = [("pulled", REF, ()), ("intent", IMAGE, ("pulled",))]
    assert trace.events == nested * 2


def test_no_operation_takes_a_pulled_lock_under_an_intent_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pm = build(tmp_path, policy="AlwaysVerify")
    trace = traced(pm, monkeypatch)
    other = "registry.example/team/other:v2"
    pm.record_pull_intent(IMAGE)
    pm.record_pull_intent(other)
    pm.decide(other, REF, PodCreds())
    pm.record_image_pulled(IMAGE, REF, secrets(ALICE))
    pm.must_attempt_image_pull(IMAGE, REF, PodCreds([BOB]))
    pm.decide(IMAGE, REF, PodCreds([ImagePullSecret(ALICE.uid, "team-a", "alice-cred", "new")]))
    pm.record_image_pull_failed(other)
    pm.prune_unknown_records([], T0)
    kinds = {name for name, _, _ in trace.events}
    assert kinds == {"pulled", "intent"}
    inversions = [e for e in trace.events if e[0] == "pulled" and "intent" in e[2]]
    assert inversions == []
    assert all(held in ((), ("pulled",)) for _, _, held in trace.events)


def test_many_distinct_keys_leave_nothing_behind_in_the_locks(tmp_path: Path) -> None:
    # Structural, not timed: checking thousands of distinct image/imageRef pairs through
    # decide() keeps nothing per key in the lock module (a memo there, like the 65,536 FNV-1
    # hashes it once kept, would show as memory allocated from it) nor in the manager.
    files = FileRecordStore(tmp_path)
    checks = []
    for i in range(3000):
        ref, name = f"sha256:{i:064x}", f"registry.example/team/app{i}"
        files.write_pulled_record(ImagePulledRecord(ref, T0, {name: secrets(ALICE)}))
        checks.append((f"{name}:v1", ref))
    pm = PullManager(CachedRecordStore(files), PolicyEnforcer("AlwaysVerify"), None)
    tracemalloc.start()
    try:
        for image, ref in checks:
            assert pm.decide(image, ref, PodCreds([ALICE])).must_pull is False
            assert pm.must_attempt_image_pull(image, ref, PodCreds([ALICE])) is False
        snapshot = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    kept = snapshot.filter_traces([tracemalloc.Filter(True, locks_module.__file__)])
    assert sum(stat.size for stat in kept.statistics("filename")) == 0
    managed: Any = pm
    assert (managed._intent_counts, managed._evidence, managed._inherited) == ({}, {}, {})


def test_concurrent_checks_of_one_key_agree(tmp_path: Path) -> None:
    pm = build(tmp_path, records=[record({KEY: secrets(ALICE)})])
    answers: list[bool] = []

    def work() -> None:
        for _ in range(200):
            answers.append(pm.decide(IMAGE, REF, PodCreds([ALICE])).must_pull)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == [False] * 800


# -- the cache's record hits (RecordHit) decide as the records do -------------------------------


def copy_of(s: ImagePullSecret) -> ImagePullSecret:
    """An equal secret none of whose strings is the same object."""
    return ImagePullSecret(
        unshared(s.uid), unshared(s.namespace), unshared(s.name), unshared(s.credential_hash)
    )


SCENARIOS: list[tuple[str, ImagePulledRecord | None, list[ImagePullSecret]]] = [
    ("hash and coordinates", record({KEY: secrets(ALICE)}), [copy_of(ALICE)]),
    (
        "hash, other coordinates",
        record({KEY: secrets(ALICE)}),
        [ImagePullSecret("uid-x", "team-a", "alice-cred", ALICE.credential_hash)],
    ),
    (
        "coordinates, rotated hash",
        record({KEY: secrets(ALICE)}),
        [ImagePullSecret(ALICE.uid, ALICE.namespace, ALICE.name, "hash-new")],
    ),
    ("nothing in common", record({KEY: secrets(ALICE)}), [BOB]),
    ("one field off", record({KEY: secrets(ALICE)}), [ImagePullSecret("uid-a", "team-a", "x", "")]),
    (
        "empty hashes, same coordinates",
        record({KEY: secrets(ImagePullSecret(ALICE.uid, ALICE.namespace, ALICE.name))}),
        [copy_of(ImagePullSecret(ALICE.uid, ALICE.namespace, ALICE.name))],
    ),
    ("no name", record({"registry.example/team/other": secrets(ALICE)}), [ALICE]),
    ("node-wide", record({KEY: NODE}), []),
    ("nothing recorded", record({KEY: ImagePullCredentials()}), [ALICE]),
    ("no record", None, [ALICE]),
]


@pytest.mark.parametrize(("label", "rec", "pod"), SCENARIOS, ids=[s[0] for s in SCENARIOS])
def test_cache_and_files_decide_alike(
    tmp_path: Path, label: str, rec: ImagePulledRecord | None, pod: list[ImagePullSecret]
) -> None:
    records = [] if rec is None else [rec]
    answers = []
    for cached in (True, False):
        pm = build(tmp_path / str(cached), cached=cached, policy="AlwaysVerify", records=records)
        # Another spelling of the image first, so that the cache's hit is remade for IMAGE.
        pm.decide("registry.example/team/other:v1", REF, PodCreds(pod), write=False)
        answers.append([pm.decide(IMAGE, REF, PodCreds(pod), write=False) for _ in range(2)])
    (cache_first, cache_again), (files_first, files_again) = answers
    assert cache_first == files_first == cache_again == files_again, label


def test_a_hit_serves_an_equal_image_and_not_another(tmp_path: Path) -> None:
    other_name = "registry.example/team/other"
    pm = build(
        tmp_path,
        policy="AlwaysVerify",
        records=[record({KEY: secrets(ALICE), other_name: secrets(BOB)})],
    )
    assert not pm.decide(IMAGE, REF, PodCreds([ALICE])).must_pull
    # equal strings that are other objects match as the same ones do: hash and coordinates
    again = pm.decide(unshared(IMAGE), REF, PodCreds([copy_of(ALICE)]), write=False)
    assert (again.must_pull, again.mapping_key, again.step) == (False, KEY, Step.SECRET)
    assert (again.verified_by, again.record_update) == (VerifiedBy.SECRET_HASH, None)
    moved = ImagePullSecret("uid-x", "team-a", "alice-cred", unshared(ALICE.credential_hash))
    by_hash = pm.decide(IMAGE, REF, PodCreds([moved]), write=False)
    assert (by_hash.verified_by, by_hash.record_update) == (VerifiedBy.SECRET_HASH, secrets(moved))
    rotated = ImagePullSecret(unshared(ALICE.uid), "team-a", unshared(ALICE.name), "hash-new")
    by_coords = pm.decide(IMAGE, REF, PodCreds([rotated]), write=False)
    assert (by_coords.verified_by, by_coords.record_update) == (
        VerifiedBy.SECRET_COORDINATES,
        secrets(rotated),
    )
    # and strings that differ do not
    for off in (
        ImagePullSecret("uid-y", "team-a", "alice-cred", "hash-y"),
        ImagePullSecret(ALICE.uid, "team-b", ALICE.name, "hash-y"),
        ImagePullSecret(ALICE.uid, ALICE.namespace, "alice-crex", "hash-y"),
    ):
        assert pm.decide(IMAGE, REF, PodCreds([off]), write=False).step is Step.NO_MATCH
    # the same imageRef under another name: that name's entry, not the one kept for IMAGE
    other = pm.decide(other_name + ":v1", REF, PodCreds([ALICE]))
    assert (other.must_pull, other.mapping_key, other.step) == (True, other_name, Step.NO_MATCH)
    bob = pm.decide(other_name + ":v2", REF, PodCreds([BOB]))
    assert (bob.must_pull, bob.mapping_key, bob.matched_secret) == (False, other_name, BOB)
    assert pm.decide(IMAGE, REF, PodCreds([BOB])).must_pull


def test_a_hit_follows_the_record_it_was_made_from(tmp_path: Path) -> None:
    pm = build(tmp_path, policy="AlwaysVerify", records=[record({KEY: secrets(ALICE)})])
    assert pm.decide(IMAGE, REF, PodCreds([BOB])).must_pull
    pm.record_image_pulled(IMAGE, REF, secrets(BOB))  # the record learns Bob
    assert not pm.decide(IMAGE, REF, PodCreds([BOB])).must_pull
    pm.prune_unknown_records([], T0 + timedelta(seconds=1))  # the record goes
    gone = pm.decide(IMAGE, REF, PodCreds([BOB]))
    assert (gone.must_pull, gone.step, gone.record_found) == (True, Step.NO_RECORD, False)


class ForgetfulCache(CachedRecordStore):
    """A cache subclass that reads no record: the manager must read it as it reads."""

    def get_pulled_record(self, image_ref: str) -> ImagePulledRecord | None:
        return None


def test_a_store_is_read_as_it_reads_even_when_swapped(tmp_path: Path) -> None:
    pm = build(tmp_path, policy="AlwaysVerify", records=[record({KEY: secrets(ALICE)})])
    assert not pm.decide(IMAGE, REF, PodCreds([ALICE])).must_pull  # through the cache's hits
    pm.store = ForgetfulCache(FileRecordStore(tmp_path))
    forgot = pm.decide(IMAGE, REF, PodCreds([ALICE]))
    assert (forgot.must_pull, forgot.step) == (True, Step.NO_RECORD)
    pm.store = CachedRecordStore(FileRecordStore(tmp_path))
    assert not pm.decide(IMAGE, REF, PodCreds([ALICE])).must_pull
