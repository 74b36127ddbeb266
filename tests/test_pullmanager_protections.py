"""The pull manager's protections beyond the kubelet's (README "Stricter than the kubelet").

Each protection only ever turns "allowed" into "must verify", is off in a ``PullManager`` built
with defaults (which must keep deciding exactly as the kubelet does) and on in ``Node``.  Every
test shows the kubelet-exact behaviour beside the protected one, so both halves can fail.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import pytest

from pullwarden.errors import RecordWriteError
from pullwarden.pullmanager import Protections, PullManager
from pullwarden.records import FileRecordStore, ImagePulledRecord, ImagePullSecret
from tests.support import T0, FakeImage
from tests.test_pullmanager import PodCreds, secrets
from tests.test_pullmanager import build as build_manager

REG = "registry.example"
IMAGE = f"{REG}/private/app:v1"
MANIFEST = "sha256:" + "4d" * 32
REF = "sha256:" + "ab" * 32
OTHER_REF = "sha256:" + "cd" * 32
ALICE = ImagePullSecret("uid-a", "team-a", "alice-cred", "hash-a")

STRICT = Protections.all()
KUBELET = Protections()


def build(
    root: Path,
    protections: Protections,
    *,
    intents: Iterable[str] = (),
    records: Iterable[ImagePulledRecord] = (),
    images: Iterable[FakeImage] = (),
    store: FileRecordStore | None = None,
) -> PullManager:
    return build_manager(
        root,
        intents=intents,
        records=records,
        images=images,
        protections=protections,
        store=store,
    )


def on_disk(root: Path, ref: str = REF) -> ImagePulledRecord | None:
    return FileRecordStore(root, migrate=False).get_pulled_record(ref)


def intent_files(root: Path) -> list[str]:
    return sorted(i.image for i in FileRecordStore(root, migrate=False).list_intents().items)


def test_defaults_are_the_kubelet() -> None:
    assert Protections() == Protections(any_spelling=False, keep_inherited_intents=False)
    assert Protections.all() == Protections(any_spelling=True, keep_inherited_intents=True)


# -- another spelling while a pull is in flight ------------------------------------------------

SPELLINGS = [
    f"{REG}/private/app@{MANIFEST}",
    f"{REG}/private/app:v1@{MANIFEST}",
    f"{REG}/private/app:other",
    f"{REG}/private/app",
]


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_in_flight_pull_covers_every_spelling_of_the_repository(
    tmp_path: Path, spelling: str
) -> None:
    for protections, expected in ((KUBELET, False), (STRICT, True)):
        pm = build(tmp_path / str(expected), protections)
        pm.record_pull_intent(IMAGE)
        # The store has committed the image; the record is not written yet.
        decision = pm.decide(spelling, REF, PodCreds())
        assert decision.pulled_by_kubelet is expected, protections
        assert decision.must_pull is expected
        if expected:
            assert decision.intent_image == IMAGE
            assert IMAGE in decision.reason


def test_docker_hub_spellings_are_one_repository(tmp_path: Path) -> None:
    pm = build(tmp_path, STRICT)
    pm.record_pull_intent("org/app:v1")
    for spelling in ("docker.io/org/app:v1", "index.docker.io/org/app:v1", "org/app@" + MANIFEST):
        assert pm.must_attempt_image_pull(spelling, REF, PodCreds()) is True, spelling
    pm.record_pull_intent("nginx")
    assert pm.must_attempt_image_pull("docker.io/library/nginx:1.2", OTHER_REF, PodCreds())


def test_image_id_spelling_is_matched_through_the_runtime_names(tmp_path: Path) -> None:
    """A pod naming the image by id matches no repository; the runtime's names for it do."""
    names = (IMAGE, f"{REG}/private/app@{MANIFEST}")
    for protections, expected in ((KUBELET, False), (STRICT, True)):
        pm = build(tmp_path / str(expected), protections)
        pm.record_pull_intent(IMAGE)
        assert pm.must_attempt_image_pull(REF, REF, PodCreds(), image_names=names) is expected
        assert pm.must_attempt_image_pull(REF, REF, PodCreds()) is False  # no names: no link


