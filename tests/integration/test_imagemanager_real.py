"""EnsureImageExists end to end: real docker-registry with token auth, the embedded image store,
the real pull manager and record files.

The first group restates the upstream node e2e scenarios for ``IfNotPresent`` and ``Never``;
the second is the KEP's parallel-pull test, in several interleavings forced by holding pulls at
chosen points (the holding wrapper only delays calls; the pulls themselves are real).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pullwarden._cancel import CancelToken
from pullwarden.credentials import credential_hash
from pullwarden.events import ListRecorder
from pullwarden.imagemanager import EnsureResult, ImageManager
from pullwarden.objects import Container, Pod, Secret
from pullwarden.policy import PolicyEnforcer
from pullwarden.pullmanager import PullManager, open_kubelet_records
from pullwarden.records import ImagePullCredentials, ImagePullSecret
from pullwarden.runtime import AuthConfig, Image, LocalImageService, PodSandbox, ProgressCallback
from pullwarden.testing import FakeClock
from tests.imagemanager.doubles import dockerconfig_secret
from tests.integration.infra import ALICE, BOB, Registry, Seeded

PRIVATE = "private/alice:v1"


@dataclass
class Node:
    registry: Registry
    image: str
    manager: ImageManager
    pull_manager: PullManager
    store: LocalImageService
    events: ListRecorder
    clock: FakeClock

    def ensure(self, pod: Pod, policy: str, secrets: list[Secret]) -> EnsureResult:
        return self.manager.ensure_image_exists(pod, Container("app", self.image, policy), secrets)

    def secret(self, namespace: str, name: str, uid: str, user: str, password: str) -> Secret:
        return dockerconfig_secret(namespace, name, uid, self.registry.host, user, password)

    def recorded_secrets(self, image_ref: str) -> list[tuple[str, str, str]]:
        record = self.pull_manager.store.get_pulled_record(image_ref)
        assert record is not None
        entry = record.credential_mapping[self.image.rsplit(":", 1)[0]]
        return [(s.namespace, s.name, s.credential_hash) for s in entry.kubernetes_secrets]


def make_node(
    seeded: Seeded,
    root: Path,
    *,
    serial: bool,
    wrap: Callable[[LocalImageService], object] | None = None,
) -> Node:
    clock = FakeClock()
    registry = seeded.registries["token"]
    store = LocalImageService(root / "images", clock=clock)
    service = wrap(store) if wrap is not None else store
    pm = PullManager(open_kubelet_records(root / "kubelet"), PolicyEnforcer(), store, clock=clock)
    events = ListRecorder()
    manager = ImageManager(
        service,  # type: ignore[arg-type]
        pm,
        events=events,
        serialize_image_pulls=serial,
        registry_pull_qps=0,
        clock=clock,
    )
    return Node(registry, registry.ref(PRIVATE), manager, pm, store, events, clock)


@pytest.fixture
def node(seeded: Seeded, tmp_path: Path) -> Iterator[Node]:
    n = make_node(seeded, tmp_path, serial=True)
    try:
        yield n
    finally:
        n.manager.close()
        n.store.close()


POD_X = Pod(uid="uid-pod-x", namespace="x", name="pod-a")


def pulled_by_alice(node: Node) -> tuple[Secret, str]:
    """Pod A in namespace x pulls the private image with its Secret 1 (alice)."""
    secret1 = node.secret("x", "secret-1", "uid-s1", *ALICE)
    first = node.ensure(POD_X, "IfNotPresent", [secret1])
    assert first.ok and first.pulled and first.credential == "secret x/secret-1", first
    return secret1, first.image_ref


@pytest.mark.parametrize("policy", ["IfNotPresent", "Never"])
def test_pod_without_secret_is_denied(node: Node, policy: str) -> None:
    _, image_ref = pulled_by_alice(node)
    mark = node.registry.mark()
    result = node.ensure(Pod(uid="uid-b", namespace="y", name="pod-b"), policy, [])
    assert result.image_ref == "" and not result.ok
    if policy == "Never":
        assert result.error == "ErrImageNeverPull"
        assert result.message == (
            f'Container image "{node.image}" is not present with pull policy of Never'
        )
        assert node.registry.access_log(mark) == []
    else:
        assert result.error == "ErrImagePull" and result.pulled
        assert "private/alice" in result.message
        assert node.registry.access_log(mark) != []
    assert node.store.image_status(node.image) is not None  # still on the node, not handed out
    assert node.recorded_secrets(image_ref) == [("x", "secret-1", credential_hash(*ALICE))]


@pytest.mark.parametrize("policy", ["IfNotPresent", "Never"])
def test_secret_with_wrong_credentials_is_denied(node: Node, policy: str) -> None:
    _, image_ref = pulled_by_alice(node)
    wrong = node.secret("y", "guess", "uid-guess", ALICE[0], "not-alices-password")
    mark = node.registry.mark()
    result = node.ensure(Pod(uid="uid-c", namespace="y", name="pod-c"), policy, [wrong])
    if policy == "Never":
        assert result.error == "ErrImageNeverPull"
        assert node.registry.access_log(mark) == []
    else:
        assert result.error == "ErrImagePull" and result.pulled
        assert "not-alices-password" not in result.message
        assert all("not-alices-password" not in e.message for e in node.events.events)
    assert [s[1] for s in node.recorded_secrets(image_ref)] == ["secret-1"]


@pytest.mark.parametrize("policy", ["IfNotPresent", "Never"])
def test_same_secret_runs_without_the_registry(node: Node, policy: str) -> None:
    secret1, image_ref = pulled_by_alice(node)
    mark = node.registry.mark()
    result = node.ensure(Pod(uid="uid-d", namespace="x", name="pod-d"), policy, [secret1])
    assert result.ok and not result.pulled and result.image_ref == image_ref
    assert (result.verified_by, result.credential) == ("secretHash", "secret x/secret-1")
    assert node.registry.access_log(mark) == []


@pytest.mark.parametrize("policy", ["IfNotPresent", "Never"])
def test_same_credentials_in_another_secret_run_without_the_registry(
    node: Node, policy: str
) -> None:
    _, image_ref = pulled_by_alice(node)
    secret2 = node.secret("y", "secret-2", "uid-s2", *ALICE)
    mark = node.registry.mark()
    result = node.ensure(Pod(uid="uid-e", namespace="y", name="pod-e"), policy, [secret2])
    assert result.ok and not result.pulled
    assert (result.verified_by, result.credential) == ("secretHash", "secret y/secret-2")
    assert node.registry.access_log(mark) == []
    # the new coordinates are remembered next to the old ones
    assert [s[:2] for s in node.recorded_secrets(image_ref)] == [
        ("x", "secret-1"),
        ("y", "secret-2"),
    ]


def test_rotated_secret_runs_by_coordinates(node: Node) -> None:
    _, image_ref = pulled_by_alice(node)
    rotated = node.secret("x", "secret-1", "uid-s1", ALICE[0], "rotated-password")
    result = node.ensure(Pod(uid="uid-f", namespace="x", name="pod-f"), "IfNotPresent", [rotated])
    assert result.ok and result.verified_by == "secretCoordinates" and not result.pulled
    assert node.recorded_secrets(image_ref) == [
        ("x", "secret-1", credential_hash(ALICE[0], "rotated-password"))
    ]


# --------------------------------------------------------------------------------------------
# The KEP's parallel-pull test


@dataclass
class Gate:
    arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)


class HoldingService:
    """The real image service, with pulls held on request just before or just after the
    registry is asked (keyed by the username of the pull's credentials)."""

    def __init__(self, inner: LocalImageService) -> None:
        self.inner = inner
        self.gates: dict[tuple[str | None, str], Gate] = {}

    def hold(self, user: str | None, phase: str) -> Gate:
        gate = self.gates[(user, phase)] = Gate()
        return gate

    def _pass(self, user: str | None, phase: str) -> None:
        gate = self.gates.get((user, phase))
        if gate is not None:
            gate.arrived.set()
            assert gate.release.wait(30), f"{user} was held at {phase} for 30 s"

    def pull_image(
        self,
        image: str,
        auth: AuthConfig | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        cancel: CancelToken | None = None,
        sandbox: PodSandbox | None = None,
    ) -> str:
        user = auth.username if auth is not None else None
        self._pass(user, "before")
        try:
            return self.inner.pull_image(image, auth, on_progress, cancel=cancel, sandbox=sandbox)
        finally:
            self._pass(user, "after")

    def image_status(self, image: str) -> Image | None:
        return self.inner.image_status(image)

    def list_images(self) -> list[Image]:
        return self.inner.list_images()


ALICE_POD = Pod(uid="uid-alice-pod", namespace="x", name="alice-pod")
BOB_POD = Pod(uid="uid-bob-pod", namespace="y", name="bob-pod")


def start(fn: Callable[[], EnsureResult]) -> tuple[threading.Thread, list[EnsureResult]]:
    out: list[EnsureResult] = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    return thread, out


def finish(thread: threading.Thread, out: list[EnsureResult]) -> EnsureResult:
    thread.join(60)
    assert not thread.is_alive() and len(out) == 1
    return out[0]


Interleaving = Callable[["ParallelNode"], tuple[EnsureResult, EnsureResult]]


@dataclass
class ParallelNode:
    node: Node
    service: HoldingService
    alice_secret: Secret
    bob_secret: Secret

    def alice(self) -> EnsureResult:
        return self.node.ensure(ALICE_POD, "IfNotPresent", [self.alice_secret])

    def bob(self) -> EnsureResult:
        return self.node.ensure(BOB_POD, "IfNotPresent", [self.bob_secret])


def alice_then_bob(p: ParallelNode) -> tuple[EnsureResult, EnsureResult]:
    return p.alice(), p.bob()


def bob_then_alice(p: ParallelNode) -> tuple[EnsureResult, EnsureResult]:
    bob = p.bob()
    return p.alice(), bob


def both_in_flight_bob_fails_first(p: ParallelNode) -> tuple[EnsureResult, EnsureResult]:
    gate = p.service.hold(ALICE[0], "before")
    a = start(p.alice)
    assert gate.arrived.wait(30)
    bob = p.bob()  # denied while alice's pull has not reached the registry yet
    gate.release.set()
    return finish(*a), bob


def bob_checks_while_alices_pull_is_unrecorded(
    p: ParallelNode,
) -> tuple[EnsureResult, EnsureResult]:
    gate = p.service.hold(ALICE[0], "after")
    a = start(p.alice)
    assert gate.arrived.wait(30)
    # the image is in the store now, but alice's pull is neither finished nor recorded
    assert p.node.store.image_status(p.node.image) is not None
    bob = p.bob()
    gate.release.set()
    return finish(*a), bob


def bob_denied_but_answered_after_alice(p: ParallelNode) -> tuple[EnsureResult, EnsureResult]:
    gate = p.service.hold(BOB[0], "after")
    b = start(p.bob)
    assert gate.arrived.wait(30)  # the registry has refused bob; he has not heard it yet
    alice = p.alice()
    gate.release.set()
    return alice, finish(*b)


def both_released_together(p: ParallelNode) -> tuple[EnsureResult, EnsureResult]:
    gates = [p.service.hold(ALICE[0], "before"), p.service.hold(BOB[0], "before")]
    a, b = start(p.alice), start(p.bob)
    for gate in gates:
        assert gate.arrived.wait(30)
    for gate in gates:
        gate.release.set()
    return finish(*a), finish(*b)


INTERLEAVINGS: list[Interleaving] = [
    alice_then_bob,
    bob_then_alice,
    both_in_flight_bob_fails_first,
    bob_checks_while_alices_pull_is_unrecorded,
    bob_denied_but_answered_after_alice,
    both_released_together,
]


@pytest.mark.parametrize("interleaving", INTERLEAVINGS, ids=[f.__name__ for f in INTERLEAVINGS])
def test_parallel_pulls_only_the_valid_pod_gets_the_image(
    seeded: Seeded, tmp_path: Path, interleaving: Interleaving
) -> None:
    holder: list[HoldingService] = []

    def wrap(store: LocalImageService) -> HoldingService:
        holder.append(HoldingService(store))
        return holder[0]

    node = make_node(seeded, tmp_path, serial=False, wrap=wrap)
    p = ParallelNode(
        node,
        holder[0],
        node.secret("x", "alice-cred", "uid-alice-cred", *ALICE),
        node.secret("y", "bob-cred", "uid-bob-cred", *BOB),
    )
    try:
        alice, bob = interleaving(p)
        assert alice.ok and alice.image_ref == seeded.images.alice.config_digest, alice
        assert alice.credential == "secret x/alice-cred"
        assert bob.error == "ErrImagePull" and bob.image_ref == "" and bob.pulled, bob
        # what the node remembers: alice's secret only, and no pull left in flight
        assert node.recorded_secrets(alice.image_ref) == [
            ("x", "alice-cred", credential_hash(*ALICE))
        ]
        assert node.pull_manager.store.list_intents().items == []
        # bob stays locked out once the image is settled: after his back-off, and with Never
        node.clock.advance(11)
        assert p.bob().error == "ErrImagePull"
        never = node.ensure(BOB_POD, "Never", [p.bob_secret])
        assert never.error == "ErrImageNeverPull"
        # while alice's pod keeps using it without the registry
        again = p.alice()
        assert again.ok and not again.pulled and again.verified_by == "secretHash"
    finally:
        node.manager.close()
        node.store.close()


def test_recorded_credentials_type(node: Node) -> None:
    """The record written by a real pull is exactly one Secret entry (spec §5.8)."""
    _, image_ref = pulled_by_alice(node)
    record = node.pull_manager.store.get_pulled_record(image_ref)
    assert record is not None
    assert record.credential_mapping == {
        node.image.rsplit(":", 1)[0]: ImagePullCredentials(
            kubernetes_secrets=(
                ImagePullSecret("uid-s1", "x", "secret-1", credential_hash(*ALICE)),
            )
        )
    }
