"""Test doubles and constants shared by the test modules."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest


@dataclass(frozen=True)
class FakeImage:
    id: str
    repo_tags: Sequence[str] = ()
    repo_digests: Sequence[str] = ()


@dataclass
class FakeImageLister:
    """Stands in for a runtime's image list (only start-up housekeeping reads it)."""

    images: list[FakeImage] = field(default_factory=list)
    fail: bool = False
    calls: int = 0

    def list_images(self) -> list[FakeImage]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("runtime is down")
        return list(self.images)


T0 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def unshared(s: str) -> str:
    """An equal string that is another object (CPython shares "" and one-character strings)."""
    if len(s) < 2:
        return s
    copy = "".join(list(s))
    assert copy == s and copy is not s
    return copy


def alive(pid: int) -> bool:
    """Whether ``pid`` still runs (a zombie waiting for its reaper counts as ended)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def ends_within(pid: int, seconds: float) -> bool:
    """Whether ``pid`` ends (see :func:`alive`) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


@contextlib.contextmanager
def busy_grpc() -> Iterator[None]:
    """gRPC kept busy in this process (calls to a socket nobody serves, from another thread), as
    after a CRI test or on a node whose runtime is containerd.  With grpcio ≥ 1.80 a child that
    runs grpcio's fork handlers (subprocess forks instead of vforking when given a
    ``preexec_fn``) can then die of SIGABRT before it execs (grpc/grpc#43055)."""
    grpc = pytest.importorskip("grpc")
    channel = grpc.insecure_channel("unix:///nonexistent/pullwarden-test.sock")
    call = channel.unary_unary("/pullwarden.Test/Nothing")
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            with contextlib.suppress(grpc.RpcError):
                call(b"", timeout=0.05)

    thread = threading.Thread(target=hammer, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        channel.close()
