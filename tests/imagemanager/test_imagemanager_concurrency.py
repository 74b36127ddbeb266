"""The pullers under load: parallelism limits, the serial queue, waiting time (spec §1.6).

The fake image service holds every pull until the test releases it, so the tests can see how
many pulls the manager lets reach the runtime at once.  Waiting uses events with timeouts only.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pytest

from pullwarden.imagemanager import (
    MAX_IMAGE_PULL_REQUESTS,
    EnsureResult,
    ParallelPuller,
    PullOutcome,
    SerialPuller,
)
from pullwarden.testing import FakeClock
from tests.imagemanager.doubles import FakeImageService, Rig, make_pod, make_rig

IMAGE = "registry.example/team/app:v1"


def run_in_threads(
    fns: list[Callable[[], EnsureResult]],
) -> tuple[list[threading.Thread], dict[int, EnsureResult]]:
    results: dict[int, EnsureResult] = {}

    def call(i: int, fn: Callable[[], EnsureResult]) -> None:
        results[i] = fn()

    threads = [threading.Thread(target=call, args=(i, fn)) for i, fn in enumerate(fns)]
    for t in threads:
        t.start()
    return threads, results


def join(threads: list[threading.Thread]) -> None:
    for t in threads:
        t.join(10)
        assert not t.is_alive()


def settle(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait (polling) until ``predicate`` holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def blocking_rig(tmp_path: Path, clock: FakeClock, **kwargs: object) -> Rig:
    service = FakeImageService(clock=clock, blocking=True)
    return make_rig(tmp_path, clock, service=service, **kwargs)  # type: ignore[arg-type]


def test_max_parallel_image_pulls_is_honoured(tmp_path: Path, clock: FakeClock) -> None:
    rig = blocking_rig(tmp_path, clock, serial=False, max_parallel=5)
    pods = [make_pod(uid=f"p{i}", name=f"pod-{i}") for i in range(7)]
    with rig.manager:
        threads, results = run_in_threads(
            [partial(rig.ensure, IMAGE, "Always", pod=pod) for pod in pods[:5]]
        )
        rig.service.wait_started(5)
        more, more_results = run_in_threads(
            [partial(rig.ensure, IMAGE, "Always", pod=pod) for pod in pods[5:]]
        )
        # the two extra requests are in the puller, waiting for a slot
        settle(lambda: rig.events.reasons().count("Pulling") == 7)
        time.sleep(0.2)
        assert rig.service.started == 5
        rig.service.release(2)
        rig.service.wait_started(7)
        assert rig.service.max_in_flight == 5
        rig.service.release(5)
        join(threads + more)
    assert all(r.ok for r in [*results.values(), *more_results.values()])
    assert rig.service.calls.count("pull") == 7


def test_unlimited_parallel_pulls(tmp_path: Path, clock: FakeClock) -> None:
    rig = blocking_rig(tmp_path, clock, serial=False)
    with rig.manager:
        threads, results = run_in_threads(
            [partial(rig.ensure, f"{IMAGE}{i}", "Always") for i in range(12)]
        )
        rig.service.wait_started(12)
        assert rig.service.in_flight == 12
        rig.service.release(12)
        join(threads)
    assert all(r.ok for r in results.values())


def test_serial_puller_runs_one_pull_at_a_time(tmp_path: Path, clock: FakeClock) -> None:
    rig = blocking_rig(tmp_path, clock, serial=True)
    with rig.manager:
        threads, results = run_in_threads(
            [partial(rig.ensure, f"{IMAGE}{i}", "Always") for i in range(4)]
        )
        rig.service.wait_started(1)
        settle(lambda: rig.events.reasons().count("Pulling") == 4)
        time.sleep(0.1)
        assert rig.service.started == 1
        for n in range(2, 5):
            rig.service.release(1)
            rig.service.wait_started(n)
            assert rig.service.in_flight == 1
        rig.service.release(1)
        join(threads)
    assert rig.service.max_in_flight == 1
    assert all(r.ok for r in results.values())


def test_serial_queue_blocks_when_full() -> None:
    gate = threading.Event()
    running = threading.Event()

    def held() -> PullOutcome:
        running.set()
        gate.wait(10)
        return PullOutcome(image_ref="sha256:held", attempted=True)

    puller = SerialPuller()
    done: list[PullOutcome] = []
    first = threading.Thread(target=lambda: done.append(puller.pull(held)))
    first.start()
    assert running.wait(5)
    queued = [
        threading.Thread(
            target=lambda i=i: done.append(puller.pull(lambda: PullOutcome(image_ref=f"q{i}")))
        )
        for i in range(MAX_IMAGE_PULL_REQUESTS)
    ]
    for t in queued:
        t.start()
    settle(lambda: puller.queued() == MAX_IMAGE_PULL_REQUESTS)
    extra_entered = threading.Event()

    def extra() -> None:
        extra_entered.set()
        done.append(puller.pull(lambda: PullOutcome(image_ref="extra")))

    blocked = threading.Thread(target=extra)
    blocked.start()
    assert extra_entered.wait(5)
    time.sleep(0.1)
    assert puller.queued() == MAX_IMAGE_PULL_REQUESTS  # the eleventh waits to be queued
    gate.set()
    for t in [first, *queued, blocked]:
        t.join(10)
        assert not t.is_alive()
    assert len(done) == MAX_IMAGE_PULL_REQUESTS + 2
    puller.close()
    assert puller.pull(lambda: PullOutcome(image_ref="late")).error == "image puller is closed"


def test_parallel_puller_after_close() -> None:
    puller = ParallelPuller(2)
    assert puller.pull(lambda: PullOutcome(image_ref="x")).image_ref == "x"
    puller.close()
    assert puller.pull(lambda: PullOutcome(image_ref="y")).error == "image puller is closed"


def test_a_failing_job_does_not_hang_its_caller() -> None:
    def broken() -> PullOutcome:
        raise RuntimeError("bug in a job")

    for puller in (SerialPuller(), ParallelPuller(None)):
        outcome = puller.pull(broken)
        assert outcome.error == "bug in a job"
        puller.close()


def test_success_event_reports_pull_time_and_waiting(tmp_path: Path, clock: FakeClock) -> None:
    """Two serial pulls asked for at once: the second waits for the first.

    Each pull takes 1.5 s plus 0.5 ms for the size lookup (truncated away in the message); the
    first is also held for 3.25 s before it starts talking to the registry.
    """
    service = FakeImageService(clock=clock, blocking=True, pull_seconds=1.5, size_seconds=0.0005)
    rig = make_rig(tmp_path, clock, service=service, serial=True)
    first_image, second_image = f"{IMAGE}a", f"{IMAGE}b"
    with rig.manager:
        threads, results = run_in_threads([lambda: rig.ensure(first_image, "Always")])
        service.wait_started(1)
        more, more_results = run_in_threads([lambda: rig.ensure(second_image, "Always")])
        settle(lambda: rig.events.reasons().count("Pulling") == 2)
        clock.advance(3.25)
        service.release(1)
        join(threads)  # the first caller has its answer before the second pull starts
        service.release(1)
        join(more)
    assert results[0].ok and more_results[0].ok
    assert [e.message for e in rig.events.events if e.reason == "Pulled"] == [
        f'Successfully pulled image "{first_image}" in 4.75s (4.75s including waiting). '
        "Image size: 4321 bytes.",
        f'Successfully pulled image "{second_image}" in 1.5s (6.251s including waiting). '
        "Image size: 4321 bytes.",
    ]
    histogram = "kubelet_image_pull_duration_seconds_sum"
    assert rig.metrics.value(histogram, {"image_size_in_bytes": "0-10MB"}) == pytest.approx(
        4.75 + 6.251
    )


def test_many_threads_share_one_manager(tmp_path: Path, clock: FakeClock) -> None:
    rig = make_rig(tmp_path, clock, serial=False, max_parallel=3)
    rig.service.add("registry.example/shared/base:v1")
    calls: list[Callable[[], EnsureResult]] = []
    for i in range(40):
        pod = make_pod(uid=f"u{i}", name=f"p{i}")
        image = (
            "registry.example/shared/base:v1" if i % 2 else f"registry.example/own/app{i % 5}:v1"
        )
        calls.append(partial(rig.ensure, image, "IfNotPresent", pod=pod))
    with rig.manager:
        threads, results = run_in_threads(calls)
        join(threads)
    assert len(results) == 40 and all(r.ok for r in results.values())
    assert rig.service.max_in_flight <= 3
    assert rig.pull_manager is not None
    assert rig.pull_manager.store.list_intents().items == []
    total = sum(
        rig.requests("ifnotpresent", present, required)
        for present in ("true", "false")
        for required in ("true", "false")
    )
    assert total == 40
