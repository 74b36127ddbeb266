"""CancelToken: first cancel wins, callbacks wake blocked work, children follow their parent."""

from __future__ import annotations

import threading

import pytest

from pullwarden._cancel import CancelToken
from pullwarden.errors import PullCancelledError, RegistryUnavailableError


def test_first_cancel_wins() -> None:
    token = CancelToken()
    assert not token.cancelled and token.error is None
    token.raise_if_cancelled()
    assert token.cancel(RegistryUnavailableError("no progress")) is True
    assert token.cancel(PullCancelledError("late")) is False
    with pytest.raises(RegistryUnavailableError, match="no progress"):
        token.raise_if_cancelled()


def test_default_error_is_a_cancellation() -> None:
    token = CancelToken()
    token.cancel()
    assert isinstance(token.error, PullCancelledError)


def test_callback_runs_on_cancel_and_not_after_the_block() -> None:
    token = CancelToken()
    hits: list[str] = []
    with token.on_cancel(lambda: hits.append("inside")):
        pass
    with token.on_cancel(lambda: hits.append("during")):
        token.cancel()
    with token.on_cancel(lambda: hits.append("already")):
        assert hits == ["during", "already"]
    token.cancel()
    assert hits == ["during", "already"]


def test_a_failing_callback_does_not_stop_the_others() -> None:
    token = CancelToken()
    hits: list[int] = []

    def boom() -> None:
        raise RuntimeError("boom")

    with token.on_cancel(boom), token.on_cancel(lambda: hits.append(1)):
        token.cancel()
    assert hits == [1]


def test_wait_wakes_on_cancel() -> None:
    token = CancelToken()
    timer = threading.Timer(0.05, token.cancel)
    timer.start()
    assert token.wait(5) is True
    timer.join()
    assert CancelToken().wait(0.01) is False


def test_child_follows_parent_with_its_error() -> None:
    parent = CancelToken()
    child = parent.child()
    other = parent.child()
    other.cancel()
    assert not parent.cancelled
    parent.cancel(PullCancelledError("interrupted by SIGINT"))
    assert child.cancelled and str(child.error) == "interrupted by SIGINT"
    assert str(other.error) == "cancelled"  # its own cancel came first


def test_child_of_a_cancelled_parent_starts_cancelled() -> None:
    parent = CancelToken()
    parent.cancel()
    assert parent.child().cancelled


def test_released_children_do_not_accumulate() -> None:
    parent = CancelToken()
    for _ in range(1000):
        parent.child().release()
    child = parent.child()
    assert len(parent._callbacks) == 1
    parent.cancel()
    assert child.cancelled
