"""The file store: layout, atomic writes, reads, listings, counts, migration (spec §4)."""

from __future__ import annotations

import os
import stat
import threading
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from pullwarden.errors import RecordDecodeError, RecordReadError, RecordWriteError
from pullwarden.records import _fs as fs
from pullwarden.records._audit import ProblemKind, scan
from pullwarden.records._base import Listing, RecordStore
from pullwarden.records._codec import V1ALPHA1, V1BETA1, decode_versioned, encode
from pullwarden.records._fs import (
    MAX_FILE_SIZE,
    FileRecordStore,
    MigrationItem,
    file_name_for,
    is_record_file_name,
)
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
IMAGE_FILE = "sha256-ee81caca15454863449fb55a1d942904d56d5ed9f9b20a7cb3453944ea2c7e11"
REF_FILE = "sha256-b3c0cc4278800b03a308ceb2611161430df571ca733122f0a40ac8b9792a9064"


def rec(ref: str = REF, t: datetime = T1, node: str | None = None) -> ImagePulledRecord:
    mapping = {node: ImagePullCredentials(node_pods_accessible=True)} if node else {}
    return ImagePulledRecord(image_ref=ref, last_updated_time=t, credential_mapping=mapping)


def secret_rec(ref: str = REF) -> ImagePulledRecord:
    creds = ImagePullCredentials(
        kubernetes_secrets=(ImagePullSecret("uid", "default", "pull-secret", "hash"),)
    )
    return ImagePulledRecord(REF if ref is None else ref, T1, {"docker.io/testing/test": creds})


@pytest.fixture
def store(tmp_path: Path) -> FileRecordStore:
    return FileRecordStore(tmp_path)


def pulling(root: Path) -> Path:
    return root / "image_manager" / "pulling"


def pulled(root: Path) -> Path:
    return root / "image_manager" / "pulled"


def mode(p: Path | str) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


# --------------------------------------------------------------------------------------------
# Layout and naming
# --------------------------------------------------------------------------------------------


def test_file_names_match_the_kubelet() -> None:
    assert file_name_for(IMAGE) == IMAGE_FILE
    assert file_name_for(REF) == REF_FILE
    kep_ref = "sha256:d2c94e258dcb3c5ac2798d32e1249e42ef01cba4841c2234249495f87264ac5a"
    assert (
        file_name_for(kep_ref)
        == "sha256-8a24326ac510759b13cce8f02faf7d4f3b2653d5945e75a75be71d878f56a84e"
    )
    # A Go string holding arbitrary bytes hashes those bytes.
    raw = b"img\xff".decode("utf-8", "surrogateescape")
    import hashlib

    assert file_name_for(raw) == "sha256-" + hashlib.sha256(b"img\xff").hexdigest()


def test_store_implements_the_protocol(store: FileRecordStore) -> None:
    s: RecordStore = store
    assert isinstance(s.list_intents(), Listing)


def test_paths(store: FileRecordStore, tmp_path: Path) -> None:
    assert store.intent_path(IMAGE) == str(pulling(tmp_path) / IMAGE_FILE)
    assert store.record_path(REF) == str(pulled(tmp_path) / REF_FILE)


def test_directories_created_0700_including_missing_root(tmp_path: Path) -> None:
    root = tmp_path / "does" / "not" / "exist"
    old = os.umask(0o022)
    try:
        FileRecordStore(root)
    finally:
        os.umask(old)
    for d in (root, root / "image_manager", pulling(root), pulled(root)):
        assert d.is_dir()
        assert mode(d) == 0o700, d
    assert mode(tmp_path / "does") == 0o700


def test_existing_directories_keep_their_mode(tmp_path: Path) -> None:
    pulling(tmp_path).mkdir(parents=True)
    os.chmod(pulling(tmp_path), 0o755)
    FileRecordStore(tmp_path)
    assert mode(pulling(tmp_path)) == 0o755
    assert mode(pulled(tmp_path)) == 0o700


