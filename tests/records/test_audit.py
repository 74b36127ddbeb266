"""The read-only audit of a kubelet's image_manager directory (pullwarden.records._audit)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pullwarden.records import _audit as audit
from pullwarden.records import _fs as fs
from pullwarden.records._audit import FileProblem, ProblemKind, scan
from pullwarden.records._codec import V1ALPHA1, encode
from pullwarden.records._fs import MAX_FILE_SIZE, FileRecordStore, file_name_for
from pullwarden.records._model import (
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
)

TESTDATA = Path(__file__).parent / "testdata"
T1 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
IMAGE = "repo.repo/test/test:v1"
REF = "testimageref"
IMAGE_FILE = file_name_for(IMAGE)
REF_FILE = file_name_for(REF)


def secret_rec() -> ImagePulledRecord:
    creds = ImagePullCredentials(
        kubernetes_secrets=(ImagePullSecret("uid", "default", "pull-secret", "hash"),)
    )
    return ImagePulledRecord(REF, T1, {"docker.io/testing/test": creds})


def pulling(root: Path) -> Path:
    return root / "image_manager" / "pulling"


def pulled(root: Path) -> Path:
    return root / "image_manager" / "pulled"


def test_the_old_import_path_is_the_same_audit() -> None:
    assert fs.scan is audit.scan
    assert fs.FileProblem is audit.FileProblem
    assert fs.ProblemKind is audit.ProblemKind


def test_scan_clean_and_missing(tmp_path: Path) -> None:
    assert scan(tmp_path / "nothing-here") == []
    store = FileRecordStore(tmp_path)
    store.write_intent(ImagePullIntent(IMAGE))
    store.write_pulled_record(secret_rec())
    assert scan(tmp_path) == []


def test_scan_reports_each_problem_kind(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    store.write_intent(ImagePullIntent(IMAGE))
    store.write_pulled_record(secret_rec())
    pi, pd = pulling(tmp_path), pulled(tmp_path)
    (pd / "sha256-broken").write_bytes(b"{broken")
    (pd / "sha256-config").write_bytes(
        (TESTDATA / "decode_kubelet_configuration.json").read_bytes()
    )
    (pd / "sha256-anintent").write_bytes(encode(ImagePullIntent("x")))
    (pi / "sha256-misnamed").write_bytes(encode(ImagePullIntent("y")))
    (pi / (file_name_for("old"))).write_bytes(encode(ImagePullIntent("old"), V1ALPHA1))
    (pi / (IMAGE_FILE + ".tmp")).write_bytes(b"{")
    (pi / "notes.txt").write_text("hi")
    (pi / "subdir").mkdir()
    (tmp_path / "image_manager" / "observed-preloaded").mkdir()
    (tmp_path / "image_manager" / "stray").write_text("")
    os.symlink(pi / IMAGE_FILE, pd / "sha256-link")
    os.mkdir(pd / "sha256-unreadable")
    os.mkfifo(pd / "sha256-fifo")
    with open(pd / "sha256-huge", "wb") as f:
        f.truncate(MAX_FILE_SIZE + 1)
    (pd / (REF_FILE + ".5f0c1e2d3a4b6978.tmp")).write_bytes(b"{")
    (pd / "sha256-unknownfield").write_bytes(
        b'{"kind":"ImagePulledRecord","apiVersion":"kubelet.config.k8s.io/v1beta1","x":1}'
    )

    problems = scan(tmp_path)
    assert all(isinstance(p, FileProblem) and p.message for p in problems)
    got = {(os.path.relpath(p.path, tmp_path / "image_manager"), p.kind) for p in problems}
    assert got == {
        ("pulled/sha256-broken", ProblemKind.UNDECODABLE),
        ("pulled/sha256-unknownfield", ProblemKind.UNDECODABLE),
        ("pulled/sha256-config", ProblemKind.FOREIGN_KIND),
        ("pulled/sha256-anintent", ProblemKind.FOREIGN_KIND),
        ("pulled/sha256-link", ProblemKind.UNEXPECTED_FILE),
        ("pulled/sha256-unreadable", ProblemKind.UNEXPECTED_DIRECTORY),
        ("pulled/sha256-fifo", ProblemKind.UNEXPECTED_FILE),
        ("pulled/sha256-huge", ProblemKind.TOO_LARGE),
        (f"pulled/{REF_FILE}.5f0c1e2d3a4b6978.tmp", ProblemKind.STALE_TMP),
        ("pulling/sha256-misnamed", ProblemKind.MISNAMED),
        (f"pulling/{IMAGE_FILE}.tmp", ProblemKind.STALE_TMP),
        ("pulling/notes.txt", ProblemKind.UNEXPECTED_FILE),
        ("pulling/subdir", ProblemKind.UNEXPECTED_DIRECTORY),
        ("observed-preloaded", ProblemKind.UNEXPECTED_DIRECTORY),
        ("stray", ProblemKind.UNEXPECTED_FILE),
    }
    huge = next(p for p in problems if p.kind is ProblemKind.TOO_LARGE)
    assert huge.message == (
        f"{MAX_FILE_SIZE + 1} bytes, more than the 4 MiB a record file may hold; "
        "pullwarden treats it as unreadable (every pod must verify)"
    )
    # scan changes nothing
    assert scan(tmp_path) == problems
    # v1alpha1 files are valid; they are listed only on request.
    with_old = scan(tmp_path, old_versions=True)
    assert [p for p in with_old if p not in problems] == [
        FileProblem(
            str(pi / file_name_for("old")),
            ProblemKind.OLD_VERSION,
            "stored as kubelet.config.k8s.io/v1alpha1; start-up migration rewrites it as "
            "kubelet.config.k8s.io/v1beta1",
        )
    ]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads anything")
def test_scan_unreadable_file(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    store.write_intent(ImagePullIntent(IMAGE))
    os.chmod(store.intent_path(IMAGE), 0)
    problems = scan(tmp_path)
    assert [p.kind for p in problems] == [ProblemKind.UNREADABLE]


def test_scan_reports_an_unlistable_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    FileRecordStore(tmp_path)
    real_scandir = os.scandir
    broken = str(pulled(tmp_path))

    def scandir(path: str) -> object:
        if os.fspath(path) == broken:
            raise PermissionError(13, "Permission denied")
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    assert scan(tmp_path) == [
        FileProblem(broken, ProblemKind.UNREADABLE, "cannot list: Permission denied")
    ]


def test_scan_of_an_unlistable_root(tmp_path: Path) -> None:
    (tmp_path / "image_manager").write_text("a file where the directory belongs")
    (problem,) = scan(tmp_path)
    assert problem.kind is ProblemKind.UNREADABLE
    assert problem.path == str(tmp_path / "image_manager")
    assert problem.message.startswith("cannot list: ")


def test_a_record_of_another_api_version_is_foreign(tmp_path: Path) -> None:
    FileRecordStore(tmp_path)
    path = pulled(tmp_path) / "sha256-future"
    path.write_bytes(b'{"kind":"ImagePulledRecord","apiVersion":"kubelet.config.k8s.io/v2"}')
    assert scan(tmp_path) == [
        FileProblem(
            str(path),
            ProblemKind.FOREIGN_KIND,
            "holds kind 'ImagePulledRecord' of apiVersion 'kubelet.config.k8s.io/v2', "
            "not ImagePulledRecord",
        )
    ]


def test_an_entry_removed_during_the_scan_is_no_problem(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = FileRecordStore(tmp_path)
    store.write_intent(ImagePullIntent(IMAGE))
    monkeypatch.setattr(audit, "read_file", lambda path: None)
    assert scan(tmp_path) == []
