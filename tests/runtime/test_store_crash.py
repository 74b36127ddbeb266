"""Crash safety of the image store: SIGKILL pulling processes at random instants.

``store_crash_child.py`` is a fork server: for every run it forks a worker that opens the store
and pulls, removes and garbage-collects from several threads, with blobs written in small chunks
so that kills land mid-download. After each kill a fresh :class:`LocalImageService` opens the
same root and must find ``tmp/`` swept and list only complete images: every name leads, through
the stored index or manifest blob, to a config and layers whose files hash to their digests.
After ``gc()`` no blob remains that no image needs. One root is reused across all runs.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pullwarden
from pullwarden.runtime._oci import INDEX_TYPES, media_type_of, parse_index, parse_manifest
from pullwarden.runtime._oci import select_platform as pick
from pullwarden.runtime._store import LocalImageService
from tests.runtime.stub_registry import AMD64, StubRegistry

CHILD = Path(__file__).with_name("store_crash_child.py")
KILLS = 200
TIME_BUDGET = 40.0


def _blob(root: Path, digest: str) -> bytes:
    data = (root / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    assert "sha256:" + hashlib.sha256(data).hexdigest() == digest, f"blob {digest} is damaged"
    return data


def _image_blobs(root: Path, top: str, image_id: str) -> set[str]:
    """Walk one name's content from its top-level blob; every file must hash right."""
    needed = {top}
    body = _blob(root, top)
    media_type = media_type_of(body, "")
    if media_type in INDEX_TYPES:
        entry = pick(parse_index(body, media_type).manifests, AMD64)
        needed.add(entry.digest)
        body = _blob(root, entry.digest)
        media_type = media_type_of(body, "")
    manifest = parse_manifest(body, media_type)
    assert manifest.config.digest == image_id
    for descriptor in (manifest.config, *manifest.layers):
        assert len(_blob(root, descriptor.digest)) == descriptor.size
        needed.add(descriptor.digest)
    return needed


def _check_store(root: Path, collect: bool) -> int:
    """Open the store as a restart would and check it; returns how many images it lists."""
    with LocalImageService(root, client=StubRegistry(), platform=AMD64) as store:
        assert os.listdir(root / "tmp") == [], "start-up left temp files"
        images = store.list_images()
        needed: set[str] = set()
        for image in images:
            assert image.repo_digests, image
            for name in image.repo_digests:
                needed |= _image_blobs(root, name.partition("@")[2], image.id)
            for tag in image.repo_tags:
                status = store.image_status(tag)
                assert status is not None and status.id == image.id
        if collect:
            store.gc()
            present = {"sha256:" + n for n in os.listdir(root / "blobs" / "sha256")}
            assert present == needed, f"unreferenced after gc: {sorted(present - needed)}"
        return len(images)


def test_sigkill_mid_pull_never_registers_a_half_image(tmp_path: Path, rng: random.Random) -> None:
    # rng: seeded from the run's seed, reported on failure (tests/conftest.py)
    root = tmp_path / "store"
    src = str(Path(pullwarden.__file__).resolve().parent.parent)
    repo_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, repo_root, env.get("PYTHONPATH")]))
    server = subprocess.Popen(
        [sys.executable, str(CHILD), str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    assert server.stdin is not None and server.stdout is not None
    worker = 0
    started = time.monotonic()
    mid_download = listed_total = max_listed = 0
    try:
        assert server.stdout.readline() == b"serving\n"
        for i in range(KILLS):
            server.stdin.write(f"{rng.randrange(1 << 30)}\n".encode())
            server.stdin.flush()
            line = server.stdout.readline().split()
            assert line[:1] == [b"pid"], line
            worker = int(line[1])
            if i % 6 == 0:
                time.sleep(rng.uniform(0, 0.004))  # during start-up: the sweep, the index read
            else:
                assert server.stdout.readline() == b"ready\n", "the worker died on its own"
                time.sleep(rng.uniform(0, 0.06))
            with contextlib.suppress(ProcessLookupError):  # reported below if it died early
                os.kill(worker, signal.SIGKILL)
            status = server.stdout.readline().split()
            if status == [b"ready"]:  # killed just after start-up
                status = server.stdout.readline().split()
            worker = 0
            assert status[:1] == [b"exit"] and os.WIFSIGNALED(int(status[1])), status
            assert os.WTERMSIG(int(status[1])) == signal.SIGKILL, "the worker failed on its own"
            tmp = root / "tmp"
            if tmp.is_dir() and any(e.is_dir() for e in os.scandir(tmp)):
                mid_download += 1
            count = _check_store(root, collect=i % 2 == 1)
            listed_total += count
            max_listed = max(max_listed, count)
    finally:
        if worker:
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)
        server.stdin.close()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        server.stdout.close()
    elapsed = time.monotonic() - started

    _check_store(root, collect=True)
    print(
        f"\n{KILLS} kills in {elapsed:.1f}s; killed mid-download {mid_download} times; "
        f"{listed_total / KILLS:.1f} images listed on average, at most {max_listed}"
    )
    assert elapsed < TIME_BUDGET
    assert mid_download >= KILLS // 4, "too few kills landed during a download"
    assert max_listed >= 3, "the workers never got images registered"
