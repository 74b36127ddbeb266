"""The events of EnsureImageExists, word for word (spec §1.7)."""

from __future__ import annotations

import io
import logging
from pathlib import Path

import pytest

from pullwarden.errors import NotFoundError
from pullwarden.events import StreamRecorder
from pullwarden.imagemanager import ImageManager
from pullwarden.testing import FakeClock
from tests.imagemanager.doubles import FakeImageService, make_container, make_pod, make_rig

IMAGE = "registry.example/team/app:v1"


def test_describe_transcript(tmp_path: Path, clock: FakeClock) -> None:
    service = FakeImageService(clock=clock, pull_error=NotFoundError("manifest unknown"))
    rig = make_rig(tmp_path, clock, service=service)
    out = io.StringIO()
    rig.manager.events = StreamRecorder(out)
    with rig.manager:
        rig.ensure(IMAGE, "IfNotPresent")
        rig.ensure(IMAGE, "IfNotPresent")
        clock.advance(10)
        service.pull_error = None
        service.pull_seconds = 2.5
        rig.ensure(IMAGE, "IfNotPresent")
        rig.ensure(IMAGE, "Never")
        rig.ensure(IMAGE + "-gone", "Never")
    assert out.getvalue().splitlines() == [
        f'Normal  Pulling  team-a/web  Pulling image "{IMAGE}"',
        f'Warning  Failed  team-a/web  Failed to pull image "{IMAGE}": manifest unknown',
        f'Normal  BackOff  team-a/web  Back-off pulling image "{IMAGE}"',
        f'Normal  Pulling  team-a/web  Pulling image "{IMAGE}"',
        f'Normal  Pulled  team-a/web  Successfully pulled image "{IMAGE}" in 2.5s '
        "(2.5s including waiting). Image size: 4321 bytes.",
        f'Normal  Pulled  team-a/web  Container image "{IMAGE}" already present on machine '
        "and can be accessed by the pod",
        f'Warning  ErrImageNeverPull  team-a/web  Container image "{IMAGE}-gone" is not present '
        "with pull policy of Never",
    ]


def test_go_quoting_in_messages(tmp_path: Path, clock: FakeClock) -> None:
    rig = make_rig(tmp_path, clock)
    with rig.manager:
        result = rig.ensure('bad"name\t', "Always")
    assert result.error == "InvalidImageName"
    assert result.message == (
        'Failed to apply default image tag "bad\\"name\\t": couldn\'t parse image name '
        '"bad\\"name\\t": invalid reference format'
    )
    assert [(e.type, e.reason) for e in rig.events.events] == [("Warning", "InspectFailed")]


def test_without_a_recorder_events_are_logged(
    tmp_path: Path, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    service = FakeImageService(clock=clock)
    manager = ImageManager(service, None, clock=clock, registry_pull_qps=0)
    with caplog.at_level(logging.INFO, logger="pullwarden.imagemanager"), manager:
        result = manager.ensure_image_exists(make_pod(), make_container(IMAGE, "Always"), [])
    assert result.ok
    assert caplog.messages[0] == f'team-a/web/{IMAGE} Pulling image "{IMAGE}"'


def test_unknown_pull_policy_is_a_programming_error(tmp_path: Path, clock: FakeClock) -> None:
    rig = make_rig(tmp_path, clock)
    with rig.manager, pytest.raises(ValueError, match="imagePullPolicy 'Sometimes'"):
        rig.ensure(IMAGE, "Sometimes")


def test_empty_pull_policy_gets_the_api_default(tmp_path: Path, clock: FakeClock) -> None:
    rig = make_rig(tmp_path, clock)
    rig.service.add("registry.example/team/app:latest")
    with rig.manager:
        assert rig.ensure("registry.example/team/app", "").pulled  # latest → Always
        assert rig.ensure(IMAGE, "").pulled  # v1 → IfNotPresent; not present
    assert rig.requests("always", "unknown", "true") == 1
    assert rig.requests("ifnotpresent", "false", "true") == 1