def test_other_repository_stays_preloaded(tmp_path: Path) -> None:
    pm = build(tmp_path, STRICT)
    pm.record_pull_intent(IMAGE)
    assert pm.must_attempt_image_pull(f"{REG}/public/app:v1", OTHER_REF, PodCreds()) is False


def test_evidence_ends_with_the_record(tmp_path: Path) -> None:
    pm = build(tmp_path, STRICT)
    pm.record_pull_intent(IMAGE)
    pm.record_image_pulled(IMAGE, REF, secrets(ALICE))
    other = f"{REG}/private/app:v2"
    assert pm.must_attempt_image_pull(other, OTHER_REF, PodCreds()) is False  # preloaded v2
    assert pm.must_attempt_image_pull(other, REF, PodCreds()) is True  # record, no key
    assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds([ALICE])) is False


def test_failed_pull_ends_the_evidence(tmp_path: Path) -> None:
    pm = build(tmp_path, STRICT)
    pm.record_pull_intent(IMAGE)
    pm.record_pull_intent(f"{REG}/private/app@{MANIFEST}")
    pm.record_image_pull_failed(IMAGE)
    assert pm.must_attempt_image_pull(f"{REG}/private/app:v9", REF, PodCreds()) is True
    pm.record_image_pull_failed(f"{REG}/private/app@{MANIFEST}")
    assert pm.must_attempt_image_pull(f"{REG}/private/app:v9", REF, PodCreds()) is False


def test_intent_left_by_a_crash_covers_every_spelling_after_restart(tmp_path: Path) -> None:
    """No image carries the intent's name (the pull did not commit), so it lingers."""
    for protections, expected in ((KUBELET, False), (STRICT, True)):
        pm = build(tmp_path / str(expected), protections, intents=[IMAGE])
        spelling = f"{REG}/private/app@{MANIFEST}"
        assert pm.must_attempt_image_pull(spelling, REF, PodCreds()) is expected


def test_unreadable_intent_makes_every_image_count_as_pulled(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    bad = Path(store.intent_path("whatever"))
    bad.write_bytes(b"{not json")
    for protections, expected in ((KUBELET, False), (STRICT, True)):
        pm = build(tmp_path, protections, store=store)
        decision = pm.decide(f"{REG}/public/app:v1", REF, PodCreds())
        assert decision.must_pull is expected
    assert bad.exists()


# -- start-up housekeeping ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("intent", "listed"),
    [
        ("nginx", "docker.io/library/nginx:latest"),
        ("nginx:1.2", "docker.io/library/nginx:1.2"),
        ("org/app:v1", "docker.io/org/app:v1"),
        ("index.docker.io/org/app:v1", "docker.io/org/app:v1"),
        (f"{REG}/private/app:v1@{MANIFEST}", f"{REG}/private/app@{MANIFEST}"),
        (f"{REG}/private/app", f"{REG}/private/app:latest"),
    ],
)
def test_housekeeping_matches_normalised_names(tmp_path: Path, intent: str, listed: str) -> None:
    digest_name = "@" in listed
    image = FakeImage(
        REF,
        repo_tags=[] if digest_name else [listed],
        repo_digests=[listed] if digest_name else [],
    )
    kubelet = build(tmp_path / "k", KUBELET, intents=[intent], images=[image])
    assert on_disk(tmp_path / "k") is None
    assert intent_files(tmp_path / "k") == [intent]
    assert kubelet.must_attempt_image_pull(listed, REF, PodCreds()) is False  # preloaded

    strict = build(tmp_path / "s", STRICT, intents=[intent], images=[image])
    assert on_disk(tmp_path / "s") == ImagePulledRecord(REF, T0, {})
    assert intent_files(tmp_path / "s") == []
    assert strict.must_attempt_image_pull(listed, REF, PodCreds()) is True


