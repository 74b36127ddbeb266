"""Which credentials a pull tries, in which order, and what a success records (spec §2.5)."""

from __future__ import annotations

from pathlib import Path

from pullwarden.credentials import SecretSource, ServiceAccountSource, TrackedCredential
from pullwarden.errors import RegistryUnavailableError, UnauthorizedError
from pullwarden.imagemanager import CredentialLookup, credential_ref, pull_with_credentials
from pullwarden.records import ImagePullCredentials
from pullwarden.testing import FakeClock
from tests.imagemanager.doubles import (
    FakeImageService,
    StaticKeyring,
    dockerconfig_secret,
    make_rig,
    only_users,
)

REGISTRY = "registry.example"
IMAGE = f"{REGISTRY}/team/app:v1"
FIRST = dockerconfig_secret("team-a", "first", "uid-1", REGISTRY, "first-user", "pw1")
SECOND = dockerconfig_secret("team-a", "second", "uid-2", REGISTRY, "second-user", "pw2")
ELSEWHERE = dockerconfig_secret("team-a", "elsewhere", "uid-3", "other.example", "x", "y")
NODE = TrackedCredential("node-user", "node-pw")


def test_lookup_order_is_pod_secrets_then_node(clock: FakeClock) -> None:
    node = StaticKeyring([NODE])
    lookup = CredentialLookup(IMAGE, [FIRST, ELSEWHERE, SECOND], node, track_hashes=True)
    creds = lookup()
    assert [c.username for c in creds] == ["first-user", "second-user", "node-user"]
    assert node.lookups == [f"{REGISTRY}/team/app"]  # the normalised repository, no tag
    assert lookup() == creds and node.lookups == [f"{REGISTRY}/team/app"]  # computed once
    secrets, account = lookup.pod_credentials()
    assert [(s.name, bool(s.credential_hash)) for s in secrets] == [
        ("first", True),
        ("second", True),
    ]
    assert account is None


def test_lookup_normalises_docker_hub_names() -> None:
    node = StaticKeyring([])
    CredentialLookup("nginx", [], node, track_hashes=True)()
    assert node.lookups == ["docker.io/library/nginx"]


def test_hashes_are_only_computed_with_the_gate_on() -> None:
    creds = CredentialLookup(IMAGE, [FIRST], None, track_hashes=False)()
    assert [c.credential_hash for c in creds] == [""]


def test_first_working_credential_wins_and_is_recorded(tmp_path: Path, clock: FakeClock) -> None:
    rig = make_rig(
        tmp_path,
        clock,
        node_keyring=StaticKeyring([NODE]),
        service=FakeImageService(clock=clock, check=only_users("second-user", "node-user")),
    )
    with rig.manager:
        result = rig.ensure(IMAGE, "Always", secrets=[FIRST, SECOND])
    assert result.ok and result.credential == "secret team-a/second"
    assert [p.username for p in rig.service.pulls] == ["first-user", "second-user"]
    record = rig.record(result.image_ref)
    assert record is not None
    (entry,) = record.credential_mapping.values()
    assert [(s.uid, s.namespace, s.name) for s in entry.kubernetes_secrets] == [
        ("uid-2", "team-a", "second")
    ]


def test_no_anonymous_fallback_and_aggregated_errors(tmp_path: Path, clock: FakeClock) -> None:
    rig = make_rig(
        tmp_path,
        clock,
        service=FakeImageService(clock=clock, check=only_users(None)),  # only anonymous works
    )
    with rig.manager:
        result = rig.ensure(IMAGE, "Always", secrets=[FIRST, SECOND])
    assert [p.username for p in rig.service.pulls] == ["first-user", "second-user"]
    assert result.error == "ErrImagePull"
    assert result.message == (
        f"[pull access denied for {IMAGE} (first-user), pull access denied for {IMAGE} "
        "(second-user)]"
    )
    assert rig.events.messages()[-1] == f'Failed to pull image "{IMAGE}": {result.message}'


def test_duplicate_errors_are_shown_once_without_brackets(clock: FakeClock) -> None:
    service = FakeImageService(clock=clock, pull_error=UnauthorizedError("401 unauthorized"))
    creds = [TrackedCredential("a", "1"), TrackedCredential("b", "2")]
    outcome = pull_with_credentials(service, IMAGE, creds, clock=clock)
    assert outcome.error == "401 unauthorized" and outcome.attempted
    assert not outcome.registry_unavailable


def test_no_credentials_means_one_anonymous_pull(tmp_path: Path, clock: FakeClock) -> None:
    rig = make_rig(tmp_path, clock)
    with rig.manager:
        result = rig.ensure(IMAGE, "Always", secrets=[ELSEWHERE])  # a secret for another registry
    assert result.ok and result.credential == "anonymous"
    assert [p.username for p in rig.service.pulls] == [None]
    record = rig.record(result.image_ref)
    assert record is not None
    assert list(record.credential_mapping.values()) == [
        ImagePullCredentials(node_pods_accessible=True)
    ]


def test_unreachable_registry_is_registry_unavailable(tmp_path: Path, clock: FakeClock) -> None:
    error = RegistryUnavailableError("cannot connect to registry.example: connection refused")
    rig = make_rig(tmp_path, clock, service=FakeImageService(clock=clock, pull_error=error))
    with rig.manager:
        result = rig.ensure(IMAGE, "Always", secrets=[FIRST, SECOND])
    assert result.error == "RegistryUnavailable"
    assert result.message == (
        f"image pull failed for {IMAGE} because the registry is unavailable: "
        "cannot connect to registry.example: connection refused"
    )


def test_the_pull_time_includes_the_size_lookup(clock: FakeClock) -> None:
    service = FakeImageService(clock=clock, pull_seconds=1.5, size_seconds=0.25)
    outcome = pull_with_credentials(service, IMAGE, [], clock=clock)
    assert outcome.duration_ns == 1_750_000_000
    assert outcome.size == 4321 and outcome.credential is None


def test_credential_ref_names_who_without_secrets() -> None:
    assert credential_ref(None).describe() == "anonymous"
    assert credential_ref(NODE).describe() == "node credentials"
    secret = TrackedCredential("u", "p", source=SecretSource("uid", "ns", "name"))
    assert credential_ref(secret).describe() == "secret ns/name"
    account = TrackedCredential("u", "p", source=ServiceAccountSource("uid", "ns", "builder"))
    assert credential_ref(account).describe() == "service account ns/builder"
