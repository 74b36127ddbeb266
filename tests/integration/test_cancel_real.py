"""Cancelled and stalled pulls from the real docker-registry, through a throttled loopback link.

The contract (runtime.base.ImageService.pull_image): a pull that returns has committed; a pull
that raises has committed nothing.  Once its token is cancelled a pull raises the token's error
within a second, whether it is waiting for a manifest, downloading blobs or about to commit,
and a later pull of the same image succeeds.  A pull whose blob bytes stop arriving fails after
the store's ``progress_timeout``; a slow one that keeps making progress does not.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pullwarden._cancel import CancelToken
from pullwarden.errors import PullCancelledError, RegistryUnavailableError
from pullwarden.runtime import (
    BuiltImage,
    LocalImageService,
    PullProgress,
    RegistryClient,
    build_image,
    push_layout,
    random_layer,
)
from tests.integration.infra import Registry
from tests.integration.throttle import ThrottledLink

REPOSITORY = "ns/cancel-big"
LAYER_BYTES = 1_500_000
CANCEL_BOUND = 1.0  # seconds from cancel() to pull_image raising


@dataclass(frozen=True)
class BigImage:
    registry: Registry
    built: BuiltImage

    @property
    def blob_bytes(self) -> int:
        return self.built.total_size - self.built.size


@pytest.fixture(scope="module")
def big_image(registry_noauth: Registry, tmp_path_factory: pytest.TempPathFactory) -> BigImage:
    """Two incompressible 1.5 MB layers in the shared no-auth registry."""
    layout = tmp_path_factory.mktemp("cancel-layout")
    layers = [random_layer(LAYER_BYTES, seed) for seed in (11, 12)]
    built = build_image(layout, "big", layers, gzip_level=1)
    with RegistryClient() as client:
        push_layout(client, layout, "big", registry_noauth.ref(f"{REPOSITORY}:v1"))
    return BigImage(registry_noauth, built)


@pytest.fixture
def link(big_image: BigImage) -> Iterator[ThrottledLink]:
    with ThrottledLink(("127.0.0.1", big_image.registry.port)) as proxy:
        yield proxy


def ref_via(link: ThrottledLink) -> str:
    return f"{link.host}/{REPOSITORY}:v1"


def open_store(tmp_path: Path, **options: object) -> LocalImageService:
    client = RegistryClient(retries=1, retry_backoff=0.05)
    return LocalImageService(tmp_path / "store", client=client, **options)  # type: ignore[arg-type]


def named_in_index(tmp_path: Path, ref: str) -> bool:
    index = tmp_path / "store" / "index.json"
    if not index.exists():
        return False
    return ref in json.loads(index.read_bytes())["refs"]


def leftovers(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in (tmp_path / "store" / "tmp").iterdir())


class Canceller:
    """Cancels a token from another thread and records when."""

    def __init__(self, token: CancelToken) -> None:
        self.token = token
        self.at: float | None = None

    def cancel(self) -> None:
        self.at = time.monotonic()
        self.token.cancel()

    def after(self, wait: Callable[[], object], delay: float) -> None:
        def run() -> None:
            wait()
            time.sleep(delay)
            self.cancel()

        threading.Thread(target=run, daemon=True).start()


def expect_cancelled(
    svc: LocalImageService, ref: str, token: CancelToken, canceller: Canceller, **kwargs: object
) -> None:
    with pytest.raises(PullCancelledError) as info:
        svc.pull_image(ref, cancel=token, **kwargs)  # type: ignore[arg-type]
    raised = time.monotonic()
    assert info.value is token.error
    assert canceller.at is not None, "the pull ended before it was cancelled"
    assert raised - canceller.at < CANCEL_BOUND, f"took {raised - canceller.at:.2f}s"


def assert_not_committed_then_repull(
    svc: LocalImageService, tmp_path: Path, link: ThrottledLink, big_image: BigImage
) -> None:
    ref = ref_via(link)
    assert svc.image_status(ref) is None
    assert not named_in_index(tmp_path, ref)
    assert leftovers(tmp_path) == [], "the cancelled pull left its lease or downloads"
    link.rate = None
    link.resume()
    assert svc.pull_image(ref) == big_image.built.config_digest
    assert named_in_index(tmp_path, ref)


def test_cancel_while_the_manifest_trickles_in(
    big_image: BigImage, link: ThrottledLink, tmp_path: Path
) -> None:
    link.rate = 50  # bytes per second: the manifest answer takes many seconds
    token = CancelToken()
    canceller = Canceller(token)
    canceller.after(lambda: link.wait_for_request("/manifests/"), 0.3)
    with open_store(tmp_path) as svc:
        expect_cancelled(svc, ref_via(link), token, canceller)
        assert not any("/blobs/" in path for _, path in link.requests)
        assert_not_committed_then_repull(svc, tmp_path, link, big_image)


def test_cancel_during_the_blob_downloads(
    big_image: BigImage, link: ThrottledLink, tmp_path: Path
) -> None:
    link.rate = 200_000  # per connection: the layers take seconds
    token = CancelToken()
    canceller = Canceller(token)
    canceller.after(lambda: link.wait_for_request("/blobs/"), 0.4)
    with open_store(tmp_path) as svc:
        expect_cancelled(svc, ref_via(link), token, canceller)
        assert link.forwarded < big_image.blob_bytes  # it really stopped half-way
        assert_not_committed_then_repull(svc, tmp_path, link, big_image)


def test_cancel_just_before_the_commit(
    big_image: BigImage, link: ThrottledLink, tmp_path: Path
) -> None:
    """Every blob is on disk when the cancel comes: the commit must still not happen."""
    token = CancelToken()
    canceller = Canceller(token)
    blobs = {big_image.built.config_digest, *big_image.built.layer_digests}
    complete: set[str] = set()

    def on_progress(p: PullProgress) -> None:
        if p.kind != "manifest" and p.total and p.done == p.total:
            complete.add(p.digest)
            if complete == blobs:
                canceller.cancel()

    with open_store(tmp_path) as svc:
        expect_cancelled(svc, ref_via(link), token, canceller, on_progress=on_progress)
        assert_not_committed_then_repull(svc, tmp_path, link, big_image)


def test_cancel_after_the_commit_is_not_an_error(
    big_image: BigImage, link: ThrottledLink, tmp_path: Path
) -> None:
    token = CancelToken()
    with open_store(tmp_path) as svc:
        image_id = svc.pull_image(ref_via(link), cancel=token)
        token.cancel()
        assert image_id == big_image.built.config_digest
        assert named_in_index(tmp_path, ref_via(link))
        # a cancelled token stops the next pull at once, and takes nothing away
        with pytest.raises(PullCancelledError):
            svc.pull_image(ref_via(link), cancel=token)
        assert svc.image_status(ref_via(link)) is not None


def test_a_stalled_download_fails_after_the_progress_timeout(
    big_image: BigImage, link: ThrottledLink, tmp_path: Path
) -> None:
    link.stall_after = 300_000  # answer bytes: the manifest, the config and part of a layer
    caller = CancelToken()
    with open_store(tmp_path, progress_timeout=1.0) as svc:
        started = time.monotonic()
        with pytest.raises(RegistryUnavailableError) as info:
            svc.pull_image(ref_via(link), cancel=caller)
        took = time.monotonic() - started
        assert not caller.cancelled  # the watchdog cancels the pull, not the caller's token
        assert 1.0 <= took < 3.0, f"took {took:.2f}s"
        message = str(info.value)
        assert f"{REPOSITORY}:v1" in message and "1s" in message, message
        assert "progress" in message, message
        assert_not_committed_then_repull(svc, tmp_path, link, big_image)


def test_a_slow_download_that_progresses_is_not_cancelled(
    big_image: BigImage, link: ThrottledLink, tmp_path: Path
) -> None:
    link.rate = 700_000  # about 2.5 s for the two layers in parallel: longer than the timeout
    with open_store(tmp_path, progress_timeout=1.0) as svc:
        started = time.monotonic()
        assert svc.pull_image(ref_via(link)) == big_image.built.config_digest
        assert time.monotonic() - started > 1.5  # it did outlast the progress timeout


# --- Ctrl-C and SIGTERM in `pullwarden pull` ---------------------------------------------------


def pullwarden(*args: str, store: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PULLWARDEN_STORE": str(store)}
    cmd = [sys.executable, "-m", "pullwarden.cli", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60, check=False)


@pytest.mark.parametrize(
    ("signum", "status", "wait_for"),
    [
        (signal.SIGINT, 130, "/blobs/"),
        (signal.SIGTERM, 143, "/blobs/"),
        (signal.SIGINT, 130, "/manifests/"),
    ],
    ids=["sigint-blobs", "sigterm-blobs", "sigint-manifest"],
)
def test_pull_interrupted_by_a_signal(
    big_image: BigImage,
    link: ThrottledLink,
    tmp_path: Path,
    signum: signal.Signals,
    status: int,
    wait_for: str,
) -> None:
    link.rate = 20 if wait_for == "/manifests/" else 100_000  # the pull takes many seconds
    store = tmp_path / "store"
    env = {**os.environ, "PULLWARDEN_STORE": str(store)}
    cmd = [sys.executable, "-m", "pullwarden.cli", "pull", "-q", ref_via(link)]
    process = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert link.wait_for_request(wait_for, timeout=20), link.requests
        time.sleep(0.3)
        assert process.poll() is None, "the pull ended before the signal"
        sent = time.monotonic()
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=10)
        took = time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == status, stderr
    assert took < 2.0, f"exited {took:.2f}s after the signal"
    assert "Traceback" not in stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert lines[0].startswith(f"interrupted by {signum.name}: {ref_via(link)} was not pulled")
    assert "nothing was committed" in lines[0]
    assert stdout == ""
    listed = pullwarden("images", "-o", "json", store=store)
    assert listed.returncode == 0, listed.stderr
    assert json.loads(listed.stdout)["images"] == []
