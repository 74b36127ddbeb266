"""Crash safety: SIGKILL a process writing records at random instants; no file is ever torn.

A child process (``crash_child.py``) writes and deletes intents and records of sizes from a few
bytes to several hundred kilobytes through :class:`FileRecordStore` and is killed at random
moments, some during the start-up migration (the parent plants v1alpha1 files between runs).
Afterwards every ``sha256-*`` file must decode as the right kind under the right name; the only
other entries allowed are ``.tmp`` leftovers.  One directory is reused across all runs.

Interpreter start-up dominates the cost of a run, so the next child is started (it imports and
then waits on stdin) while the current one is still writing; only one child ever touches the
directory at a time.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pullwarden
from pullwarden.records._codec import V1ALPHA1, V1BETA1, decode_versioned, encode
from pullwarden.records._fs import FileRecordStore, file_name_for
from pullwarden.records._model import ImagePulledRecord, ImagePullIntent

CHILD = Path(__file__).with_name("crash_child.py")
KILLS = 220


def _plant_alpha(root: Path, rng: random.Random) -> None:
    """Put a v1alpha1 file in place (atomically) for the next child's migration to rewrite."""
    obj: ImagePullIntent | ImagePulledRecord
    if rng.random() < 0.5:
        obj = ImagePullIntent(f"planted/alpha:{rng.randrange(5)}")
        target = root / "image_manager" / "pulling" / file_name_for(obj.image)
    else:
        when = datetime(2024, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(10**7))
        obj = ImagePulledRecord(f"sha256:{rng.randrange(5):064x}", when, {})
        target = root / "image_manager" / "pulled" / file_name_for(obj.image_ref)
    tmp = target.with_name(target.name + ".planting")
    tmp.write_bytes(encode(obj, V1ALPHA1))
    os.replace(tmp, target)


def _check_tree(root: Path) -> tuple[int, int]:
    """Every record-named file decodes correctly; returns (record files, leftover .tmp files)."""
    files = tmps = 0
    for sub, cls in (("pulling", ImagePullIntent), ("pulled", ImagePulledRecord)):
        for entry in os.scandir(root / "image_manager" / sub):
            assert entry.is_file(follow_symlinks=False), entry.path
            if entry.name.endswith(".tmp"):
                tmps += 1
                continue
            assert entry.name.startswith("sha256-"), entry.path
            obj, version = decode_versioned(Path(entry.path).read_bytes())  # raises if torn
            assert type(obj) is cls, entry.path
            assert version in (V1ALPHA1, V1BETA1)
            key = obj.image if isinstance(obj, ImagePullIntent) else obj.image_ref
            assert entry.name == file_name_for(key), entry.path
            files += 1
    return files, tmps


def test_sigkill_never_leaves_a_torn_file(tmp_path: Path, rng: random.Random) -> None:
    # rng: seeded from the run's seed, reported on failure (tests/conftest.py)
    root = tmp_path / "kubelet"
    FileRecordStore(root)
    dirs = [root / "image_manager" / "pulling", root / "image_manager" / "pulled"]
    # The child imports this very checkout of pullwarden, whatever is installed.
    src = str(Path(pullwarden.__file__).resolve().parent.parent)
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [src, env.get("PYTHONPATH")]))

    def spawn() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, str(CHILD), str(root), str(rng.randrange(1 << 30))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
        )

    started = time.monotonic()
    tmp_seen = 0
    upcoming: subprocess.Popen[bytes] | None = spawn()
    try:
        for i in range(KILLS):
            child, upcoming = upcoming, None
            assert child is not None
            assert child.stdin is not None and child.stdout is not None
            if i % 4 == 0:
                _plant_alpha(root, rng)
            child.stdin.write(b"go\n")
            child.stdin.flush()
            upcoming = spawn()
            if i % 5 == 0:
                # Anywhere from the start-up migration into the first writes.
                time.sleep(rng.uniform(0, 0.03))
            else:
                assert child.stdout.readline() == b"ready\n"
                time.sleep(rng.uniform(0, 0.03))
            assert child.poll() is None, "the child died on its own"
            child.send_signal(signal.SIGKILL)
            child.wait()
            child.stdin.close()
            child.stdout.close()
            if any(n.endswith(".tmp") for d in dirs for n in os.listdir(d)):
                tmp_seen += 1
            if i % 20 == 0:
                _check_tree(root)
    finally:
        if upcoming is not None:
            upcoming.kill()
            upcoming.wait()
            for stream in (upcoming.stdin, upcoming.stdout):
                if stream is not None:
                    stream.close()
    elapsed = time.monotonic() - started

    files, tmps = _check_tree(root)
    assert files > 0
    # A store opened afterwards reads everything and migrates what is left in v1alpha1.
    store = FileRecordStore(root)
    assert store.migration_report is not None and store.migration_report.ok
    assert store.list_intents().ok and store.list_pulled_records().ok
    for d in dirs:
        for name in os.listdir(d):
            if not name.endswith(".tmp"):
                assert decode_versioned((d / name).read_bytes())[1] == V1BETA1
    print(
        f"\n{KILLS} kills in {elapsed:.1f}s; .tmp files present after {tmp_seen} kills; "
        f"finally {files} record files, {tmps} stale .tmp files"
    )
