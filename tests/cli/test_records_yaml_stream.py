"""``records ls -o yaml`` writes its document piece by piece, and the pieces are byte for byte
the one ``yaml.safe_dump`` of the whole document that it wrote before it streamed.

The expected text is computed here, the way ``ls`` used to compute it: the document built
whole (from the store's records with ``record_view``, or parsed back from ``-o json``, which is
the same document) and dumped in one call with the options ``ls -o yaml`` has always used.
The records are chosen to exercise what an emitter does differently at another column or with
another library: strings YAML must quote, non-ASCII, long strings it wraps at its width, empty
mappings and lists, several secrets, service accounts, node-wide credentials; then the node
part (``present``, the images without a record, the counts), filters that select nothing, and
a broken file whose error is only known once the records are written.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from click.testing import CliRunner, Result

from pullwarden.cli import main
from pullwarden.cli.records import NodeImages, Output, record_view
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
)
from tests.cli._records_support import pw
from tests.runtime.cri_fake import FakeCRI, fake_cri, image

T = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)

# Strings a YAML emitter must quote (they would load as another type, or not as a plain
# string), lay out in another way, or wrap at its width (80) depending on their column.
AWKWARD = [
    "yes",
    "no",
    "on",
    "null",
    "~",
    "",
    "1.0",
    "0x1F",
    "0o17",
    "2025-03-04",
    "True",
    ":",
    "#",
    "a: b",
    "a #b",
    "- x",
    "? x",
    "&anchor",
    "*alias",
    "!tag",
    "%percent",
    "@at",
    "`tick",
    "'single'",
    '"double"',
    "{braces}",
    "[brackets]",
    " leading space",
    "trailing space ",
    "tab\there",
    "line\nbreak",
    "---",
    "...",
    "équipe/app",
    "日本語/イメージ:最新",
    "emoji 😀 image",
    "\u2028separator",
    "nbsp\u00a0inside",
    "word " * 30,  # wraps as a plain scalar
    "x" * 200,  # too long to wrap, too long for a simple key
    "wörter und 😀 " * 12,  # wraps, and not the same way by libyaml
    "quoted: " + "and wrapped " * 12,
    "bell\x07" + " wrapped " * 12,  # double quoted, wrapped with escapes
]


def ref(n: int) -> str:
    return f"sha256:{n:064x}"


def awkward_records() -> list[ImagePulledRecord]:
    records: list[ImagePulledRecord] = []
    for n, text in enumerate(AWKWARD):
        secrets = (
            ImagePullSecret(text, "team-a", "regcred", "ab" * 32),
            ImagePullSecret("uid-2", text, "other", text),
            ImagePullSecret("uid-3", "team-c", text, ""),
        )
        accounts = (
            ImagePullServiceAccount(text, "ci", "builder"),
            ImagePullServiceAccount("sa-2", text, text),
        )
        mapping = {
            text: ImagePullCredentials(kubernetes_secrets=secrets[: 1 + n % 3]),
            f"registry.example/{n}/{text}": ImagePullCredentials(
                kubernetes_service_accounts=accounts[: 1 + n % 2],
                node_pods_accessible=n % 4 == 0,
            ),
            f"node-wide.example/{n}": ImagePullCredentials(node_pods_accessible=True),
        }
        records.append(ImagePulledRecord(ref(n + 1), T + timedelta(seconds=n), mapping))
    records.append(ImagePulledRecord(ref(900), T, {}))  # start-up housekeeping's: no names
    records.append(  # names with empty credentials
        ImagePulledRecord(ref(901), T, {"empty.example/a": ImagePullCredentials()})
    )
    return records


INTENTS = ["nginx:1.27", "yes", "registry.example/équipe/app:v2", "word " * 20]
BROKEN_REF = ref(999)
PRELOADED_ID = ref(0xAAA)
PENDING_ID = ref(0xBBB)


def write_root(root: Path, records: list[ImagePulledRecord], *, broken: bool = False) -> Path:
    store = FileRecordStore(root)
    for r in records:
        store.write_pulled_record(r)
    for i in INTENTS:
        store.write_intent(ImagePullIntent(i))
    if broken:
        Path(store.record_path(BROKEN_REF)).write_bytes(b'{"kind": "ImagePulledRecord", oops')
    return root


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return write_root(tmp_path / "node", awkward_records())


@pytest.fixture
def broken_root(tmp_path: Path) -> Path:
    return write_root(tmp_path / "node", awkward_records(), broken=True)


@pytest.fixture
def fake() -> Iterator[FakeCRI]:
    """A runtime with half the records' images, one preloaded image, one an intent names, and
    one whose record file is broken."""
    directory = Path(tempfile.mkdtemp(prefix="pwyaml.", dir="/tmp"))  # socket paths are short
    try:
        with fake_cri(directory) as server:
            server.script.images = [
                *(image(ref(n + 1), (f"registry.example/{n}/app:v1",)) for n in range(0, 40, 2)),
                image(PRELOADED_ID, ("docker.io/library/preloaded:yes", "日本/イメージ:1")),
                image(PENDING_ID, ("docker.io/library/nginx:1.27",)),
                image(BROKEN_REF, ()),
            ]
            yield server
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def whole_dump(document: object) -> str:
    """The one call ``ls -o yaml`` made before it streamed (``emit``'s)."""
    text: str = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return text


def old_document(root: Path, endpoint: str | None = None) -> dict[str, Any]:
    """The document ``records ls -o yaml`` (no filter) built whole, the way it built it."""
    store = FileRecordStore(root, migrate=False, create=False)
    listing = store.list_pulled_records()
    intents = store.list_intents()
    node = None
    if endpoint is not None:
        node = NodeImages.compare(endpoint, store, listing.items, intents.items)
    pulled = []
    for r in listing.items:
        view = record_view(r, store.record_path(r.image_ref))
        if node is not None:
            view["present"] = r.image_ref in node.present
        pulled.append(view)
    data: dict[str, Any] = {
        "pulledRecords": pulled,
        "pullIntents": [
            {"image": i.image, "file": store.intent_path(i.image)} for i in intents.items
        ],
        "errors": [str(e) for e in [*listing.errors, *intents.errors]],
    }
    if node is not None:
        data["runtimeEndpoint"] = node.endpoint
        data["imagesWithoutRecord"] = [u.view() for u in node.unrecorded]
        data["counts"] = node.counts(len(listing.items))
    return data


def ls(root: Path, *args: str, code: int = 0) -> Result:
    result = CliRunner().invoke(main, ["records", "ls", "--root", str(root), *args])
    assert result.exit_code == code, (result.exit_code, result.stdout, result.stderr)
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result


def yaml_and_reference(root: Path, *args: str, code: int = 0) -> tuple[bytes, bytes]:
    """(``ls ARGS -o yaml``'s bytes, the whole dump of ``ls ARGS -o json``'s document)."""
    streamed = ls(root, *args, "-o", "yaml", code=code).stdout_bytes
    document = json.loads(ls(root, *args, "-o", "json", code=code).stdout)
    assert yaml.safe_load(streamed) == document
    return streamed, whole_dump(document).encode()


# -- byte for byte the whole dump ---------------------------------------------------------------


def test_the_records_exercise_quoting_wrapping_and_unicode(root: Path) -> None:
    text = ls(root, "-o", "yaml").stdout
    assert "'yes'" in text and "'null'" in text and "'1.0'" in text and "' leading space'" in text
    assert "日本語/イメージ:最新" in text and "😀" in text  # allow_unicode
    assert "credentialMapping: {}" in text and ": {}\n" in text
    assert "nodePodsAccessible: true" in text and "kubernetesServiceAccounts:" in text
    assert "\n      - uid: " in text  # a secret at its depth, not the record's
    assert "\n    ? 'registry.example/" in text  # too long for a simple key
    assert "\n          word word" in text  # wrapped at the width, indented to its depth
    assert '"bell\\a' in text  # double quoted, with escapes


def test_ls_yaml_is_the_whole_dump_of_the_old_document(root: Path) -> None:
    assert ls(root, "-o", "yaml").stdout_bytes == whole_dump(old_document(root)).encode()


def test_ls_yaml_is_the_whole_dump_of_the_json_document(root: Path) -> None:
    streamed, reference = yaml_and_reference(root)
    assert streamed == reference


def test_a_broken_file_is_in_errors_after_the_records(broken_root: Path) -> None:
    result = ls(broken_root, "-o", "yaml", code=1)
    old = old_document(broken_root)
    assert len(old["errors"]) == 1
    assert result.stdout_bytes == whole_dump(old).encode()
    assert yaml.safe_load(result.stdout)["errors"] == old["errors"] != []
    streamed, reference = yaml_and_reference(broken_root, code=1)
    assert streamed == reference


def test_with_the_node_part(broken_root: Path, fake: FakeCRI) -> None:
    endpoint = ("--runtime-endpoint", fake.endpoint)
    result = ls(broken_root, *endpoint, "-o", "yaml", code=1)
    old = old_document(broken_root, fake.endpoint)
    assert {r["present"] for r in old["pulledRecords"]} == {True, False}
    statuses = {
        (u["preloaded"], u["pendingIntent"], u["recordUnreadable"])
        for u in old["imagesWithoutRecord"]
    }
    assert statuses == {(True, False, False), (False, True, False), (False, False, True)}
    assert result.stdout_bytes == whole_dump(old).encode()
    streamed, reference = yaml_and_reference(broken_root, *endpoint, code=1)
    assert streamed == reference


@pytest.mark.parametrize(
    "selects",
    [
        ("--namespace", "nobody"),
        ("--image", "nothing.example/none"),
        ("--secret", "team-a/absent"),
        ("--image", "nginx"),  # no record, one intent
        ("--namespace", "ci"),  # records, no intent
    ],
    ids=" ".join,
)
@pytest.mark.parametrize("with_node", [False, True], ids=["records", "node"])
def test_filters(root: Path, fake: FakeCRI, selects: tuple[str, str], with_node: bool) -> None:
    args = (*selects, *(("--runtime-endpoint", fake.endpoint) if with_node else ()))
    streamed, reference = yaml_and_reference(root, *args)
    assert streamed == reference
    document = yaml.safe_load(streamed)
    if selects[1] in ("nobody", "nothing.example/none", "team-a/absent"):
        assert streamed.startswith(b"pulledRecords: []\npullIntents: []\nerrors: []\n")
        assert document["pulledRecords"] == document["pullIntents"] == []
    if with_node:
        assert list(document)[-3:] == ["runtimeEndpoint", "imagesWithoutRecord", "counts"]


def test_an_empty_root(tmp_path: Path, fake: FakeCRI) -> None:
    (tmp_path / "node").mkdir()
    empty = ls(tmp_path / "node", "-o", "yaml").stdout
    assert empty == "pulledRecords: []\npullIntents: []\nerrors: []\n"
    streamed, reference = yaml_and_reference(tmp_path / "node", "--runtime-endpoint", fake.endpoint)
    assert streamed == reference


def test_the_real_command_writes_the_same(broken_root: Path) -> None:
    """As a process: click's own standard output, not the test runner's."""
    done = pw("records", "ls", "--root", str(broken_root), "-o", "yaml", code=1)
    assert done.stdout == whole_dump(old_document(broken_root))


# -- streamed -------------------------------------------------------------------------------------


def many_records(n: int) -> list[ImagePulledRecord]:
    secret = ImagePullSecret("uid", "team", "regcred", "cd" * 32)
    creds = ImagePullCredentials(kubernetes_secrets=(secret,))
    return [
        ImagePulledRecord(ref(i + 1), T, {f"registry.example/app-{i}": creds}) for i in range(n)
    ]


class Watch:
    """How many records ``ls`` had read each time a piece of its output reached click."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.read = 0
        self.flushes: list[tuple[int, str]] = []  # (records read, what reached click)
        iter_records = FileRecordStore.iter_pulled_records
        flush = Output.flush
        watch = self

        def counting(store: FileRecordStore) -> Iterator[Any]:
            for item in iter_records(store):
                watch.read += 1
                yield item

        def watched(out: Output) -> None:
            pending = "".join(out._parts)
            if pending:
                watch.flushes.append((watch.read, pending))
            flush(out)

        monkeypatch.setattr(FileRecordStore, "iter_pulled_records", counting)
        monkeypatch.setattr(Output, "flush", watched)


def test_output_starts_before_the_last_record_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 1000  # about 450 KB of YAML: several of Output's 64 KiB pieces
    root = write_root(tmp_path / "node", many_records(n))
    watch = Watch(monkeypatch)
    result = ls(root, "-o", "yaml")
    assert watch.read == n
    assert len(watch.flushes) > 3
    first_read, first = watch.flushes[0]
    assert first.startswith("pulledRecords:\n- file: ")
    assert first_read < n // 2
    assert result.stdout == "".join(piece for _, piece in watch.flushes)
    assert result.stdout == whole_dump(old_document(root))


def test_each_record_is_written_before_the_next_is_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 30
    root = write_root(tmp_path / "node", many_records(n), broken=True)
    monkeypatch.setattr(Output, "LIMIT", 1)  # every piece goes to click as it is written
    watch = Watch(monkeypatch)
    result = ls(root, "-o", "yaml", code=1)
    assert watch.read == n + 1  # and the broken file
    pieces = [piece for _, piece in watch.flushes]
    assert result.stdout == "".join(pieces) == whole_dump(old_document(root))
    records = [(read, piece) for read, piece in watch.flushes if "imageRef: " in piece]
    assert len(records) == n
    # The k-th record's piece reached click once k records had been read, maybe the broken one
    # too, and never more: none of them waited for the next record.
    assert all(k <= read <= k + 1 for k, (read, _) in enumerate(records, 1))
    assert records[0][1].startswith("pulledRecords:\n- file: ")
    assert all(piece.startswith("- file: ") for _, piece in records[1:])
    broken = Path(FileRecordStore(root, migrate=False).record_path(BROKEN_REF)).name
    assert [piece for _, piece in watch.flushes if broken in piece] == [
        piece for _, piece in watch.flushes if piece.startswith("errors:\n")
    ]