@pytest.mark.parametrize("protections", [KUBELET, STRICT], ids=["kubelet", "strict"])
def test_housekeeping_records_every_image_carrying_the_name(
    tmp_path: Path, protections: Protections
) -> None:
    """The kubelet writes a record for every listed image with the name, not just the first."""
    images = [FakeImage(REF, repo_tags=[IMAGE]), FakeImage(OTHER_REF, repo_tags=[IMAGE])]
    build(tmp_path, protections, intents=[IMAGE], images=images)
    assert on_disk(tmp_path) == ImagePulledRecord(REF, T0, {})
    assert on_disk(tmp_path, OTHER_REF) == ImagePulledRecord(OTHER_REF, T0, {})
    assert intent_files(tmp_path) == []


class FailingRecords(FileRecordStore):
    """Record writes fail with ENOSPC for the imageRefs in ``full``."""

    def __init__(self, root: Path, full: set[str]) -> None:
        super().__init__(root)
        self.full = full

    def write_pulled_record(self, record: ImagePulledRecord) -> None:
        if record.image_ref in self.full:
            raise RecordWriteError("No space left on device")
        super().write_pulled_record(record)


def test_housekeeping_keeps_the_intent_when_a_record_fails(tmp_path: Path) -> None:
    images = [FakeImage(REF, repo_tags=[IMAGE]), FakeImage(OTHER_REF, repo_tags=[IMAGE])]
    store = FailingRecords(tmp_path, {OTHER_REF})
    pm = build(tmp_path, STRICT, intents=[IMAGE], images=images, store=store)
    assert on_disk(tmp_path) is not None
    assert intent_files(tmp_path) == [IMAGE]
    assert pm.must_attempt_image_pull(f"{REG}/private/app@{MANIFEST}", OTHER_REF, PodCreds())


# -- intents this process did not create -------------------------------------------------------


def test_failed_pull_keeps_an_inherited_intent(tmp_path: Path) -> None:
    for protections, kept in ((KUBELET, False), (STRICT, True)):
        root = tmp_path / str(kept)
        pm = build(root, protections, intents=[IMAGE])  # left by a crash; no image has it
        pm.record_pull_intent(IMAGE)
        pm.record_image_pull_failed(IMAGE)
        assert intent_files(root) == ([IMAGE] if kept else [])
        assert pm.must_attempt_image_pull(IMAGE, REF, PodCreds()) is kept


def test_own_failed_pull_removes_its_intent(tmp_path: Path) -> None:
    pm = build(tmp_path, STRICT)
    pm.record_pull_intent(IMAGE)
    pm.record_image_pull_failed(IMAGE)
    assert intent_files(tmp_path) == []


def test_successful_pull_settles_an_inherited_intent(tmp_path: Path) -> None:
    """Before an inherited intent goes, every image that carried its name gets a record."""
    store = FailingRecords(tmp_path, {OTHER_REF})  # the disk was full at start-up
    old = FakeImage(OTHER_REF, repo_tags=[IMAGE], repo_digests=[f"{REG}/private/app@{MANIFEST}"])
    pm = build(tmp_path, STRICT, intents=[IMAGE], images=[old], store=store)
    assert intent_files(tmp_path) == [IMAGE]
    store.full.clear()
    # A new pull moves the tag to another image; the old one keeps only its digest name.
    pm.record_pull_intent(IMAGE)
    pm.record_image_pulled(IMAGE, REF, secrets(ALICE))
    assert intent_files(tmp_path) == []
    assert on_disk(tmp_path, OTHER_REF) == ImagePulledRecord(OTHER_REF, T0, {})
    assert pm.must_attempt_image_pull(f"{REG}/private/app@{MANIFEST}", OTHER_REF, PodCreds())


def test_inherited_intent_stays_while_its_images_lack_records(tmp_path: Path) -> None:
    store = FailingRecords(tmp_path, {OTHER_REF})
    old = FakeImage(OTHER_REF, repo_tags=[IMAGE])
    pm = build(tmp_path, STRICT, intents=[IMAGE], images=[old], store=store)
    pm.record_pull_intent(IMAGE)
    pm.record_image_pulled(IMAGE, REF, secrets(ALICE))  # the disk is still full for OTHER_REF
    assert intent_files(tmp_path) == [IMAGE]
    assert pm.must_attempt_image_pull(f"{REG}/private/app:v2", OTHER_REF, PodCreds())