def test_constructor_fails_when_directory_cannot_be_created(tmp_path: Path) -> None:
    (tmp_path / "image_manager").write_text("not a directory")
    with pytest.raises(RecordWriteError):
        FileRecordStore(tmp_path)


def test_create_false_opens_without_creating(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path / "kubelet", migrate=False, create=False)
    assert not (tmp_path / "kubelet").exists()
    assert store.list_pulled_records() == Listing()
    assert store.get_pulled_record(REF) is None
    assert not store.intent_exists(IMAGE)
    assert store.count_intent_files() == 0
    assert not (tmp_path / "kubelet").exists()
    store.write_intent(ImagePullIntent(IMAGE))  # writes still create what they need
    assert mode(pulling(tmp_path / "kubelet")) == 0o700


def test_accepts_str_root(tmp_path: Path) -> None:
    store = FileRecordStore(str(tmp_path))
    store.write_intent(ImagePullIntent(IMAGE))
    assert (pulling(tmp_path) / IMAGE_FILE).is_file()


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


def test_write_intent_bytes_mode_and_no_tmp(store: FileRecordStore, tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        store.write_intent(ImagePullIntent(IMAGE))
    finally:
        os.umask(old)
    path = pulling(tmp_path) / IMAGE_FILE
    assert path.read_bytes() == (
        b'{"kind":"ImagePullIntent","apiVersion":"kubelet.config.k8s.io/v1beta1",'
        b'"image":"repo.repo/test/test:v1"}\n'
    )
    assert mode(path) == 0o600
    assert os.listdir(pulling(tmp_path)) == [IMAGE_FILE]


def test_write_record_bytes(store: FileRecordStore, tmp_path: Path) -> None:
    record = secret_rec()
    store.write_pulled_record(record)
    path = pulled(tmp_path) / REF_FILE
    assert path.read_bytes() == encode(record, V1BETA1)
    assert mode(path) == 0o600
    assert os.listdir(pulled(tmp_path)) == [REF_FILE]


def test_rewrite_replaces_atomically_and_leaves_other_drafts(
    store: FileRecordStore, tmp_path: Path
) -> None:
    store.write_pulled_record(rec(node="a"))
    inode = os.stat(store.record_path(REF)).st_ino
    # A kubelet's draft (or another writer's) is not ours to truncate or remove.
    stale = Path(store.record_path(REF) + ".tmp")
    stale.write_bytes(b"half a rec")
    store.write_pulled_record(rec(node="b"))
    assert stale.read_bytes() == b"half a rec"
    assert sorted(os.listdir(pulled(tmp_path))) == [REF_FILE, stale.name]
    assert store.get_pulled_record(REF) == rec(node="b")
    # A new inode: the target was replaced by rename, not rewritten in place.
    assert os.stat(store.record_path(REF)).st_ino != inode


def test_writes_recreate_removed_directories(store: FileRecordStore, tmp_path: Path) -> None:
    os.rmdir(pulling(tmp_path))
    os.rmdir(pulled(tmp_path))
    os.rmdir(tmp_path / "image_manager")
    store.write_intent(ImagePullIntent(IMAGE))
    store.write_pulled_record(rec())
    assert mode(pulling(tmp_path)) == 0o700
    assert mode(tmp_path / "image_manager") == 0o700
    assert store.intent_exists(IMAGE)
    assert store.get_pulled_record(REF) == rec()


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_write_failure_raises_and_leaves_no_tmp(store: FileRecordStore, tmp_path: Path) -> None:
    os.chmod(pulling(tmp_path), 0o500)
    try:
        with pytest.raises(RecordWriteError) as info:
            store.write_intent(ImagePullIntent(IMAGE))
    finally:
        os.chmod(pulling(tmp_path), 0o700)
    assert info.value.path == store.intent_path(IMAGE)
    assert os.listdir(pulling(tmp_path)) == []


def test_partial_write_failure_removes_tmp(
    store: FileRecordStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_write = os.write

    def short_then_fail(fd: int, data: bytes) -> int:
        if len(data) > 10:
            return real_write(fd, bytes(data[:10]))
        raise OSError(28, "No space left on device")

    store.write_intent(ImagePullIntent(IMAGE))
    before = Path(store.intent_path(IMAGE)).read_bytes()
    monkeypatch.setattr(os, "write", short_then_fail)
    with pytest.raises(RecordWriteError, match="No space left"):
        store.write_intent(ImagePullIntent(IMAGE))
    monkeypatch.undo()
    assert os.listdir(pulling(tmp_path)) == [IMAGE_FILE]
    assert Path(store.intent_path(IMAGE)).read_bytes() == before


def test_rename_failure_removes_tmp(store: FileRecordStore, tmp_path: Path) -> None:
    # A directory in the way of the target makes the rename fail.
    os.mkdir(store.intent_path(IMAGE))
    with pytest.raises(RecordWriteError) as info:
        store.write_intent(ImagePullIntent(IMAGE))
    assert isinstance(info.value, OSError)
    assert os.listdir(pulling(tmp_path)) == [IMAGE_FILE]
    assert os.path.isdir(store.intent_path(IMAGE))


def test_drafts_are_unique_private_and_ignored_by_listings(
    store: FileRecordStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drafts: list[tuple[str, str, int]] = []
    real_replace = os.replace

    def spy(src: str, dst: str) -> None:
        drafts.append((src, dst, mode(src)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", spy)
    old = os.umask(0o022)
    try:
        for _ in range(3):
            store.write_pulled_record(rec())
        store.write_intent(ImagePullIntent(IMAGE))
    finally:
        os.umask(old)
    monkeypatch.undo()
    assert len({src for src, _, _ in drafts}) == 4
    for src, dst, draft_mode in drafts:
        assert os.path.dirname(src) == os.path.dirname(dst)
        name = os.path.basename(src)
        assert name.startswith(os.path.basename(dst) + ".") and name.endswith(".tmp")
        assert not is_record_file_name(name)
        assert draft_mode == 0o600
    assert os.listdir(pulled(tmp_path)) == [REF_FILE]
    assert os.listdir(pulling(tmp_path)) == [IMAGE_FILE]


def test_interrupted_write_removes_its_draft(
    store: FileRecordStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def interrupted(fd: int, data: bytes) -> int:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "write", interrupted)
    with pytest.raises(KeyboardInterrupt):
        store.write_pulled_record(rec())
    monkeypatch.undo()
    assert os.listdir(pulled(tmp_path)) == []


def test_drafts_never_follow_symlinks(
    store: FileRecordStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Whatever name a draft gets, a link already there is never written through.
    victim = tmp_path / "victim"
    victim.write_bytes(b"untouched")
    draft = store.record_path(REF) + ".planted.tmp"
    monkeypatch.setattr(fs, "_draft_path", lambda target: draft)
    os.symlink(victim, draft)
    with pytest.raises(RecordWriteError):
        store.write_pulled_record(rec())
    assert victim.read_bytes() == b"untouched"
    assert os.path.islink(draft)
    assert not os.path.exists(store.record_path(REF))


def test_encode_failure_is_a_write_error(store: FileRecordStore, tmp_path: Path) -> None:
    # Converting 0001-01-01T01:00+05:00 to UTC falls before year 1.
    early = datetime(1, 1, 1, 1, 0, tzinfo=timezone(timedelta(hours=5)))
    with pytest.raises(RecordWriteError):
        store.write_pulled_record(rec(t=early))
    assert os.listdir(pulled(tmp_path)) == []


def test_delete(store: FileRecordStore, tmp_path: Path) -> None:
    store.write_intent(ImagePullIntent(IMAGE))
    store.write_pulled_record(rec())
    store.delete_intent(IMAGE)
    store.delete_pulled_record(REF)
    assert os.listdir(pulling(tmp_path)) == []
    assert os.listdir(pulled(tmp_path)) == []
    # Deleting what is absent is fine, even without the directories.
    store.delete_intent(IMAGE)
    store.delete_pulled_record(REF)
    os.rmdir(pulling(tmp_path))
    store.delete_intent(IMAGE)


def test_delete_failure_is_a_write_error(store: FileRecordStore) -> None:
    os.mkdir(store.record_path(REF))
    os.mkdir(os.path.join(store.record_path(REF), "x"))
    with pytest.raises(RecordWriteError):
        store.delete_pulled_record(REF)


def test_concurrent_writers_of_one_key_never_tear(store: FileRecordStore) -> None:
    records = [rec(node=f"registry.example/{i}" * 50) for i in range(8)]
    errors: list[BaseException] = []

    def writer(r: ImagePulledRecord) -> None:
        try:
            for _ in range(40):
                store.write_pulled_record(r)
                got = store.get_pulled_record(REF)
                assert got in records
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(r,)) for r in records]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


def test_get_pulled_record(store: FileRecordStore) -> None:
    assert store.get_pulled_record(REF) is None
    store.write_pulled_record(secret_rec())
    assert store.get_pulled_record(REF) == secret_rec()
    assert store.get_pulled_record("other") is None


def test_get_pulled_record_keeps_fraction_only_in_memory(store: FileRecordStore) -> None:
    store.write_pulled_record(rec(t=datetime(2025, 1, 2, 3, 4, 5, 678, tzinfo=UTC)))
    got = store.get_pulled_record(REF)
    assert got is not None and got.last_updated_time == T1


def test_collision_guard(store: FileRecordStore) -> None:
    # A record for another imageRef stored under REF's name is treated as absent.
    Path(store.record_path(REF)).write_bytes(encode(rec(ref="someotherref")))
    assert store.get_pulled_record(REF) is None
    Path(store.intent_path(IMAGE)).write_bytes(encode(ImagePullIntent("other:v1")))
    assert store.intent_exists(IMAGE) is False


def test_undecodable_record_raises_with_path(store: FileRecordStore) -> None:
    path = store.record_path(REF)
    Path(path).write_bytes((TESTDATA / "decode_broken.json").read_bytes())
    with pytest.raises(RecordDecodeError) as info:
        store.get_pulled_record(REF)
    assert info.value.path == path
    assert path in str(info.value)


def test_wrong_kind_in_directory_is_a_decode_error(store: FileRecordStore) -> None:
    Path(store.record_path(REF)).write_bytes(encode(ImagePullIntent(REF)))
    with pytest.raises(RecordDecodeError, match="ImagePullIntent"):
        store.get_pulled_record(REF)
    Path(store.intent_path(IMAGE)).write_bytes(encode(rec(ref=IMAGE)))
    with pytest.raises(RecordDecodeError, match="ImagePulledRecord"):
        store.intent_exists(IMAGE)


def test_unreadable_file_raises_read_error(store: FileRecordStore) -> None:
    os.mkdir(store.record_path(REF))  # reading a directory fails with EISDIR
    with pytest.raises(RecordReadError) as info:
        store.get_pulled_record(REF)
    assert info.value.path == store.record_path(REF)
    os.mkdir(store.intent_path(IMAGE))
    with pytest.raises(RecordReadError):
        store.intent_exists(IMAGE)


def test_fifo_does_not_hang(store: FileRecordStore) -> None:
    os.mkfifo(store.intent_path(IMAGE))
    with pytest.raises(RecordReadError, match="not a regular file"):
        store.intent_exists(IMAGE)


def test_a_fifo_with_a_silent_writer_is_no_regular_file_either(store: FileRecordStore) -> None:
    os.mkfifo(store.record_path(REF))
    writer = os.open(store.record_path(REF), os.O_RDWR)  # a writer that never writes
    try:
        with pytest.raises(RecordReadError, match="not a regular file"):
            store.get_pulled_record(REF)
    finally:
        os.close(writer)


def test_an_empty_record_file_is_a_decode_error_not_a_special_file(
    store: FileRecordStore,
) -> None:
    Path(store.record_path(REF)).write_bytes(b"")
    with pytest.raises(RecordDecodeError) as info:
        store.get_pulled_record(REF)
    assert "not a regular file" not in str(info.value)


def _plant_special(path: str, what: str, target: Path) -> None:
    """Put a FIFO, a symlink (to a valid file ``target``) or an oversized file at ``path``."""
    if what == "fifo":
        os.mkfifo(path)
    elif what == "symlink":
        os.symlink(target, path)
    else:
        with open(path, "wb") as f:  # sparse: costs no disk space
            f.truncate(MAX_FILE_SIZE + 1)


SPECIAL_FILES = ["fifo", "symlink", "oversized"]


@pytest.mark.parametrize("what", SPECIAL_FILES)
def test_special_record_files_are_read_errors(
    store: FileRecordStore, tmp_path: Path, what: str
) -> None:
    # A valid record and intent elsewhere: following a link to them must not count.
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "record").write_bytes(encode(rec()))
    (elsewhere / "intent").write_bytes(encode(ImagePullIntent(IMAGE)))
    _plant_special(store.record_path(REF), what, elsewhere / "record")
    _plant_special(store.intent_path(IMAGE), what, elsewhere / "intent")
    with pytest.raises(RecordReadError) as info:
        store.get_pulled_record(REF)
    assert info.value.path == store.record_path(REF)
    with pytest.raises(RecordReadError) as info:
        store.intent_exists(IMAGE)
    assert info.value.path == store.intent_path(IMAGE)
    store.write_pulled_record(rec(ref="good"))
    listing = store.list_pulled_records()
    assert listing.items == [rec(ref="good")]
    assert [(type(e), e.path) for e in listing.errors] == [
        (RecordReadError, store.record_path(REF))
    ]
    intents = store.list_intents()
    assert intents.items == []
    assert [type(e) for e in intents.errors] == [RecordReadError]


def test_oversized_message_names_the_limit(store: FileRecordStore) -> None:
    _plant_special(store.record_path(REF), "oversized", Path())
    with pytest.raises(RecordReadError, match="larger than 4 MiB"):
        store.get_pulled_record(REF)


def test_file_at_the_size_limit_is_read(store: FileRecordStore) -> None:
    data = encode(rec())
    Path(store.record_path(REF)).write_bytes(data + b" " * (MAX_FILE_SIZE - len(data)))
    assert store.get_pulled_record(REF) == rec()


def test_file_growing_past_the_limit_while_read_is_a_read_error(
    store: FileRecordStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.write_pulled_record(rec())
    real_read = os.read

    def endless(fd: int, n: int) -> bytes:
        real_read(fd, n)
        return b" " * n  # as if someone kept appending

    monkeypatch.setattr(os, "read", endless)
    with pytest.raises(RecordReadError, match="larger than 4 MiB"):
        store.get_pulled_record(REF)


def test_deeply_nested_files_are_decode_errors(store: FileRecordStore, tmp_path: Path) -> None:
    Path(store.record_path(REF)).write_bytes(b'{"kind":' + b"[" * 100_000)
    Path(store.intent_path(IMAGE)).write_bytes(b"[" * 100_000 + b"]" * 100_000)
    with pytest.raises(RecordDecodeError, match="nested more than 256 levels deep"):
        store.get_pulled_record(REF)
    with pytest.raises(RecordDecodeError, match="nested more than 256 levels deep"):
        store.intent_exists(IMAGE)
    assert [type(e) for e in store.list_pulled_records().errors] == [RecordDecodeError]
    assert {p.kind for p in scan(tmp_path)} == {ProblemKind.UNDECODABLE}


def test_intent_exists(store: FileRecordStore) -> None:
    assert store.intent_exists(IMAGE) is False
    store.write_intent(ImagePullIntent(IMAGE))
    assert store.intent_exists(IMAGE) is True
    Path(store.intent_path(IMAGE)).write_bytes(b"\x00garbage")
    with pytest.raises(RecordDecodeError):
        store.intent_exists(IMAGE)


def test_reads_v1alpha1_files(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path, migrate=False)
    Path(store.intent_path(IMAGE)).write_bytes(encode(ImagePullIntent(IMAGE), V1ALPHA1))
    Path(store.record_path(REF)).write_bytes(encode(secret_rec(), V1ALPHA1))
    assert store.intent_exists(IMAGE)
    assert store.get_pulled_record(REF) == secret_rec()


def test_large_record(store: FileRecordStore) -> None:
    secrets = tuple(ImagePullSecret(f"uid-{i}", "ns", f"s{i}", "h" * 64) for i in range(2000))
    big = ImagePulledRecord(REF, T1, {"a": ImagePullCredentials(kubernetes_secrets=secrets)})
    store.write_pulled_record(big)
    assert os.path.getsize(store.record_path(REF)) > 1 << 16
    assert store.get_pulled_record(REF) == big


# --------------------------------------------------------------------------------------------
# Listing and counting
# --------------------------------------------------------------------------------------------


def test_is_record_file_name() -> None:
    assert is_record_file_name(REF_FILE)
    assert not is_record_file_name(REF_FILE + ".tmp")
    assert not is_record_file_name("README")
    assert is_record_file_name("sha256-not-hex")


def test_listing_rules(store: FileRecordStore, tmp_path: Path) -> None:
    refs = [f"ref-{i}" for i in range(5)]
    for r in refs:
        store.write_pulled_record(rec(ref=r))
    d = pulled(tmp_path)
    (d / "README").write_text("ignored")
    (d / "sha256-leftover.tmp").write_text("{broken")
    (d / (file_name_for("ref-0") + ".tmp")).write_text("{broken")
    (d / "sha256-subdir").mkdir()
    (d / "sha256-subdir" / REF_FILE).write_bytes(encode(rec()))
    listing = store.list_pulled_records()
    assert listing.ok
    expected = sorted(refs, key=file_name_for)
    assert [r.image_ref for r in listing.items] == expected
    assert store.count_record_files() == 5


def test_listing_partial_success(store: FileRecordStore, tmp_path: Path) -> None:
    for image in ("a:1", "b:1", "c:1"):
        store.write_intent(ImagePullIntent(image))
    Path(store.intent_path("b:1")).write_bytes(b"{")
    bad_name = pulling(tmp_path) / "sha256-zzz"
    bad_name.write_bytes(encode(rec()))  # a record among intents
    listing = store.list_intents()
    assert sorted(i.image for i in listing.items) == ["a:1", "c:1"]
    assert not listing.ok
    assert sorted(e.path or "" for e in listing.errors) == sorted(
        [store.intent_path("b:1"), str(bad_name)]
    )
    assert all(isinstance(e, RecordDecodeError) for e in listing.errors)
    assert store.count_intent_files() == 4


def test_listing_collects_read_errors(store: FileRecordStore, tmp_path: Path) -> None:
    store.write_pulled_record(rec())
    os.symlink(tmp_path / "nowhere", pulled(tmp_path) / "sha256-dangling")
    os.symlink(tmp_path, pulled(tmp_path) / "sha256-linkdir")
    listing = store.list_pulled_records()
    assert listing.items == [rec()]
    kinds = {os.path.basename(e.path or ""): type(e) for e in listing.errors}
    # Record files are never followed: a symlink, dangling or not, is an unreadable record (Go's
    # DirEntry.IsDir does not follow links either, so a link to a directory is not skipped).
    assert kinds == {"sha256-dangling": RecordReadError, "sha256-linkdir": RecordReadError}


def test_listing_and_counting_missing_directories(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    for d in (pulling(tmp_path), pulled(tmp_path)):
        os.rmdir(d)
    assert store.list_intents() == Listing()
    assert store.list_pulled_records() == Listing()
    assert store.count_intent_files() == 0
    assert store.count_record_files() == 0


def test_counts_follow_writes(store: FileRecordStore) -> None:
    assert store.count_intent_files() == 0
    store.write_intent(ImagePullIntent("a"))
    assert store.count_intent_files() == 1
    store.write_intent(ImagePullIntent("a"))
    assert store.count_intent_files() == 1
    store.write_intent(ImagePullIntent("b"))
    store.write_intent(ImagePullIntent("c"))
    assert store.count_intent_files() == 3
    store.delete_intent("b")
    assert store.count_intent_files() == 2
    store.write_pulled_record(rec())
    assert store.count_record_files() == 1


# --------------------------------------------------------------------------------------------
# Migration (spec §4.7)
# --------------------------------------------------------------------------------------------


def _plant(root: Path, obj: ImagePullIntent | ImagePulledRecord, version: str) -> Path:
    if isinstance(obj, ImagePullIntent):
        path = pulling(root) / file_name_for(obj.image)
    else:
        path = pulled(root) / file_name_for(obj.image_ref)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode(obj, version))
    return path


def test_migration_rewrites_alpha_files(tmp_path: Path) -> None:
    t_old = datetime(2024, 10, 21, 12, 26, 40, tzinfo=UTC)
    alpha_intent = _plant(tmp_path, ImagePullIntent(IMAGE), V1ALPHA1)
    beta_intent = _plant(tmp_path, ImagePullIntent("beta:1"), V1BETA1)
    alpha_record = _plant(tmp_path, rec(t=t_old, node="docker.io/x"), V1ALPHA1)
    beta_record = _plant(tmp_path, rec(ref="beta-ref"), V1BETA1)
    broken = pulled(tmp_path) / "sha256-broken"
    broken.write_bytes(b"{broken")
    beta_mtime = os.stat(beta_record).st_mtime_ns

    store = FileRecordStore(tmp_path)

    report = store.migration_report
    assert report is not None and not report.dry_run
    assert report.items == [
        MigrationItem(str(alpha_intent), str(alpha_intent), "ImagePullIntent", V1ALPHA1),
        MigrationItem(str(alpha_record), str(alpha_record), "ImagePulledRecord", V1ALPHA1),
    ]
    assert [e.path for e in report.errors] == [str(broken)]
    assert alpha_intent.read_bytes() == encode(ImagePullIntent(IMAGE), V1BETA1)
    assert alpha_record.read_bytes() == encode(rec(t=t_old, node="docker.io/x"), V1BETA1)
    assert b'"lastUpdatedTime":"2024-10-21T12:26:40Z"' in alpha_record.read_bytes()
    assert mode(alpha_record) == 0o600
    assert broken.read_bytes() == b"{broken"
    assert os.stat(beta_record).st_mtime_ns == beta_mtime
    assert beta_intent.exists()
    for d in (pulling(tmp_path), pulled(tmp_path)):
        assert not [n for n in os.listdir(d) if n.endswith(".tmp")]
    # A second start-up has nothing left to do.
    again = FileRecordStore(tmp_path).migration_report
    assert again is not None
    assert again.items == []
    assert [e.path for e in again.errors] == [str(broken)]


def test_migration_keeps_whole_seconds_as_stored(tmp_path: Path) -> None:
    path = pulled(tmp_path) / REF_FILE
    path.parent.mkdir(parents=True)
    path.write_bytes(
        b'{"kind":"ImagePulledRecord","apiVersion":"kubelet.config.k8s.io/v1alpha1",'
        b'"lastUpdatedTime":"2024-10-21T14:26:40.75+02:00","imageRef":"testimageref"}'
    )
    FileRecordStore(tmp_path)
    assert path.read_bytes() == (
        b'{"kind":"ImagePulledRecord","apiVersion":"kubelet.config.k8s.io/v1beta1",'
        b'"lastUpdatedTime":"2024-10-21T12:26:40Z","imageRef":"testimageref"}\n'
    )


def test_migration_of_misnamed_file_writes_correct_name_and_leaves_original(
    tmp_path: Path,
) -> None:
    wrong = pulling(tmp_path) / "sha256-wrongname"
    wrong.parent.mkdir(parents=True)
    wrong.write_bytes(encode(ImagePullIntent(IMAGE), V1ALPHA1))
    report = FileRecordStore(tmp_path).migration_report
    assert report is not None
    assert report.items == [
        MigrationItem(str(wrong), str(pulling(tmp_path) / IMAGE_FILE), "ImagePullIntent", V1ALPHA1)
    ]
    assert wrong.read_bytes() == encode(ImagePullIntent(IMAGE), V1ALPHA1)
    assert (pulling(tmp_path) / IMAGE_FILE).read_bytes() == encode(ImagePullIntent(IMAGE))


def test_migration_dry_run_changes_nothing(tmp_path: Path) -> None:
    a = _plant(tmp_path, ImagePullIntent(IMAGE), V1ALPHA1)
    b = _plant(tmp_path, secret_rec(), V1ALPHA1)
    before = {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in (a, b)}
    store = FileRecordStore(tmp_path, migrate=False)
    assert store.migration_report is None
    report = store.migrate(dry_run=True)
    assert report.dry_run
    assert [i.source for i in report.items] == [str(a), str(b)]
    assert report.ok
    assert {p: (p.read_bytes(), os.stat(p).st_mtime_ns) for p in (a, b)} == before
    # The real run does what the dry run announced.
    real = store.migrate()
    assert real.items == report.items
    assert decode_versioned(a.read_bytes())[1] == V1BETA1
    assert decode_versioned(b.read_bytes())[1] == V1BETA1


def test_migrate_false_leaves_alpha_files(tmp_path: Path) -> None:
    a = _plant(tmp_path, ImagePullIntent(IMAGE), V1ALPHA1)
    FileRecordStore(tmp_path, migrate=False)
    assert decode_versioned(a.read_bytes())[1] == V1ALPHA1


def test_migration_of_upstream_shaped_fixtures(tmp_path: Path) -> None:
    names = {
        "intent_v1alpha1.json": pulling(tmp_path),
        "record_secret_v1alpha1.json": pulled(tmp_path),
        "record_empty_hash_v1alpha1.json": pulled(tmp_path),
        "record_housekeeping_v1alpha1.json": pulled(tmp_path),
    }
    for fixture_name, d in names.items():
        d.mkdir(parents=True, exist_ok=True)
        obj = decode_versioned((TESTDATA / fixture_name).read_bytes())[0]
        key = obj.image if isinstance(obj, ImagePullIntent) else obj.image_ref
        (d / file_name_for(key)).write_bytes((TESTDATA / fixture_name).read_bytes())
    report = FileRecordStore(tmp_path).migration_report
    assert report is not None and report.ok and len(report.items) == 4
    beta = {
        "intent_v1alpha1.json": "intent_v1beta1.json",
        "record_secret_v1alpha1.json": "record_secret_v1beta1.json",
        "record_housekeeping_v1alpha1.json": "record_housekeeping_v1beta1.json",
    }
    for alpha_name, beta_name in beta.items():
        obj = decode_versioned((TESTDATA / alpha_name).read_bytes())[0]
        key = obj.image if isinstance(obj, ImagePullIntent) else obj.image_ref
        d = names[alpha_name]
        assert (d / file_name_for(key)).read_bytes() == (TESTDATA / beta_name).read_bytes()


def test_sweep_drafts_removes_only_our_own_drafts(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    target = store.record_path("sha256:" + "ab" * 32)
    ours = Path(f"{target}.0123456789abcdef.tmp")
    kubelets = Path(f"{target}.tmp")
    other = Path(store.pulling_dir) / "notes.0123456789abcdef.tmp"
    for path in (ours, kubelets, other):
        path.write_bytes(b"{")
    assert store.sweep_drafts() == 1
    assert not ours.exists() and kubelets.exists() and other.exists()
