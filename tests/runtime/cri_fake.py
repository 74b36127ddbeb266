"""A scriptable CRI v1 server on a unix socket, for faults containerd does not produce on demand.

containerd itself is tested in tests/integration; this server plays a runtime that reports a
different ref from ``PullImage`` than from ``ImageStatus`` (CRI-O before 1.36), hangs in a
call, answers with any status and text, serves an older CRI version, or has no CRI plugin.
Every request it receives is kept in :attr:`FakeCRI.requests` (method name, request message).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cri_api.v1 import api_pb2 as api
from cri_api.v1 import api_pb2_grpc as services

ID = "sha256:" + "c" * 64
MANIFEST = "sha256:" + "d" * 64
NAME = "127.0.0.1:5000/ns/app:v1"


@dataclass
class Script:
    """What the fake answers; change it between calls."""

    pull_ref: str = ID
    status: dict[str, api.Image] = field(default_factory=dict)  # ref → image
    images: list[api.Image] = field(default_factory=list)
    api_version: str = "v1"
    runtime_service: bool = True
    fail: dict[str, tuple[grpc.StatusCode, str]] = field(default_factory=dict)  # method → error
    hang: set[str] = field(default_factory=set)  # methods that never answer (until released)
    after_pull: Callable[[], None] | None = None


def image(image_id: str = ID, tags: tuple[str, ...] = (NAME,), pinned: bool = False) -> api.Image:
    return api.Image(id=image_id, repo_tags=list(tags), size=1234, pinned=pinned)


class FakeCRI:
    def __init__(self, socket: Path) -> None:
        self.socket = socket
        self.endpoint = f"unix://{socket}"
        self.script = Script()
        self.requests: list[tuple[str, Any]] = []
        self.released = threading.Event()
        self.hung = threading.Event()  # set once a call started hanging
        self._server: grpc.Server | None = None

    def _enter(self, method: str, request: Any, context: grpc.ServicerContext) -> None:
        self.requests.append((method, request))
        if method in self.script.hang:
            self.hung.set()
            while not self.released.wait(0.05):
                if not context.is_active():
                    return
        if method in self.script.fail:
            code, text = self.script.fail[method]
            context.abort(code, text)

    def start(self) -> None:
        fake = self

        class Images(services.ImageServiceServicer):
            def PullImage(self, request: Any, context: grpc.ServicerContext) -> Any:
                fake._enter("PullImage", request, context)
                if fake.script.after_pull is not None:
                    fake.script.after_pull()
                return api.PullImageResponse(image_ref=fake.script.pull_ref)

            def ImageStatus(self, request: Any, context: grpc.ServicerContext) -> Any:
                fake._enter("ImageStatus", request, context)
                found = fake.script.status.get(request.image.image)
                if found is None:
                    return api.ImageStatusResponse()
                return api.ImageStatusResponse(image=found)

            def ListImages(self, request: Any, context: grpc.ServicerContext) -> Any:
                fake._enter("ListImages", request, context)
                return api.ListImagesResponse(images=fake.script.images)

            def RemoveImage(self, request: Any, context: grpc.ServicerContext) -> Any:
                fake._enter("RemoveImage", request, context)
                return api.RemoveImageResponse()

            def ImageFsInfo(self, request: Any, context: grpc.ServicerContext) -> Any:
                fake._enter("ImageFsInfo", request, context)
                usage = api.FilesystemUsage(
                    timestamp=time.time_ns(),
                    fs_id=api.FilesystemIdentifier(mountpoint=str(fake.socket.parent)),
                    used_bytes=api.UInt64Value(value=4096),
                    inodes_used=api.UInt64Value(value=7),
                )
                return api.ImageFsInfoResponse(image_filesystems=[usage])

        class Runtime(services.RuntimeServiceServicer):
            def Version(self, request: Any, context: grpc.ServicerContext) -> Any:
                fake._enter("Version", request, context)
                if not fake.script.runtime_service:
                    context.abort(grpc.StatusCode.UNIMPLEMENTED, "unknown service")
                return api.VersionResponse(
                    version="0.1.0",
                    runtime_name="fakeruntime",
                    runtime_version="9.9",
                    runtime_api_version=fake.script.api_version,
                )

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        services.add_ImageServiceServicer_to_server(Images(), server)
        services.add_RuntimeServiceServicer_to_server(Runtime(), server)
        server.add_insecure_port(self.endpoint)
        server.start()
        self._server = server

    def stop(self) -> None:
        self.released.set()
        if self._server is not None:
            self._server.stop(grace=None).wait(5)
            self._server = None

    def methods(self) -> list[str]:
        return [m for m, _ in self.requests]

    def last(self, method: str) -> Any:
        return next(r for m, r in reversed(self.requests) if m == method)


@contextmanager
def fake_cri(directory: Path) -> Iterator[FakeCRI]:
    fake = FakeCRI(directory / "cri.sock")
    fake.start()
    try:
        yield fake
    finally:
        fake.stop()
