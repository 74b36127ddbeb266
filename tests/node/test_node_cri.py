"""The node on a CRI runtime: which endpoint wins, GC on ImageFsInfo, a runtime that fails.

A scripted CRI server (tests/runtime/cri_fake.py) stands in for containerd where the test needs
an answer containerd would not give on demand (a pinned image, ListImages failing); the real
containerd is in tests/integration/test_cri_real.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import grpc
import pytest

from pullwarden.config import KubeletConfig
from pullwarden.events import ListRecorder
from pullwarden.node import Node
from pullwarden.objects import Container, Objects, Pod
from pullwarden.runtime import CRIImageService, LocalImageService
from pullwarden.testing import FakeClock
from tests.runtime.cri_fake import ID, NAME, FakeCRI, fake_cri, image
from tests.support import T0

PINNED = "sha256:" + "e" * 64


@pytest.fixture
def fake() -> Iterator[FakeCRI]:
    directory = Path(tempfile.mkdtemp(prefix="pwnode.", dir="/tmp"))
    try:
        with fake_cri(directory) as server:
            server.script.status[NAME] = server.script.status[ID] = image()
            server.script.images = [image(), image(PINNED, ("127.0.0.1:5000/pause:3",), True)]
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


@pytest.mark.parametrize(
    ("config", "flag", "backend"),
    [
        ({}, None, LocalImageService),
        ({"container_runtime_endpoint": "FAKE"}, None, CRIImageService),
        ({"image_service_endpoint": "FAKE", "container_runtime_endpoint": "/nowhere"}, None,
         CRIImageService),
        ({}, "FAKE", CRIImageService),
        ({"container_runtime_endpoint": "/nowhere"}, "FAKE", CRIImageService),
        ({"container_runtime_endpoint": "/nowhere"}, "", LocalImageService),
    ],
    ids=["default", "config", "image-endpoint-first", "flag", "flag-beats-config", "flag-empty"],
)  # fmt: skip
def test_which_image_service_the_node_uses(
    fake: FakeCRI,
    tmp_path: Path,
    config: dict[str, str],
    flag: str | None,
    backend: type,
) -> None:
    fields = {k: v.replace("FAKE", fake.endpoint) for k, v in config.items()}
    cfg = KubeletConfig(
        image_service_endpoint=fields.get("image_service_endpoint", ""),
        container_runtime_endpoint=fields.get("container_runtime_endpoint", ""),
    )
    endpoint = None if flag is None else flag.replace("FAKE", fake.endpoint)
    with Node(tmp_path, cfg, runtime_endpoint=endpoint, node_credentials=False) as node:
        assert type(node.images) is backend
    assert not (tmp_path / "images").exists() or backend is LocalImageService


def cri_node(fake: FakeCRI, root: Path, **config: object) -> Node:
    cfg = KubeletConfig(image_minimum_gc_age=timedelta(minutes=2), **config)  # type: ignore[arg-type]
    return Node(
        root,
        cfg,
        runtime_endpoint=fake.endpoint,
        node_credentials=False,
        clock=FakeClock(T0),
        events=ListRecorder(),
    )


def test_gc_sizes_the_runtime_s_filesystem_and_never_removes_a_pinned_image(
    fake: FakeCRI, tmp_path: Path
) -> None:
    with cri_node(fake, tmp_path / "node") as node:
        assert isinstance(node.clock, FakeClock)
        node.gc.mark_used([])  # both images are first seen now
        node.collect_garbage()
        node.clock.advance(3600)
        report = node.collect_garbage(force_all_unused=True)
    assert [i.id for i in report.removed] == [ID]  # the pinned image stays
    assert [r.image.image for m, r in fake.requests if m == "RemoveImage"] == [ID]
    assert "ImageFsInfo" in fake.methods()  # the mountpoint came from the runtime


def test_a_failing_runtime_after_the_pods_is_an_event_not_a_crash(
    fake: FakeCRI, tmp_path: Path
) -> None:
    pod = Pod("uid-1", "default", "p", containers=(Container("c", NAME, "IfNotPresent"),))
    with cri_node(fake, tmp_path / "node") as node:
        fake.script.fail["ListImages"] = (grpc.StatusCode.UNAVAILABLE, "transport is closing")
        [outcome] = node.run(Objects(pods=[pod]))
        events = node.events
    assert outcome.ready  # the image is there and preloaded: GC failing afterwards changes nothing
    assert isinstance(events, ListRecorder)
    [gc_failed] = [e for e in events.events if e.reason == "ImageGCFailed"]
    assert gc_failed.type == "Warning" and "transport is closing" in gc_failed.message


def test_nothing_but_a_runtime_endpoint_imports_grpc() -> None:
    """`import pullwarden` and a node on the embedded store never load grpc (start-up cost)."""
    probe = (
        "import sys, pullwarden, pullwarden.node, pullwarden.runtime, pullwarden.cli\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('grpc', 'cri_api')))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"


def test_a_first_start_on_images_already_there_says_they_are_preloaded(
    fake: FakeCRI, tmp_path: Path
) -> None:
    """Another root (or ctr) filled the runtime: this root's node pulled none of its images."""
    for start in range(2):
        with cri_node(fake, tmp_path / "node") as node:
            assert isinstance(node.events, ListRecorder)
            warned = [e for e in node.events.events if e.reason == "ImagesPreloaded"]
        if start == 0:
            [event] = warned
            assert event.type == "Warning"
            assert "2 image(s)" in event.message and "NeverVerifyPreloadedImages" in event.message
        else:
            assert warned == []  # the root has its record directory now
