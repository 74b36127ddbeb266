"""The pull contract of LocalImageService: returns ⇒ committed, raises ⇒ nothing committed.

Cancellation at each stage is exercised against the real registry in
tests/integration/test_cancel_real.py; these cover the store's own moments, with the stub.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

import pullwarden.runtime._store as store_module
from pullwarden._cancel import CancelToken
from pullwarden.errors import PullCancelledError
from pullwarden.runtime import LocalImageService, PullProgress
from tests.runtime.stub_registry import StubRegistry, random_layer

REF = "127.0.0.1:5000/ns/hello:v1"


def named(root: Path, ref: str) -> bool:
    index = root / "index.json"
    return index.exists() and ref in json.loads(index.read_bytes())["refs"]


@pytest.fixture
def stub() -> StubRegistry:
    stub = StubRegistry()
    stub.add_image(REF, [random_layer(random.Random(1), 2000)])
    return stub


def test_a_failing_directory_fsync_after_the_commit_is_not_an_error(
    tmp_path: Path, stub: StubRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """index.json was renamed into place: the pull committed, so it must not raise."""
    root = tmp_path / "store"

    def broken_fsync(path: Path) -> None:
        raise OSError(5, "Input/output error")

    with LocalImageService(root, client=stub) as svc:
        monkeypatch.setattr(store_module, "_fsync_dir", broken_fsync)
        image_id = svc.pull_image(REF)
        assert named(root, REF)
        assert svc.image_status(REF) is not None
        assert svc.image_status(REF).id == image_id  # type: ignore[union-attr]


def test_a_cancel_after_the_last_blob_stops_the_commit(tmp_path: Path, stub: StubRegistry) -> None:
    root = tmp_path / "store"
    token = CancelToken()

    def on_progress(p: PullProgress) -> None:
        if p.kind == "layer" and p.done == p.total:
            token.cancel()

    with LocalImageService(root, client=stub) as svc:
        with pytest.raises(PullCancelledError):
            svc.pull_image(REF, on_progress=on_progress, cancel=token)
        assert not named(root, REF)
        assert sorted(p.name for p in (root / "tmp").iterdir()) == []
        svc.pull_image(REF)
        assert named(root, REF)


def test_a_lease_that_cannot_be_removed_after_the_commit_is_not_an_error(
    tmp_path: Path, stub: StubRegistry, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Releasing the pull's lease runs after the commit: it must not make the pull raise."""
    root = tmp_path / "store"
    real_remove = os.remove

    def refusing_remove(path: str | os.PathLike[str]) -> None:
        if os.fspath(path).endswith(".lease"):
            raise PermissionError(13, "Permission denied", os.fspath(path))
        real_remove(path)

    with LocalImageService(root, client=stub) as svc:
        monkeypatch.setattr(os, "remove", refusing_remove)
        monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: refusing_remove(self))
        image_id = svc.pull_image(REF)
        assert named(root, REF)
        status = svc.image_status(REF)
        assert status is not None and status.id == image_id
