"""``records ls`` and ``records check`` write their output in large pieces, and write exactly
what one ``click.echo`` per line (and ``json.dumps(..., indent=2)``) wrote before."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from pullwarden._gojson import format_rfc3339
from pullwarden.cli import main
from pullwarden.cli import records as cli_records
from pullwarden.cli.records import Output, record_view, write_json
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
    scan,
)

T = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
N = 600


def _record(i: int) -> ImagePulledRecord:
    kind = i % 4
    name = f"registry.example/team-{i % 7}/app-{i}" + ("-ünï" if i % 5 == 0 else "")
    if kind == 0:
        creds = ImagePullCredentials((ImagePullSecret(f"uid-{i}", "team", "regcred", "h"),))
    elif kind == 1:
        creds = ImagePullCredentials(
            kubernetes_service_accounts=(ImagePullServiceAccount("sa", "team", "builder"),)
        )
    elif kind == 2:
        creds = ImagePullCredentials(node_pods_accessible=True)
    else:
        return ImagePulledRecord(f"sha256:{i:064x}", T + timedelta(seconds=i))  # housekeeping
    mapping = {name: creds}
    if i % 9 == 0:
        mapping["mirror.example/\x1b[31mred\x1b[0m"] = creds  # ANSI codes, as a name may hold
    return ImagePulledRecord(f"sha256:{i:064x}", T + timedelta(seconds=i), mapping)


@pytest.fixture
def kubelet(tmp_path: Path) -> Path:
    store = FileRecordStore(tmp_path)
    for i in range(N):
        store.write_pulled_record(_record(i))
    for image in ("nginx", "registry.example/ünï:v1", "busybox:1"):
        store.write_intent(ImagePullIntent(image))
    return tmp_path


def _echoed(lines: list[str]) -> str:
    """What one click.echo per line writes to a CliRunner (not a terminal: ANSI codes go)."""
    return "".join(click.unstyle(line) + "\n" for line in lines)


def _old_table(rows: list[tuple[str, ...]], indent: str = "") -> list[str]:
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        (indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True))).rstrip()
        for row in rows
    ]


def _old_summary(r: ImagePulledRecord) -> tuple[int, int, bool]:
    entries = r.credential_mapping.values()
    return (
        sum(len(c.kubernetes_secrets) for c in entries),
        sum(len(c.kubernetes_service_accounts) for c in entries),
        any(c.node_pods_accessible for c in entries),
    )


def _old_ls_text(store: FileRecordStore) -> str:
    pulled = store.list_pulled_records().items
    header = ("IMAGE REF", "NAMES", "SECRETS", "SERVICE ACCOUNTS", "NODE-WIDE", "LAST UPDATED")
    rows: list[tuple[str, ...]] = [header]
    for r in sorted(pulled, key=lambda r: r.image_ref):
        n_secrets, n_accounts, node_wide = _old_summary(r)
        rows.append(
            (
                r.image_ref,
                ",".join(sorted(r.credential_mapping)) or "<none>",
                str(n_secrets),
                str(n_accounts),
                "yes" if node_wide else "no",
                format_rfc3339(r.last_updated_time),
            )
        )
    lines = _old_table(rows)
    lines.append("\nPENDING PULL INTENTS")
    lines += [f"  {i.image}" for i in sorted(store.list_intents().items, key=lambda i: i.image)]
    return _echoed(lines)


def _old_ls_json(store: FileRecordStore) -> str:
    data = {
        "pulledRecords": [
            record_view(r, store.record_path(r.image_ref))
            for r in store.list_pulled_records().items
        ],
        "pullIntents": [
            {"image": i.image, "file": store.intent_path(i.image)}
            for i in store.list_intents().items
        ],
        "errors": [],
    }
    return _echoed([json.dumps(data, indent=2, ensure_ascii=False)])


class EchoCount:
    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls = 0
        real = click.echo

        def counting(*args: Any, **kwargs: Any) -> None:
            self.calls += 1
            real(*args, **kwargs)

        monkeypatch.setattr(click, "echo", counting)


def test_ls_table_is_what_it_was_in_few_writes(
    kubelet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    echo = EchoCount(monkeypatch)
    result = CliRunner().invoke(main, ["records", "ls", "-d", str(kubelet)])
    assert result.exit_code == 0, result.output
    assert result.output == _old_ls_text(FileRecordStore(kubelet, migrate=False))
    assert echo.calls <= 4  # 600 rows: about one write per 64 KiB


def test_ls_json_is_what_it_was_in_few_writes(
    kubelet: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    echo = EchoCount(monkeypatch)
    result = CliRunner().invoke(main, ["records", "ls", "-d", str(kubelet), "-o", "json"])
    assert result.exit_code == 0, result.output
    assert result.output == _old_ls_json(FileRecordStore(kubelet, migrate=False))
    assert echo.calls <= 8


def test_ls_of_an_empty_directory(tmp_path: Path) -> None:
    FileRecordStore(tmp_path)
    store = FileRecordStore(tmp_path, migrate=False)
    text = CliRunner().invoke(main, ["records", "ls", "-d", str(tmp_path)])
    header = _old_table(
        [("IMAGE REF", "NAMES", "SECRETS", "SERVICE ACCOUNTS", "NODE-WIDE", "LAST UPDATED")]
    )
    assert text.output == _echoed(header)
    data = CliRunner().invoke(main, ["records", "ls", "-d", str(tmp_path), "-o", "json"])
    assert data.output == _old_ls_json(store)


def _broken(kubelet: Path) -> None:
    pulled = kubelet / "image_manager" / "pulled"
    for i in range(300):
        (pulled / f"sha256-{i:064x}ünï").write_bytes(b"{broken")
    (pulled / ("sha256-" + "f" * 64 + ".tmp")).write_bytes(b"{")


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_check_is_what_it_was_in_few_writes(
    kubelet: Path, monkeypatch: pytest.MonkeyPatch, fmt: str
) -> None:
    _broken(kubelet)
    problems = [
        {"path": p.path, "problem": p.kind.value, "message": p.message} for p in scan(kubelet)
    ]
    assert len(problems) == 301
    echo = EchoCount(monkeypatch)
    result = CliRunner().invoke(main, ["records", "check", "-d", str(kubelet), "-o", fmt])
    assert result.exit_code == 1
    if fmt == "json":
        assert result.output == _echoed([json.dumps(problems, indent=2)])
    else:
        assert result.output == _echoed(
            [f"{p['problem']:<12} {p['path']}: {p['message']}" for p in problems]
        )
    assert echo.calls <= 4


def test_check_of_a_clean_directory(kubelet: Path) -> None:
    text = CliRunner().invoke(main, ["records", "check", "-d", str(kubelet)])
    assert text.exit_code == 0
    assert text.output == f"ok: every file under {kubelet}/image_manager decodes\n"
    data = CliRunner().invoke(main, ["records", "check", "-d", str(kubelet), "-o", "json"])
    assert data.output == "[]\n"


# -- the JSON writer ------------------------------------------------------------------------------

_keys = st.text(max_size=6)
_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(10**30), max_value=10**30),
    st.text(max_size=10),
)
_values = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(_keys, inner, max_size=4)),
    max_leaves=25,
)


class Collected(Output):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []

    def write(self, text: str) -> None:
        self.text.append(text)


def _written(value: object, ensure_ascii: bool) -> str:
    out = Collected()
    write_json(out, value, ensure_ascii=ensure_ascii)
    return "".join(out.text)


@settings(max_examples=300, deadline=None)
@given(_values, st.booleans())
def test_write_json_is_json_dumps_with_indent_2(value: object, ensure_ascii: bool) -> None:
    expected = json.dumps(value, indent=2, ensure_ascii=ensure_ascii) + "\n"
    assert _written(value, ensure_ascii) == expected


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(_keys, st.lists(_values, max_size=4), max_size=3), st.booleans())
def test_write_json_takes_iterators_at_the_outer_levels(
    value: dict[str, list[object]], ensure_ascii: bool
) -> None:
    def lazy(items: list[object]) -> Iterator[object]:
        yield from items

    expected = json.dumps(value, indent=2, ensure_ascii=ensure_ascii) + "\n"
    assert _written({k: lazy(v) for k, v in value.items()}, ensure_ascii) == expected
    assert _written(lazy(list(value.values())), ensure_ascii) == (
        json.dumps(list(value.values()), indent=2, ensure_ascii=ensure_ascii) + "\n"
    )


def test_write_json_refuses_what_it_cannot_write() -> None:
    with pytest.raises(TypeError):
        _written({"a": [{"b": 1.5}]}, True)
    with pytest.raises(TypeError):
        _written({"a": [{1: "x"}]}, True)


def test_output_writes_in_pieces_of_about_64_kib(monkeypatch: pytest.MonkeyPatch) -> None:
    pieces: list[str] = []
    monkeypatch.setattr(click, "echo", lambda text, nl=True: pieces.append(text))
    out = Output()
    for i in range(10_000):
        out.line(f"line {i:>20}")
    out.flush()
    assert "".join(pieces) == "".join(f"line {i:>20}\n" for i in range(10_000))
    assert 3 <= len(pieces) <= 6


def test_ls_with_files_that_do_not_decode(kubelet: Path) -> None:
    pulled = kubelet / "image_manager" / "pulled"
    (pulled / ("sha256-" + "0" * 64)).write_bytes(b"{broken")
    (pulled / ("sha256-" + "f" * 64)).write_bytes(b'{"kind":"ImagePullIntent"}')
    store = FileRecordStore(kubelet, migrate=False)
    errors = store.list_pulled_records().errors
    assert len(errors) == 2
    text = CliRunner().invoke(main, ["records", "ls", "-d", str(kubelet)])
    assert text.exit_code == 1
    assert text.stdout == _old_ls_text(store)
    assert text.stderr == "".join(f"warning: {e}\n" for e in errors)
    data = CliRunner().invoke(main, ["records", "ls", "-d", str(kubelet), "-o", "json"])
    assert data.exit_code == 1
    assert json.loads(data.stdout)["errors"] == [str(e) for e in errors]
    expected = json.loads(_old_ls_json(store))
    expected["errors"] = [str(e) for e in errors]
    assert data.stdout == json.dumps(expected, indent=2, ensure_ascii=False) + "\n"


@settings(max_examples=300, deadline=None)
@given(
    st.datetimes(
        min_value=datetime(1, 1, 1),
        max_value=datetime(9999, 12, 31),
        timezones=st.sampled_from([UTC, timezone(timedelta(hours=2))]),
    )
)
def test_the_table_writes_times_as_format_rfc3339_does(t: datetime) -> None:
    assert cli_records._rfc3339(t) == format_rfc3339(t)
    assert cli_records._rfc3339(t.replace(microsecond=0)) == format_rfc3339(t)


_names = st.text(max_size=6)
_utc_times = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)
_secrets = st.builds(ImagePullSecret, _names, _names, _names, _names)
_accounts = st.builds(ImagePullServiceAccount, _names, _names, _names)
_creds = st.builds(
    ImagePullCredentials,
    st.lists(_secrets, max_size=2).map(tuple),
    st.lists(_accounts, max_size=2).map(tuple),
    st.booleans(),
)
_record_strategy = st.builds(
    ImagePulledRecord, _names, _utc_times, st.dictionaries(_names, _creds, max_size=3)
)


@settings(max_examples=300, deadline=None)
@given(_record_strategy, st.sampled_from([None, True, False]), st.sampled_from(["", "    "]))
def test_record_json_is_the_view_as_json_dumps_writes_it(
    r: ImagePulledRecord, present: bool | None, indent: str
) -> None:
    view = record_view(r, "/k/image_manager/pulled/sha256-x")
    if present is not None:
        view["present"] = present
    for ensure_ascii, quote in (
        (False, json.encoder.encode_basestring),
        (True, json.encoder.encode_basestring_ascii),
    ):
        expected = json.dumps([view], indent=2, ensure_ascii=ensure_ascii)
        got = cli_records.record_json(r, view["file"], present, "  ", quote)
        assert expected == "[\n  " + got + "\n]"
        if indent == "":
            assert cli_records.record_json(r, view["file"], present, "", quote) == json.dumps(
                view, indent=2, ensure_ascii=ensure_ascii
            )
