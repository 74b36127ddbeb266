"""The decoder's exact-form path: what a kubelet writes is read without the JSON parser, to the
very object the strict decoder gives, and anything else still goes through the strict rules."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pullwarden.errors import RecordDecodeError
from pullwarden.records import _codec
from pullwarden.records._codec import (
    V1ALPHA1,
    V1BETA1,
    _decode_exact,
    _decode_strict,
    decode,
    decode_versioned,
    encode,
    exact_record_key,
    exact_record_summary,
    exact_record_time,
    summarize,
)
from pullwarden.records._model import (
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
)

TESTDATA = Path(__file__).parent / "testdata"
T1 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
REF = "sha256:" + "ab" * 32

# The fixtures a kubelet writes in the exact form (no escapes), and those that are not.
EXACT_FIXTURES = [
    "intent_v1alpha1.json",
    "intent_v1beta1.json",
    "record_combined_v1beta1.json",
    "record_early_year_v1beta1.json",
    "record_empty_credentials_v1beta1.json",
    "record_empty_hash_v1alpha1.json",
    "record_housekeeping_v1alpha1.json",
    "record_housekeeping_v1beta1.json",
    "record_node_v1beta1.json",
    "record_secret_v1alpha1.json",
    "record_secret_v1beta1.json",
    "record_service_account_v1beta1.json",
    "record_sorted_keys_v1beta1.json",
]
OTHER_FIXTURES = [
    "decode_pretty_v1alpha1.json",  # spacing, a fraction, an offset
    "intent_escapes_v1beta1.json",  # Go's \u003c escapes
    "record_escapes_v1beta1.json",
    "record_zero_time_v1beta1.json",  # "lastUpdatedTime":null
]


def fixture(name: str) -> str:
    return (TESTDATA / name).read_bytes().decode()


@pytest.fixture(autouse=True)
def _fresh_memo() -> None:
    _codec._credentials_memo.clear()


@pytest.mark.parametrize("name", EXACT_FIXTURES)
def test_kubelet_fixtures_take_the_exact_path_to_the_strict_result(name: str) -> None:
    text = fixture(name)
    exact = _decode_exact(text)
    assert exact is not None
    assert exact == _decode_strict(text)
    _agrees_with_the_key(text)


@pytest.mark.parametrize("name", OTHER_FIXTURES)
def test_other_forms_go_to_the_strict_decoder(name: str) -> None:
    text = fixture(name)
    assert _decode_exact(text) is None
    assert decode_versioned(text.encode()) == _decode_strict(text)


def test_exact_files_never_reach_the_json_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    def no_parser(text: str, start: int) -> None:
        raise AssertionError("the JSON parser was used")

    monkeypatch.setattr(_codec, "_scan_once", no_parser)
    for name in EXACT_FIXTURES:
        decode((TESTDATA / name).read_bytes())
    with pytest.raises(AssertionError):
        decode((TESTDATA / "record_escapes_v1beta1.json").read_bytes())


def _rec(tail: str, time: str = "2025-01-02T03:04:05Z", version: str = V1BETA1) -> bytes:
    return (
        f'{{"kind":"ImagePulledRecord","apiVersion":"{version}","lastUpdatedTime":"{time}",'
        f'"imageRef":"{REF}"{tail}}}\n'
    ).encode()


SECRET = '{"uid":"u","namespace":"n","name":"s","credentialHash":"h"}'
ACCOUNT = '{"uid":"u","namespace":"n","name":"sa"}'

# Texts that look almost exactly like what a kubelet writes: each must be decided by the strict
# decoder (the exact path declines), with the strict decoder's answer.
INTENT = '{"kind":"ImagePullIntent","apiVersion":"kubelet.config.k8s.io/v1beta1"'


def _map(entries: str) -> bytes:
    return _rec(',"credentialMapping":{' + entries + "}")


NEAR_MISSES: list[tuple[str, bytes]] = [
    ("duplicate mapping key", _map('"a":{},"a":{"nodePodsAccessible":true}')),
    ("year 0", _rec("", time="0000-01-01T00:00:00Z")),
    ("hour 24", _rec("", time="2024-10-21T24:00:00Z")),
    ("leap second", _rec("", time="2016-12-31T23:59:60Z")),
    ("February 30", _rec("", time="2024-02-30T12:00:00Z")),
    (
        "parts without a comma",
        _map(f'"a":{{"kubernetesSecrets":[{SECRET}]"kubernetesServiceAccounts":[{ACCOUNT}]}}'),
    ),
    ("leading comma", _map('"a":{,"nodePodsAccessible":true}')),
    ("trailing comma in mapping", _map('"a":{},')),
    ("secrets without a comma", _map(f'"a":{{"kubernetesSecrets":[{SECRET}{SECRET}]}}')),
    ("two newlines", _rec("") + b"\n"),
    ("trailing data", _rec("") + b"{}"),
    ("unknown version", _rec("", version="kubelet.config.k8s.io/v1beta2")),
    ("unknown field", _rec(',"preloaded":true')),
    ("nodePodsAccessible false", _map('"a":{"nodePodsAccessible":false}')),
    ("empty secrets", _map('"a":{"kubernetesSecrets":[]}')),
    ("empty mapping", _map("")),
    (
        "parts out of order",
        _map(f'"a":{{"nodePodsAccessible":true,"kubernetesSecrets":[{SECRET}]}}'),
    ),
    ("escape in a key", _map(r'"a\u0041":{}')),
    ("raw control character", _map('"a\tb":{}')),
    ("space after a colon", _rec(',"credentialMapping": {"a":{}}')),
    ("secret field missing", _map('"a":{"kubernetesSecrets":[{"uid":"u"}]}')),
    ("service account with a hash", _map(f'"a":{{"kubernetesServiceAccounts":[{SECRET}]}}')),
    ("fraction of a second", _rec("", time="2025-01-02T03:04:05.5Z")),
    ("offset", _rec("", time="2025-01-02T05:04:05+02:00")),
    ("intent with a record field", (INTENT + ',"image":"x","imageRef":"r"}\n').encode()),
    (
        "intent of another group",
        (INTENT.replace("k8s.io/", "k8s.io.evil/") + ',"image":"x"}\n').encode(),
    ),
]


@pytest.mark.parametrize(("label", "data"), NEAR_MISSES, ids=[n[0] for n in NEAR_MISSES])
def test_near_misses_are_left_to_the_strict_decoder(label: str, data: bytes) -> None:
    text = data.decode()
    assert _decode_exact(text) is None
    assert exact_record_key(data) is None
    try:
        expected = _decode_strict(text)
    except RecordDecodeError as err:
        with pytest.raises(RecordDecodeError) as info:
            decode_versioned(data)
        assert str(info.value) == str(err)
    else:
        assert decode_versioned(data) == expected


def test_duplicate_mapping_key_is_still_named() -> None:
    data = _rec(',"credentialMapping":{"a":{},"a":{"nodePodsAccessible":true}}')
    with pytest.raises(RecordDecodeError, match="duplicate field 'a'"):
        decode(data)


def test_shared_credentials_are_one_object_and_change_nothing() -> None:
    creds = ImagePullCredentials((ImagePullSecret("u", "n", "s", "h"),))
    first = decode(encode(ImagePulledRecord("r1", T1, {"x/a": creds})))
    second = decode(encode(ImagePulledRecord("r2", T1, {"x/b": creds})))
    assert isinstance(first, ImagePulledRecord) and isinstance(second, ImagePulledRecord)
    assert first.credential_mapping["x/a"] is second.credential_mapping["x/b"]
    assert first.credential_mapping["x/a"] == creds
    _codec._credentials_memo.clear()
    assert decode(encode(ImagePulledRecord("r2", T1, {"x/b": creds}))) == second


def test_the_memo_stays_bounded() -> None:
    for i in range(_codec._CREDENTIALS_MEMO_SIZE + 10):
        creds = ImagePullCredentials((ImagePullSecret(f"u{i}", "n", "s", "h"),))
        decode(encode(ImagePulledRecord(f"r{i}", T1, {"x/a": creds})))
    assert len(_codec._credentials_memo) <= _codec._CREDENTIALS_MEMO_SIZE


# Strings drawn mostly from characters the exact form allows, with the odd one it does not.
_text = st.text(
    alphabet=st.one_of(
        st.sampled_from("abz09-./:_@ ÄéΩ日本\u2028\U0001f600"),
        st.sampled_from('"\\<>&\x00\x1f\x7f'),
    ),
    max_size=8,
)
_secrets = st.builds(ImagePullSecret, _text, _text, _text, _text)
_accounts = st.builds(ImagePullServiceAccount, _text, _text, _text)
_credentials = st.builds(
    ImagePullCredentials,
    st.lists(_secrets, max_size=3).map(tuple),
    st.lists(_accounts, max_size=3).map(tuple),
    st.booleans(),
)
_times = st.datetimes(
    min_value=datetime(1, 1, 1), max_value=datetime(9999, 12, 31), timezones=st.just(UTC)
)
_records = st.builds(
    ImagePulledRecord, _text, _times, st.dictionaries(_text, _credentials, max_size=4)
)
_objects = st.one_of(st.builds(ImagePullIntent, _text), _records)


@settings(max_examples=400, deadline=None)
@given(_objects, st.sampled_from([V1ALPHA1, V1BETA1]))
def test_exact_path_agrees_with_the_strict_decoder(
    obj: ImagePullIntent | ImagePulledRecord, version: str
) -> None:
    text = encode(obj, version).decode()
    exact = _decode_exact(text)
    if exact is not None:
        assert exact == _decode_strict(text)
    assert decode_versioned(text.encode()) == _decode_strict(text)
    _agrees_with_the_key(text)


def _agrees_with_the_key(text: str) -> None:
    """exact_record_key says yes exactly when the exact path builds a record, with its key."""
    exact = _decode_exact(text)
    key = exact_record_key(text.encode())
    if exact is None or not isinstance(exact[0], ImagePulledRecord):
        assert key is None
    else:
        assert key == (exact[1], exact[0].image_ref, exact[0].last_updated_time)
        if exact[1] == V1BETA1:
            assert exact_record_time(text.encode()) == exact[0].last_updated_time
    summary = exact_record_summary(text.encode())
    assert (summary is None) == (key is None)
    if summary is not None:
        assert exact is not None and isinstance(exact[0], ImagePulledRecord)
        assert summary == summarize(exact[0])


@settings(max_examples=400, deadline=None)
@given(_objects, st.integers(min_value=0, max_value=300), st.sampled_from(list('{}[],:"a \n\\')))
def test_a_mutated_file_is_accepted_by_the_exact_path_only_if_the_strict_one_agrees(
    obj: ImagePullIntent | ImagePulledRecord, at: int, junk: str
) -> None:
    text = encode(obj).decode()
    at = min(at, len(text))
    for mutated in (text[:at], text[:at] + junk + text[at:], text[:at] + text[at + 1 :]):
        _agrees_with_the_key(mutated)
        exact = _decode_exact(mutated)
        if exact is None:
            continue
        assert exact == _decode_strict(mutated)


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet='{}[],:"ak \nZ0T-', max_size=120))
def test_arbitrary_text_never_fools_the_exact_path(text: str) -> None:
    exact = _decode_exact(text)
    if exact is not None:
        assert exact == _decode_strict(text)
    _agrees_with_the_key(text)
    with contextlib.suppress(RecordDecodeError):
        decode_versioned(text.encode())
