"""The kubelet's puller scenarios (spec §9.3), for the serial and the parallel puller, with the
KubeletEnsureSecretPulledImages gate on and off.

Each scenario calls ensure_image_exists several times, the fake clock moving 10 s (the first
back-off period) before each call, and checks what reached the image service, the error value,
the event reasons and the message of every call, then the ensure-requests metric.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pytest

from pullwarden.errors import NotFoundError
from pullwarden.testing import FakeClock
from tests.imagemanager.doubles import FakeImageService, Rig, make_rig

PRESENT = "on-node/app"
MISSING = "not-yet/app"


@dataclass(frozen=True)
class Step:
    calls: tuple[str, ...]
    error: str | None
    reasons: tuple[str, ...]
    message: str = ""  # the exact message when set


@dataclass(frozen=True)
class Scenario:
    name: str
    image: str
    policy: str
    steps: tuple[Step, ...]
    metric: tuple[str, str, str]
    inspect_error: Exception | None = None
    pull_error: Exception | None = None
    qps: float = 0.0
    burst: int = 0
    present: tuple[str, ...] = field(default=(PRESENT + ":latest",))


PULLED = Step(("status", "pull", "status"), None, ("Pulling", "Pulled"))
USED = Step(("status",), None, ("Pulled",))
ALWAYS_PULLED = Step(("pull", "status"), None, ("Pulling", "Pulled"))
NEVER_MSG = 'Container image "not-yet/app" is not present with pull policy of Never'
SIG_MSG = "image pull failed for misspelt/app because the signature validation failed"

SCENARIOS = [
    Scenario("missing image is pulled", MISSING, "IfNotPresent", (PULLED,),
             ("ifnotpresent", "false", "true")),
    Scenario("present image is used as it is", PRESENT, "IfNotPresent", (USED, USED, USED),
             ("ifnotpresent", "true", "false")),
    Scenario("Always pulls a present image", PRESENT, "Always",
             (ALWAYS_PULLED, ALWAYS_PULLED, ALWAYS_PULLED), ("always", "unknown", "true")),
    Scenario(
        "Never with a missing image", MISSING, "Never",
        (Step(("status",), "ErrImageNeverPull", ("ErrImageNeverPull",), NEVER_MSG),) * 3,
        ("never", "false", "unknown"),
    ),
    Scenario(
        "inspecting the image fails", MISSING, "IfNotPresent",
        (Step(("status",), "ImageInspectError", ("InspectFailed",),
              'Failed to inspect image "": disk on fire'),) * 3,
        ("ifnotpresent", "unknown", "unknown"),
        inspect_error=OSError("disk on fire"),
    ),
    Scenario(
        "the registry does not know the image", "misspelt/app", "IfNotPresent",
        (
            Step(("status", "pull"), "ErrImagePull", ("Pulling", "Failed"), "manifest unknown"),
            Step(("status", "pull"), "ErrImagePull", ("Pulling", "Failed"), "manifest unknown"),
            Step(("status",), "ImagePullBackOff", ("BackOff",),
                 'Back-off pulling image "misspelt/app": ErrImagePull: manifest unknown'),
            Step(("status", "pull"), "ErrImagePull", ("Pulling", "Failed"), "manifest unknown"),
            Step(("status",), "ImagePullBackOff", ("BackOff",)),
            Step(("status",), "ImagePullBackOff", ("BackOff",)),
        ),
        ("ifnotpresent", "false", "true"),
        pull_error=NotFoundError("manifest unknown"),
    ),
    Scenario("pulls within the rate limit", PRESENT, "Always", (ALWAYS_PULLED,) * 3,
             ("always", "unknown", "true"), qps=400.0, burst=600),
    Scenario(
        "pulls over the rate limit", PRESENT, "Always",
        (
            Step((), "ErrImagePull", ("Pulling", "Failed"), "pull QPS exceeded"),
            Step((), "ErrImagePull", ("Pulling", "Failed"), "pull QPS exceeded"),
            Step((), "ImagePullBackOff", ("BackOff",),
                 'Back-off pulling image "on-node/app": ErrImagePull: pull QPS exceeded'),
        ),
        ("always", "unknown", "true"), qps=2000.0, burst=0,
    ),
    Scenario(
        "upper-case image name", "ShoutingApp", "Always",
        (Step((), "InvalidImageName", ("InspectFailed",),
              'Failed to apply default image tag "ShoutingApp": couldn\'t parse image name '
              '"ShoutingApp": invalid reference format: repository name '
              "(library/ShoutingApp) must be lowercase"),),
        ("always", "unknown", "unknown"),
    ),
    Scenario(
        "image name with a URL scheme", "http://registry.example/app", "Always",
        (Step((), "InvalidImageName", ("InspectFailed",),
              'Failed to apply default image tag "http://registry.example/app": couldn\'t parse '
              'image name "http://registry.example/app": invalid reference format'),),
        ("always", "unknown", "unknown"),
    ),
    Scenario(
        "image name that is a bare 64-hex id", "0123456789abcdef" * 4, "Always",
        (Step((), "InvalidImageName", ("InspectFailed",)),),
        ("always", "unknown", "unknown"),
    ),
    Scenario(
        "signature validation fails", "misspelt/app", "IfNotPresent",
        (
            Step(("status", "pull"), "SignatureValidationFailed", ("Pulling", "Failed"), SIG_MSG),
            Step(("status", "pull"), "SignatureValidationFailed", ("Pulling", "Failed"), SIG_MSG),
            Step(("status",), "ImagePullBackOff", ("BackOff",),
                 f'Back-off pulling image "misspelt/app": SignatureValidationFailed: {SIG_MSG}'),
            Step(("status", "pull"), "SignatureValidationFailed", ("Pulling", "Failed"), SIG_MSG),
            Step(("status",), "ImagePullBackOff", ("BackOff",)),
        ),
        ("ifnotpresent", "false", "true"),
        pull_error=RuntimeError("SignatureValidationFailed"),
    ),
]  # fmt: skip


@pytest.fixture(params=["serial", "parallel"])
def serial(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "serial")


@pytest.fixture(params=["gate-off", "gate-on"])
def gate(request: pytest.FixtureRequest) -> bool:
    return bool(request.param == "gate-on")


def build(tmp_path: Path, clock: FakeClock, scenario: Scenario, serial: bool, gate: bool) -> Rig:
    service = FakeImageService(
        clock=clock, inspect_error=scenario.inspect_error, pull_error=scenario.pull_error
    )
    for name in scenario.present:
        service.add(name)
    return make_rig(
        tmp_path,
        clock,
        gate=gate,
        serial=serial,
        qps=scenario.qps,
        burst=scenario.burst,
        service=service,
    )


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_puller_scenario(
    tmp_path: Path, clock: FakeClock, scenario: Scenario, serial: bool, gate: bool
) -> None:
    rig = build(tmp_path, clock, scenario, serial, gate)
    with rig.manager:
        for i, step in enumerate(scenario.steps):
            rig.service.reset_calls()
            rig.events.clear()
            clock.advance(10)
            result = rig.ensure(scenario.image, scenario.policy)
            where = f"call {i + 1}"
            assert tuple(rig.service.calls) == step.calls, where
            assert result.error == step.error, where
            assert tuple(rig.events.reasons()) == step.reasons, where
            if step.message:
                assert result.message == step.message, where
            if step.error is None:
                assert result.image_ref and result.message == ""
            else:
                assert result.image_ref == "" and result.verified_by == ""
            assert result.pulled == ("pull" in step.calls), where
    assert rig.requests(*scenario.metric) == len(scenario.steps)
    if gate:
        assert rig.pull_manager is not None
        # every intent written around a pull was cleared again
        assert rig.pull_manager.store.list_intents().items == []


def test_present_image_verified_by(tmp_path: Path, clock: FakeClock, gate: bool) -> None:
    rig = make_rig(tmp_path, clock, gate=gate)
    rig.service.add("on-node/app:latest")
    with rig.manager:
        result = rig.ensure("on-node/app", "IfNotPresent")
    assert result.ok and not result.pulled
    assert result.image_ref == rig.service.images["on-node/app:latest"].id
    # gate off: nothing is checked; gate on: an image nobody pulled is preloaded
    assert result.verified_by == ("preloaded" if gate else "featureDisabled")
    assert result.credential == ""
    message = rig.events.messages()[0]
    if gate:
        assert message == (
            'Container image "on-node/app" already present on machine and can be accessed '
            "by the pod"
        )
    else:
        assert message == 'Container image "on-node/app" already present on machine'


def test_pulled_image_is_recorded_only_with_the_gate_on(
    tmp_path: Path, clock: FakeClock, gate: bool
) -> None:
    rig = make_rig(tmp_path, clock, gate=gate)
    with rig.manager:
        result = rig.ensure("registry.example/team/app:v1", "IfNotPresent")
    assert result.ok and result.pulled and result.verified_by == "pull"
    assert result.credential == "anonymous"
    if gate:
        record = rig.record(result.image_ref)
        assert record is not None
        entry = record.credential_mapping["registry.example/team/app"]
        assert entry.node_pods_accessible
    else:
        assert not (tmp_path / "image_manager").exists()
