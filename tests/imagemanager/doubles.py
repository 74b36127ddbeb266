"""Test doubles for the image manager: a scriptable image service and small builders.

``FakeImageService`` is a fault/ordering double: it records every call, raises scripted
errors, decides per credential whether a pull is allowed, can hold pulls until the test lets
them go, and can move a fake clock to make pulls take time.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from pullwarden._cancel import CancelToken
from pullwarden.credentials import Keyring, TrackedCredential
from pullwarden.events import ListRecorder
from pullwarden.imagemanager import EnsureResult, ImageManager
from pullwarden.metrics import Metrics
from pullwarden.objects import Container, Pod, Secret
from pullwarden.policy import PolicyEnforcer
from pullwarden.pullmanager import PullManager
from pullwarden.records import FileRecordStore, ImagePulledRecord
from pullwarden.records._cache import CachedRecordStore
from pullwarden.runtime import AuthConfig, FsUsage, Image, PodSandbox, ProgressCallback
from pullwarden.testing import FakeClock

IMAGE_SIZE = 4321


def image_id(name: str) -> str:
    return "sha256:" + hashlib.sha256(name.encode()).hexdigest()


@dataclass
class PullCall:
    image: str
    username: str | None  # None: anonymous
    sandbox: PodSandbox | None = None


@dataclass
class FakeImageService:
    """Images by name; ``pull_image`` adds the pulled name unless told to fail."""

    clock: FakeClock | None = None
    images: dict[str, Image] = field(default_factory=dict)
    calls: list[str] = field(default_factory=list)
    pulls: list[PullCall] = field(default_factory=list)
    inspect_error: Exception | None = None
    pull_error: Exception | None = None
    # Per pull: an error for these credentials, or None to let the pull succeed.
    check: Callable[[str, AuthConfig | None], Exception | None] | None = None
    pull_seconds: float = 0.0  # fake time each pull takes
    size_seconds: float = 0.0  # fake time the size lookup after a pull takes
    blocking: bool = False
    # A held pull stops when its cancel token is cancelled, unless this is set (a runtime that
    # ignores cancellation and finishes the pull anyway).
    ignore_cancel: bool = False

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._permits = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self.started = 0

    # -- scripting ---------------------------------------------------------------------------

    def add(self, name: str, size: int = IMAGE_SIZE) -> str:
        ref = image_id(name)
        self.images[name] = Image(ref, (name,), (), size)
        return ref

    def release(self, n: int = 1) -> None:
        """Let ``n`` held pulls (present or future) proceed."""
        with self._lock:
            self._permits += n
            self._lock.notify_all()

    def _wake(self) -> None:
        with self._lock:
            self._lock.notify_all()

    def wait_started(self, n: int, timeout: float = 5.0) -> None:
        """Wait until ``n`` pulls in total have reached the service."""
        with self._lock:
            if not self._lock.wait_for(lambda: self.started >= n, timeout):
                raise AssertionError(f"only {self.started} of {n} pulls started")

    def reset_calls(self) -> None:
        self.calls.clear()
        self.pulls.clear()

    # -- ImageService ------------------------------------------------------------------------

    def pull_image(
        self,
        image: str,
        auth: AuthConfig | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        cancel: CancelToken | None = None,
        sandbox: PodSandbox | None = None,
    ) -> str:
        with self._lock:
            self.calls.append("pull")
            self.pulls.append(PullCall(image, None if auth is None else auth.username, sandbox))
            self.started += 1
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
            self._lock.notify_all()
        try:
            if self.blocking:
                watch = cancel if cancel is not None and not self.ignore_cancel else None
                with self._lock, contextlib.ExitStack() as stack:
                    if watch is not None:
                        stack.enter_context(watch.on_cancel(self._wake))
                    if not self._lock.wait_for(
                        lambda: self._permits > 0 or (watch is not None and watch.cancelled),
                        10.0,
                    ):
                        raise AssertionError("a pull was held for 10 s")
                    if watch is not None:
                        watch.raise_if_cancelled()
                    self._permits -= 1
            if self.clock is not None and self.pull_seconds:
                self.clock.advance(self.pull_seconds)
            error = self.pull_error
            if error is None and self.check is not None:
                error = self.check(image, auth)
            if error is not None:
                raise error
            with self._lock:
                return self.add(image)
        finally:
            with self._lock:
                self.in_flight -= 1

    def image_status(self, image: str) -> Image | None:
        with self._lock:
            self.calls.append("status")
        if self.inspect_error is not None:
            raise self.inspect_error
        if self.clock is not None and self.size_seconds and image in self.images:
            self.clock.advance(self.size_seconds)
        return self.images.get(image)

    def list_images(self) -> list[Image]:
        return list(self.images.values())

    def remove_image(self, image: str) -> None:
        self.images.pop(image, None)

    def fs_usage(self) -> FsUsage:
        return FsUsage(0, 0)


def only_users(*allowed: str | None) -> Callable[[str, AuthConfig | None], Exception | None]:
    """A ``check`` that lets exactly these usernames (None: anonymous) pull."""

    def check(image: str, auth: AuthConfig | None) -> Exception | None:
        user = None if auth is None or auth.anonymous else auth.username
        if user in allowed:
            return None
        return RuntimeError(f"pull access denied for {image} ({user or 'anonymous'})")

    return check


@dataclass
class StaticKeyring:
    """A keyring that answers every lookup with the same credentials (node or plugin creds)."""

    creds: list[TrackedCredential]
    lookups: list[str] = field(default_factory=list)

    def lookup(self, image: str) -> list[TrackedCredential]:
        self.lookups.append(image)
        return list(self.creds)


def dockerconfig_secret(
    namespace: str,
    name: str,
    uid: str,
    registry: str,
    username: str,
    password: str,
) -> Secret:
    """A ``kubernetes.io/dockerconfigjson`` Secret with one registry entry."""
    auth = base64.b64encode(f"{username}:{password}".encode()).decode()
    doc = {"auths": {registry: {"auth": auth}}}
    return Secret(
        uid=uid,
        namespace=namespace,
        name=name,
        type="kubernetes.io/dockerconfigjson",
        data={".dockerconfigjson": json.dumps(doc).encode()},
    )


def make_pod(
    uid: str = "pod-uid-1",
    namespace: str = "team-a",
    name: str = "web",
    secrets: Iterable[str] = (),
) -> Pod:
    return Pod(uid=uid, namespace=namespace, name=name, image_pull_secrets=tuple(secrets))


def make_container(image: str, policy: str, name: str = "app") -> Container:
    return Container(name=name, image=image, image_pull_policy=policy)


# -- a manager wired to the fake service, a real pull manager and real records ------------------

ENSURE_REQUESTS = "kubelet_image_manager_ensure_image_requests_total"


@dataclass
class Rig:
    """An :class:`ImageManager` with everything a test wants to look at."""

    manager: ImageManager
    service: FakeImageService
    events: ListRecorder
    metrics: Metrics
    pull_manager: PullManager | None
    clock: FakeClock

    def ensure(
        self,
        image: str,
        policy: str,
        *,
        pod: Pod | None = None,
        secrets: Iterable[Secret] = (),
    ) -> EnsureResult:
        return self.manager.ensure_image_exists(
            pod or make_pod(), make_container(image, policy), list(secrets)
        )

    def requests(self, policy: str, present: str, required: str) -> float:
        labels = {"pull_policy": policy, "present_locally": present, "pull_required": required}
        return self.metrics.value(ENSURE_REQUESTS, labels) or 0.0

    def record(self, image_ref: str) -> ImagePulledRecord | None:
        assert self.pull_manager is not None
        return self.pull_manager.store.get_pulled_record(image_ref)


def make_rig(
    root: Path,
    clock: FakeClock,
    *,
    gate: bool = True,
    serial: bool = True,
    max_parallel: int | None = None,
    qps: float = 0.0,
    burst: int = 0,
    node_keyring: Keyring | None = None,
    policy: str = "NeverVerifyPreloadedImages",
    allowlist: Iterable[str] = (),
    service: FakeImageService | None = None,
    cancel: CancelToken | None = None,
    stop_grace: float = 1.0,
) -> Rig:
    service = service or FakeImageService(clock=clock)
    metrics = Metrics()
    events = ListRecorder()
    pm = None
    if gate:
        pm = PullManager(
            CachedRecordStore(FileRecordStore(root)),
            PolicyEnforcer(policy, allowlist),
            service,
            clock=clock,
            metrics=metrics,
        )
    manager = ImageManager(
        service,
        pm,
        events=events,
        node_keyring=node_keyring,
        serialize_image_pulls=serial,
        max_parallel_image_pulls=max_parallel,
        registry_pull_qps=qps,
        registry_burst=burst,
        clock=clock,
        metrics=metrics,
        cancel=cancel,
        stop_grace=stop_grace,
    )
    return Rig(manager, service, events, metrics, pm, clock)
