"""Back-off (spec §1.5) and the registry rate limit (spec §1.6), on a fake clock."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullwarden.errors import NotFoundError
from pullwarden.imagemanager import Backoff, TokenBucket
from pullwarden.testing import FakeClock
from tests.imagemanager.doubles import FakeImageService, make_pod, make_rig


def test_periods_double_up_to_the_maximum(clock: FakeClock) -> None:
    backoff = Backoff(clock)
    periods = []
    for _ in range(7):
        periods.append(backoff.next("k"))
        clock.advance(1)
    assert periods == [10, 20, 40, 80, 160, 300, 300]


def test_in_backoff_until_the_period_has_passed(clock: FakeClock) -> None:
    backoff = Backoff(clock)
    assert not backoff.in_backoff("k")
    backoff.next("k")
    clock.advance(9.999)
    assert backoff.in_backoff("k")
    clock.advance(0.001)
    assert not backoff.in_backoff("k")
    backoff.next("k")  # 20 s now
    clock.advance(19)
    assert backoff.in_backoff("k")
    assert not backoff.in_backoff("other-key")


def test_entries_expire_after_twice_the_maximum(clock: FakeClock) -> None:
    backoff = Backoff(clock)
    for _ in range(6):
        backoff.next("k")
    assert backoff.period("k") == 300
    clock.advance(600)
    assert backoff.period("k") == 300  # not yet: expiry needs more than 600 s
    backoff.gc()
    assert len(backoff) == 1
    clock.advance(0.5)
    assert backoff.period("k") is None and not backoff.in_backoff("k")
    backoff.gc()
    assert len(backoff) == 0
    assert backoff.next("k") == 10  # starts over


def test_expired_entry_starts_over_without_gc(clock: FakeClock) -> None:
    backoff = Backoff(clock)
    backoff.next("k")
    backoff.next("k")
    clock.advance(601)
    assert backoff.next("k") == 10


def test_manager_backs_off_per_pod_and_image(tmp_path: Path, clock: FakeClock) -> None:
    service = FakeImageService(clock=clock, pull_error=NotFoundError("manifest unknown"))
    rig = make_rig(tmp_path, clock, service=service)
    pod_a, pod_b = make_pod(uid="a"), make_pod(uid="b", name="other")
    image = "registry.example/team/app:v1"
    with rig.manager:
        assert rig.ensure(image, "Always", pod=pod_a).error == "ErrImagePull"
        assert rig.ensure(image, "Always", pod=pod_a).error == "ImagePullBackOff"
        # another pod, or another spelling of the image, has its own back-off
        assert rig.ensure(image, "Always", pod=pod_b).error == "ErrImagePull"
        assert rig.ensure("registry.example/team/app:v2", "Always", pod=pod_a).error == (
            "ErrImagePull"
        )
        assert rig.manager.backoff.period(f"a_{image}") == 10
        # the pull in back-off still wrote and removed an intent (one pulled/failed per intent)
        assert rig.pull_manager is not None
        assert rig.pull_manager.store.list_intents().items == []
        assert rig.pull_manager.intents_in_flight(image) == 0
        # after the period the pull is tried again, and the next back-off is twice as long
        clock.advance(10)
        assert rig.ensure(image, "Always", pod=pod_a).error == "ErrImagePull"
        assert rig.manager.backoff.period(f"a_{image}") == 20
    assert rig.events.reasons().count("BackOff") == 1
    backoff_event = rig.events.events[rig.events.reasons().index("BackOff")]
    # the event says only that; the returned message also carries the previous error
    assert backoff_event.message == f'Back-off pulling image "{image}"'
    assert backoff_event.type == "Normal"


def test_success_runs_backoff_gc(tmp_path: Path, clock: FakeClock) -> None:
    rig = make_rig(tmp_path, clock)
    rig.manager.backoff.next("stale")
    clock.advance(601)
    with rig.manager:
        assert rig.ensure("registry.example/team/app:v1", "Always").ok
    assert len(rig.manager.backoff) == 0


@pytest.mark.parametrize(("qps", "burst"), [(1.0, 3), (0.5, 1)])
def test_token_bucket(clock: FakeClock, qps: float, burst: int) -> None:
    bucket = TokenBucket(qps, burst, clock)
    assert [bucket.try_accept() for _ in range(burst + 1)] == [True] * burst + [False]
    clock.advance(1 / qps - 0.001)
    assert not bucket.try_accept()
    clock.advance(0.001)
    assert bucket.try_accept() and not bucket.try_accept()
    clock.advance(1000)  # refills only up to the burst
    assert sum(bucket.try_accept() for _ in range(burst + 5)) == burst


def test_token_bucket_with_no_burst_refuses_everything(clock: FakeClock) -> None:
    bucket = TokenBucket(2000.0, 0, clock)
    clock.advance(10)
    assert not bucket.try_accept()
    with pytest.raises(ValueError):
        TokenBucket(0, 10, clock)


def test_rate_limited_manager(tmp_path: Path, clock: FakeClock) -> None:
    rig = make_rig(tmp_path, clock, qps=1.0, burst=2)
    images = [f"registry.example/team/app:v{i}" for i in range(3)]
    with rig.manager:
        results = [rig.ensure(image, "Always") for image in images]
        assert [r.error for r in results] == [None, None, "ErrImagePull"]
        assert results[2].message == "pull QPS exceeded" and not results[2].pulled
        clock.advance(1)
        assert rig.ensure(images[0], "Always").ok  # a token came back
    assert rig.service.calls.count("pull") == 3
