"""The public facade: what ``import pullwarden`` offers, and what it does not."""

from __future__ import annotations

import subprocess
import sys

import pullwarden
import pullwarden._clock
import pullwarden.errors
import pullwarden.testing


def test_every_error_class_is_exported_from_the_root() -> None:
    for name in pullwarden.errors.__all__:
        assert getattr(pullwarden, name) is getattr(pullwarden.errors, name)
        assert name in pullwarden.__all__


def test_the_supported_names() -> None:
    from pullwarden.imagemanager import EnsureResult, ImageManager
    from pullwarden.node import Node
    from pullwarden.pullmanager import Protections
    from pullwarden.records import CachedRecordStore, FileRecordStore
    from pullwarden.runtime import LocalImageService, RegistryClient

    for obj in (
        EnsureResult,
        ImageManager,
        Node,
        Protections,
        CachedRecordStore,
        FileRecordStore,
        RegistryClient,
        LocalImageService,
    ):
        assert getattr(pullwarden, obj.__name__) is obj
    assert set(pullwarden.__all__) == {n for n in dir(pullwarden) if n in pullwarden.__all__}


def test_the_test_double_lives_in_pullwarden_testing() -> None:
    assert "FakeClock" not in pullwarden.__all__
    assert not hasattr(pullwarden, "FakeClock")
    assert not hasattr(pullwarden._clock, "FakeClock")


def test_importing_pullwarden_does_not_import_the_cli() -> None:
    code = "import sys, pullwarden; print(sorted(m for m in sys.modules if 'cli' in m))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert "pullwarden.cli" not in out
