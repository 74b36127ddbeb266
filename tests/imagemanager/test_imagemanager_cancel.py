"""Stopping the image manager: an intent ends only when its pull is known not to have committed.

The failure this guards against: Ctrl-C reached the caller, the caller removed the intent, and
the puller went on and committed the image -- which then had neither record nor intent, so it
counted as preloaded and any pod could use it.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from pullwarden._cancel import CancelToken
from pullwarden.errors import PullCancelledError, PullOutcomeUnknownError, RegistryUnavailableError
from pullwarden.imagemanager import EnsureResult
from pullwarden.records import FileRecordStore
from pullwarden.testing import FakeClock
from tests.imagemanager.doubles import FakeImageService, Rig, make_rig
from tests.support import T0

IMAGE = "registry.example/private/app:v1"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)


def intents_on_disk(root: Path) -> list[str]:
    return [i.image for i in FileRecordStore(root, migrate=False).list_intents().items]


def ensure_in_thread(rig: Rig, image: str, results: list[EnsureResult]) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.append(rig.ensure(image, "IfNotPresent")))
    thread.start()
    return thread


@pytest.mark.parametrize("serial", [True, False], ids=["serial", "parallel"])
def test_cancelled_pull_that_did_not_commit_ends_its_intent(
    tmp_path: Path, clock: FakeClock, serial: bool
) -> None:
    cancel = CancelToken()
    service = FakeImageService(clock=clock, blocking=True)
    rig = make_rig(tmp_path, clock, serial=serial, service=service, cancel=cancel)
    results: list[EnsureResult] = []
    thread = ensure_in_thread(rig, IMAGE, results)
    service.wait_started(1)
    assert intents_on_disk(tmp_path) == [IMAGE]
    start = time.monotonic()
    cancel.cancel(PullCancelledError("interrupted by SIGINT"))
    thread.join(5)
    assert time.monotonic() - start < 1.0
    [result] = results
    assert result.interrupted and result.error == "ErrImagePull"
    assert "interrupted by SIGINT" in result.message
    assert IMAGE not in service.images
    assert intents_on_disk(tmp_path) == []
    assert rig.pull_manager is not None and rig.pull_manager.intents_in_flight(IMAGE) == 0
    assert not rig.manager.backoff.in_backoff(f"pod-uid-1_{IMAGE}")  # a cancel is no failure


def test_pull_that_commits_after_the_caller_gave_up_still_gets_its_record(
    tmp_path: Path, clock: FakeClock
) -> None:
    """The runtime ignores the cancel and commits later: the intent must stay until then."""
    cancel = CancelToken()
    service = FakeImageService(clock=clock, blocking=True, ignore_cancel=True)
    rig = make_rig(tmp_path, clock, service=service, cancel=cancel, stop_grace=0.2)
    results: list[EnsureResult] = []
    thread = ensure_in_thread(rig, IMAGE, results)
    service.wait_started(1)
    cancel.cancel()
    thread.join(5)
    [result] = results
    assert result.interrupted
    # The caller gave up; the pull is still running: its intent must be there.
    assert intents_on_disk(tmp_path) == [IMAGE]
    assert rig.pull_manager is not None
    assert rig.pull_manager.must_attempt_image_pull(IMAGE, "sha256:" + "0" * 64, lambda: ([], None))
    service.release()  # the runtime commits the image
    deadline = time.monotonic() + 5
    while intents_on_disk(tmp_path) and time.monotonic() < deadline:
        time.sleep(0.01)
    ref = service.images[IMAGE].id
    record = rig.record(ref)
    assert record is not None and IMAGE.rsplit(":", 1)[0] in record.credential_mapping
    assert intents_on_disk(tmp_path) == []


def test_queued_pulls_never_start_after_a_cancel(tmp_path: Path, clock: FakeClock) -> None:
    cancel = CancelToken()
    service = FakeImageService(clock=clock, blocking=True)
    rig = make_rig(tmp_path, clock, serial=True, service=service, cancel=cancel)
    results: list[EnsureResult] = []
    images = [f"registry.example/private/app{i}:v1" for i in range(4)]
    threads = [ensure_in_thread(rig, image, results) for image in images]
    service.wait_started(1)
    deadline = time.monotonic() + 5
    while len(intents_on_disk(tmp_path)) < 4 and time.monotonic() < deadline:
        time.sleep(0.01)
    cancel.cancel()
    for t in threads:
        t.join(5)
    assert len(results) == 4 and all(r.interrupted for r in results)
    assert service.started == 1
    assert intents_on_disk(tmp_path) == []


def test_nothing_starts_once_cancelled(tmp_path: Path, clock: FakeClock) -> None:
    cancel = CancelToken()
    rig = make_rig(tmp_path, clock, cancel=cancel)
    cancel.cancel()
    result = rig.ensure(IMAGE, "IfNotPresent")
    assert result.interrupted and result.message.startswith("not started")
    assert rig.service.calls == []
    assert intents_on_disk(tmp_path) == []


def test_pull_that_committed_before_the_cancel_is_recorded(
    tmp_path: Path, clock: FakeClock
) -> None:
    cancel = CancelToken()
    service = FakeImageService(clock=clock)
    rig = make_rig(tmp_path, clock, service=service, cancel=cancel)
    original = service.pull_image

    def pull_then_cancel(*args: object, **kwargs: object) -> str:
        ref = original(*args, **kwargs)  # type: ignore[arg-type]
        cancel.cancel()  # Ctrl-C right after the runtime's commit
        return ref

    service.pull_image = pull_then_cancel  # type: ignore[method-assign]
    result = rig.ensure(IMAGE, "IfNotPresent")
    assert result.ok and result.pulled
    assert rig.record(result.image_ref) is not None
    assert intents_on_disk(tmp_path) == []


def test_a_pull_the_runtime_never_answered_keeps_its_intent(
    tmp_path: Path, clock: FakeClock
) -> None:
    """A CRI runtime that lost the connection (or timed out) may have committed the image: the
    intent must stay, so the image counts as pulled by this node and gets verified."""
    service = FakeImageService(
        clock=clock, pull_error=PullOutcomeUnknownError("the runtime may have pulled it")
    )
    rig = make_rig(tmp_path, clock, service=service)
    result = rig.ensure(IMAGE, "IfNotPresent")
    assert result.error == "ErrImagePull" and not result.interrupted
    assert intents_on_disk(tmp_path) == [IMAGE]
    service.pull_error = RegistryUnavailableError("down")  # an answer: nothing was committed
    clock.advance(600)  # past the back-off
    result = rig.ensure(IMAGE, "IfNotPresent")
    assert result.error == "RegistryUnavailable"
    assert intents_on_disk(tmp_path) == [IMAGE]  # inherited from the unanswered pull


@pytest.mark.parametrize("serial", [True, False], ids=["serial", "parallel"])
def test_a_cancelled_pull_the_runtime_never_answered_keeps_its_intent(
    tmp_path: Path, clock: FakeClock, serial: bool
) -> None:
    cancel = CancelToken()

    def stopped(image: str, auth: object) -> Exception:
        cancel.cancel(PullCancelledError("interrupted by SIGINT"))
        return PullOutcomeUnknownError("stopped while the runtime worked on it")

    service = FakeImageService(clock=clock, check=stopped)
    rig = make_rig(tmp_path, clock, serial=serial, service=service, cancel=cancel)
    result = rig.ensure(IMAGE, "IfNotPresent")
    assert result.interrupted
    assert intents_on_disk(tmp_path) == [IMAGE]
