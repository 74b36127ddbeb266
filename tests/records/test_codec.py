"""The record codec: byte-exact kubelet output, strict decoding, round trips (spec §4.4-§4.6)."""

from __future__ import annotations

import contextlib
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pullwarden.errors import RecordDecodeError
from pullwarden.records._codec import (
    CURRENT_VERSION,
    GROUP,
    V1ALPHA1,
    V1BETA1,
    ZERO_TIME,
    decode,
    decode_versioned,
    encode,
)
from pullwarden.records._model import (
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
)

TESTDATA = Path(__file__).parent / "testdata"

HASH = "a55436fc" + "0123456789abcdef" * 3 + "691d0000"
REF1 = "sha256:" + "0123456789abcdef" * 4
REF2 = "sha256:" + "4567" * 16
REF3 = "sha256:" + "89ab" * 16
REF4 = "sha256:" + "cdef" * 16
T1 = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
T2 = datetime(2024, 10, 21, 12, 26, 40, tzinfo=UTC)


def secret(uid: str, ns: str, name: str, h: str = "") -> ImagePullSecret:
    return ImagePullSecret(uid=uid, namespace=ns, name=name, credential_hash=h)


def creds(
    secrets: list[ImagePullSecret] | None = None,
    accounts: list[ImagePullServiceAccount] | None = None,
    node: bool = False,
) -> ImagePullCredentials:
    return ImagePullCredentials(
        kubernetes_secrets=tuple(secrets or ()),
        kubernetes_service_accounts=tuple(accounts or ()),
        node_pods_accessible=node,
    )


def record(
    ref: str, t: datetime, mapping: dict[str, ImagePullCredentials] | None = None
) -> ImagePulledRecord:
    return ImagePulledRecord(image_ref=ref, last_updated_time=t, credential_mapping=mapping or {})


SECRET_RECORD = record(
    REF1,
    T1,
    {
        "registry.example/team/app": creds(
            [secret("6f1c2a3b-0000-4000-8000-000000000001", "team-a", "regcred", HASH)]
        )
    },
)

# (fixture file, object, apiVersion): encode(object, apiVersion) must equal the file, byte for byte.
GOLDEN: list[tuple[str, ImagePullIntent | ImagePulledRecord, str]] = [
    ("intent_v1beta1.json", ImagePullIntent("registry.example/team/app:v1"), V1BETA1),
    ("intent_v1alpha1.json", ImagePullIntent("registry.example/team/app:v1"), V1ALPHA1),
    ("record_secret_v1beta1.json", SECRET_RECORD, V1BETA1),
    ("record_secret_v1alpha1.json", SECRET_RECORD, V1ALPHA1),
    (
        "record_service_account_v1beta1.json",
        record(
            REF2,
            T1,
            {
                "registry.example/team/app": creds(
                    accounts=[
                        ImagePullServiceAccount(
                            "9a0b1c2d-0000-4000-8000-000000000002", "team-a", "builder"
                        )
                    ]
                )
            },
        ),
        V1BETA1,
    ),
    (
        "record_node_v1beta1.json",
        record(REF3, T1, {"docker.io/library/busybox": creds(node=True)}),
        V1BETA1,
    ),
    ("record_housekeeping_v1beta1.json", record(REF4, T1), V1BETA1),
    ("record_housekeeping_v1alpha1.json", record(REF4, T1), V1ALPHA1),
    (
        "record_sorted_keys_v1beta1.json",
        record(
            REF1,
            T2,
            {
                "registry.example/\u00e4lpha": creds(),
                "registry.example/zeta": creds([secret("u1", "ns", "s", "h")]),
                "registry.example/alpha": creds(
                    accounts=[ImagePullServiceAccount("u2", "ns", "sa")]
                ),
                "registry.example/Zeta": creds(node=True),
            },
        ),
        V1BETA1,
    ),
    (
        "record_combined_v1beta1.json",
        record(
            REF2,
            datetime(2025, 6, 30, 23, 59, 59, tzinfo=UTC),
            {
                "registry.example/team/app": creds(
                    [secret("uid-1", "team-a", "one"), secret("uid-2", "team-b", "two", HASH)],
                    [
                        ImagePullServiceAccount("sa-1", "team-a", "default"),
                        ImagePullServiceAccount("sa-2", "team-b", "builder"),
                    ],
                    node=True,
                )
            },
        ),
        V1BETA1,
    ),
    (
        "record_empty_hash_v1alpha1.json",
        record(
            "testimageref",
            T2,
            {"docker.io/testing/test": creds([secret("testsecretuid", "default", "pull-secret")])},
        ),
        V1ALPHA1,
    ),
    (
        "record_escapes_v1beta1.json",
        record(
            "ref\u2028line\u2029para",
            T1,
            {
                "registry.example/<team>&app": creds(
                    [
                        secret(
                            '"quoted" \\ back',
                            "\u00e9quipe-\u65e5\u672c",
                            "tab\there\nnl\x01\x1f\x7f",
                            "\U0001f600",
                        )
                    ]
                )
            },
        ),
        V1BETA1,
    ),
    ("intent_escapes_v1beta1.json", ImagePullIntent("registry.example/a&b:<v1>"), V1BETA1),
    ("record_zero_time_v1beta1.json", record(REF4, ZERO_TIME), V1BETA1),
    (
        "record_early_year_v1beta1.json",
        record(REF4, datetime(99, 2, 3, 4, 5, 6, tzinfo=UTC)),
        V1BETA1,
    ),
    (
        "record_empty_credentials_v1beta1.json",
        record(REF4, T1, {"registry.example/team/app": creds()}),
        V1BETA1,
    ),
]


def fixture(name: str) -> bytes:
    return (TESTDATA / name).read_bytes()


# --------------------------------------------------------------------------------------------
# Golden bytes
# --------------------------------------------------------------------------------------------


def test_constants() -> None:
    assert GROUP == "kubelet.config.k8s.io"
    assert V1ALPHA1 == "kubelet.config.k8s.io/v1alpha1"
    assert V1BETA1 == "kubelet.config.k8s.io/v1beta1"
    assert CURRENT_VERSION == V1BETA1
    assert datetime(1, 1, 1, tzinfo=UTC) == ZERO_TIME


@pytest.mark.parametrize(("name", "obj", "version"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_encode_golden(name: str, obj: ImagePullIntent | ImagePulledRecord, version: str) -> None:
    assert encode(obj, version) == fixture(name)


@pytest.mark.parametrize(("name", "obj", "version"), GOLDEN, ids=[g[0] for g in GOLDEN])
def test_decode_golden(name: str, obj: ImagePullIntent | ImagePulledRecord, version: str) -> None:
    assert decode_versioned(fixture(name)) == (obj, version)
    assert decode(fixture(name)) == obj


def test_default_version_is_v1beta1() -> None:
    assert encode(SECRET_RECORD) == fixture("record_secret_v1beta1.json")


def test_encode_truncates_to_whole_seconds_in_utc() -> None:
    plus2 = timezone(timedelta(hours=2))
    t = datetime(2025, 1, 2, 5, 4, 5, 999_999, tzinfo=plus2)
    assert encode(record(REF4, t)) == fixture("record_housekeeping_v1beta1.json")
    naive = datetime(2025, 1, 2, 3, 4, 5, 123)  # naive datetimes are taken as UTC
    assert encode(record(REF4, naive)) == fixture("record_housekeeping_v1beta1.json")


def test_zero_time_is_written_as_null_but_not_a_nearby_time() -> None:
    # Go's IsZero needs the exact zero instant; 0.5 s later it is written as a time.
    out = encode(record(REF4, ZERO_TIME + timedelta(microseconds=500_000)))
    assert b'"lastUpdatedTime":"0001-01-01T00:00:00Z"' in out
    # ...which decodes to the zero time, written as null from then on (Go does the same).
    assert encode(decode(out)) == fixture("record_zero_time_v1beta1.json")
    naive_zero = datetime(1, 1, 1)
    assert encode(record(REF4, naive_zero)) == fixture("record_zero_time_v1beta1.json")


def test_invalid_utf8_in_strings_is_written_as_replacement_escapes() -> None:
    image = b"registry.example/a\xffb".decode("utf-8", "surrogateescape")
    assert encode(ImagePullIntent(image)).endswith(b'"image":"registry.example/a\\ufffdb"}\n')


def test_map_keys_sorted_by_go_bytes_not_code_points() -> None:
    # A raw byte 0x80 (held as U+DC80) sorts before U+00E9 (0xC3 0xA9) in Go's byte order,
    # though U+DC80 > U+00E9 as code points.
    raw = b"k\x80".decode("utf-8", "surrogateescape")
    out = encode(record(REF4, T1, {"k\u00e9": creds(), raw: creds()}))
    assert out.index(b'"k\\ufffd"') < out.index('"k\u00e9"'.encode())


def test_encode_rejects_unknown_version_and_type() -> None:
    with pytest.raises(ValueError):
        encode(ImagePullIntent("x"), GROUP + "/v1")
    with pytest.raises(ValueError):
        encode(record(REF4, T1), "v1beta1")
    with pytest.raises(TypeError):
        encode("nope")  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Decoding: what a kubelet accepts
# --------------------------------------------------------------------------------------------


def test_decode_pretty_printed_alpha_with_fraction_and_offset() -> None:
    obj, version = decode_versioned(fixture("decode_pretty_v1alpha1.json"))
    assert version == V1ALPHA1
    assert isinstance(obj, ImagePulledRecord)
    assert obj.last_updated_time == datetime(2024, 10, 21, 12, 26, 40, 123456, tzinfo=UTC)
    assert obj.credential_mapping == {
        "docker.io/testing/test": creds([secret("u", "default", "pull-secret", "h")])
    }
    # Re-encoded in v1beta1: whole seconds, UTC, compact.
    assert encode(obj).startswith(
        b'{"kind":"ImagePulledRecord","apiVersion":"kubelet.config.k8s.io/v1beta1",'
        b'"lastUpdatedTime":"2024-10-21T12:26:40Z",'
    )


def _rec(fields: str, version: str = V1BETA1) -> bytes:
    return ('{"kind":"ImagePulledRecord","apiVersion":"' + version + '"' + fields + "}").encode()


def _intent(fields: str, version: str = V1BETA1) -> bytes:
    return ('{"kind":"ImagePullIntent","apiVersion":"' + version + '"' + fields + "}").encode()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ('"2024-10-21T12:26:40Z"', datetime(2024, 10, 21, 12, 26, 40, tzinfo=UTC)),
        ('"2024-10-21T12:26:40.5Z"', datetime(2024, 10, 21, 12, 26, 40, 500000, tzinfo=UTC)),
        ('"2024-10-21T12:26:40,25Z"', datetime(2024, 10, 21, 12, 26, 40, 250000, tzinfo=UTC)),
        (
            '"2024-10-21T12:26:40.1234567891234Z"',
            datetime(2024, 10, 21, 12, 26, 40, 123456, tzinfo=UTC),
        ),
        ('"2024-10-21T14:26:40+02:00"', datetime(2024, 10, 21, 12, 26, 40, tzinfo=UTC)),
        ('"2024-10-21T07:56:40-04:30"', datetime(2024, 10, 21, 12, 26, 40, tzinfo=UTC)),
        ('"2024-10-22T00:26:40+12:00"', datetime(2024, 10, 21, 12, 26, 40, tzinfo=UTC)),
        ('"2024-10-21T2:26:40Z"', datetime(2024, 10, 21, 2, 26, 40, tzinfo=UTC)),
        ('"2024-02-29T00:00:00Z"', datetime(2024, 2, 29, tzinfo=UTC)),
        ("null", ZERO_TIME),
    ],
)
def test_decode_times(value: str, expected: datetime) -> None:
    obj = decode(_rec(f',"lastUpdatedTime":{value},"imageRef":"r"'))
    assert isinstance(obj, ImagePulledRecord)
    assert obj.last_updated_time == expected
    assert obj.last_updated_time.tzinfo is UTC


def test_missing_fields_decode_to_go_zero_values() -> None:
    assert decode(_intent("")) == ImagePullIntent("")
    assert decode(_rec("")) == record("", ZERO_TIME)
    assert decode(_intent(',"image":null')) == ImagePullIntent("")


def test_nulls_decode_to_zero_values() -> None:
    got = decode(
        _rec(
            ',"lastUpdatedTime":null,"imageRef":null,"credentialMapping":{'
            '"a":null,'
            '"b":{"kubernetesSecrets":null,"kubernetesServiceAccounts":null,'
            '"nodePodsAccessible":null},'
            '"c":{"kubernetesSecrets":[null,{"uid":null,"namespace":"n","name":"x",'
            '"credentialHash":null}],"kubernetesServiceAccounts":[null]}}'
        )
    )
    assert got == record(
        "",
        ZERO_TIME,
        {
            "a": creds(),
            "b": creds(),
            "c": creds(
                [secret("", "", ""), secret("", "n", "x")],
                [ImagePullServiceAccount("", "", "")],
            ),
        },
    )
    assert decode(_rec(',"credentialMapping":null')) == record("", ZERO_TIME)


def test_empty_lists_and_false_decode_like_absent() -> None:
    got = decode(
        _rec(
            ',"lastUpdatedTime":"2025-01-02T03:04:05Z","imageRef":"r","credentialMapping":'
            '{"a":{"kubernetesSecrets":[],"kubernetesServiceAccounts":[],'
            '"nodePodsAccessible":false}}'
        )
    )
    assert got == record("r", T1, {"a": creds()})
    assert encode(got).endswith(b'"credentialMapping":{"a":{}}}\n')


def test_service_accounts_accepted_in_v1alpha1() -> None:
    got = decode(
        _rec(
            ',"imageRef":"r","credentialMapping":{"a":{"kubernetesServiceAccounts":'
            '[{"uid":"u","namespace":"n","name":"s"}]}}',
            V1ALPHA1,
        )
    )
    assert got == record(
        "r", ZERO_TIME, {"a": creds(accounts=[ImagePullServiceAccount("u", "n", "s")])}
    )


def test_escaped_strings_and_lone_surrogates() -> None:
    got = decode(_intent(r',"image":"a\u0041\ud83d\ude00\ud800b\udc00"'))
    # Paired surrogates combine; lone ones become U+FFFD, as Go decodes them.
    assert got == ImagePullIntent("aA\U0001f600\ufffdb\ufffd")
    assert decode(_intent(r',"im\u0061ge":"x"')) == ImagePullIntent("x")


def test_surrounding_whitespace_is_fine() -> None:
    assert decode(b" \t\r\n" + _intent(',"image":"x"') + b"\n\n ") == ImagePullIntent("x")


# --------------------------------------------------------------------------------------------
# Decoding: what a kubelet rejects
# --------------------------------------------------------------------------------------------

REJECT: list[tuple[str, bytes]] = [
    ("empty", b""),
    ("whitespace only", b"  \n"),
    ("truncated", fixture("decode_broken.json")),
    ("truncated after value", _intent(',"image":"x"')[:-1]),
    ("trailing data", _intent(',"image":"x"') + b"{}"),
    ("two documents", _intent(',"image":"x"') + b"\n" + _intent(',"image":"x"')),
    ("not an object: array", b'[{"kind":"ImagePullIntent"}]'),
    ("not an object: string", b'"ImagePullIntent"'),
    ("not an object: null", b"null"),
    ("not an object: number", b"42"),
    ("invalid utf-8", _intent(',"image":"@"').replace(b"@", b"\xff")),
    ("overlong utf-8", _intent(',"image":"@"').replace(b"@", b"\xc0\xaf")),
    ("encoded surrogate", _intent(',"image":"@"').replace(b"@", b"\xed\xa0\x80")),
    ("utf-8 BOM", b"\xef\xbb\xbf" + _intent(',"image":"x"')),
    ("utf-16", _intent(',"image":"x"').decode().encode("utf-16")),
    ("NaN", _rec(',"imageRef":NaN')),
    ("raw control char", _intent(',"image":"a\tb"')),
    ("single quotes", b"{'kind':'ImagePullIntent'}"),
    ("yaml", b"kind: ImagePullIntent\napiVersion: kubelet.config.k8s.io/v1beta1\nimage: x\n"),
    ("missing kind", b'{"apiVersion":"kubelet.config.k8s.io/v1beta1","image":"x"}'),
    ("missing apiVersion", b'{"kind":"ImagePullIntent","image":"x"}'),
    ("empty kind", b'{"kind":"","apiVersion":"kubelet.config.k8s.io/v1beta1"}'),
    ("null kind", b'{"kind":null,"apiVersion":"kubelet.config.k8s.io/v1beta1"}'),
    ("numeric apiVersion", b'{"kind":"ImagePullIntent","apiVersion":1}'),
    ("wrong kind", _intent("").replace(b"ImagePullIntent", b"ImagePullIntents")),
    ("kind wrong case", _intent("").replace(b"ImagePullIntent", b"imagePullIntent")),
    ("kubelet configuration", fixture("decode_kubelet_configuration.json")),
    ("pre-release group", fixture("decode_prerelease_group.json")),
    ("wrong group", _intent(',"image":"x"', "kubelet.config.k8s.io.evil/v1beta1")),
    ("unknown version v1", _intent(',"image":"x"', GROUP + "/v1")),
    ("unknown version v1beta2", _rec(',"imageRef":"r"', GROUP + "/v1beta2")),
    ("version without group", _intent(',"image":"x"', "v1beta1")),
    ("KIND field name case", _intent(',"image":"x"').replace(b'"kind"', b'"Kind"')),
    ("field name case", _intent(',"Image":"x"')),
    ("unknown top-level field", _intent(',"image":"x","preloaded":true')),
    ("record field in intent", _intent(',"image":"x","imageRef":"r"')),
    ("intent field in record", _rec(',"imageRef":"r","image":"x"')),
    ("pre-release credential field", fixture("decode_prerelease_field.json")),
    (
        "unknown credentials field",
        _rec(',"credentialMapping":{"a":{"nodePodsAccessible":true,"preloaded":true}}'),
    ),
    (
        "unknown secret field",
        _rec(
            ',"credentialMapping":{"a":{"kubernetesSecrets":[{"uid":"u","namespace":"n",'
            '"name":"s","credentialHash":"h","extra":""}]}}'
        ),
    ),
    (
        "credentialHash on a service account",
        _rec(
            ',"credentialMapping":{"a":{"kubernetesServiceAccounts":[{"uid":"u",'
            '"namespace":"n","name":"s","credentialHash":"h"}]}}'
        ),
    ),
    (
        "secret field name case",
        _rec(',"credentialMapping":{"a":{"kubernetesSecrets":[{"UID":"u"}]}}'),
    ),
    ("duplicate top-level field", _intent(',"image":"x","image":"x"')),
    ("duplicate kind", _intent(',"image":"x","kind":"ImagePullIntent"')),
    ("duplicate via escape", _intent(r',"image":"x","im\u0061ge":"y"')),
    (
        "keys equal once lone surrogates are replaced",
        _rec(r',"credentialMapping":{"a\ud800":{},"a\udc00":{}}'),
    ),
    (
        "duplicate mapping key",
        _rec(',"credentialMapping":{"a":{},"a":{"nodePodsAccessible":true}}'),
    ),
    (
        "duplicate credentials field",
        _rec(',"credentialMapping":{"a":{"nodePodsAccessible":true,"nodePodsAccessible":true}}'),
    ),
    (
        "duplicate secret field",
        _rec(',"credentialMapping":{"a":{"kubernetesSecrets":[{"uid":"u","uid":"v"}]}}'),
    ),
    (
        "duplicate service account field",
        _rec(',"credentialMapping":{"a":{"kubernetesServiceAccounts":[{"name":"u","name":"u"}]}}'),
    ),
    ("nodePodsAccessible string", _rec(',"credentialMapping":{"a":{"nodePodsAccessible":"yes"}}')),
    ("nodePodsAccessible number", _rec(',"credentialMapping":{"a":{"nodePodsAccessible":1}}')),
    ("image number", _intent(',"image":1')),
    ("image boolean", _intent(',"image":true')),
    ("image object", _intent(',"image":{}')),
    ("imageRef array", _rec(',"imageRef":["r"]')),
    ("credentialMapping array", _rec(',"credentialMapping":[]')),
    ("credentialMapping string", _rec(',"credentialMapping":"a"')),
    ("credentials array", _rec(',"credentialMapping":{"a":[]}')),
    ("credentials boolean", _rec(',"credentialMapping":{"a":true}')),
    ("secrets object", _rec(',"credentialMapping":{"a":{"kubernetesSecrets":{}}}')),
    ("secret string", _rec(',"credentialMapping":{"a":{"kubernetesSecrets":["s"]}}')),
    (
        "secret uid number",
        _rec(',"credentialMapping":{"a":{"kubernetesSecrets":[{"uid":7}]}}'),
    ),
    (
        "service accounts string",
        _rec(',"credentialMapping":{"a":{"kubernetesServiceAccounts":"sa"}}'),
    ),
    (
        "service account name boolean",
        _rec(',"credentialMapping":{"a":{"kubernetesServiceAccounts":[{"name":false}]}}'),
    ),
    ("time number", _rec(',"lastUpdatedTime":1729513600')),
    ("time object", _rec(',"lastUpdatedTime":{}')),
    ("time empty", _rec(',"lastUpdatedTime":""')),
    ("time date only", _rec(',"lastUpdatedTime":"2024-10-21"')),
    ("time without zone", _rec(',"lastUpdatedTime":"2024-10-21T12:26:40"')),
    ("time with space", _rec(',"lastUpdatedTime":"2024-10-21 12:26:40Z"')),
    ("time lowercase t", _rec(',"lastUpdatedTime":"2024-10-21t12:26:40Z"')),
    ("time lowercase z", _rec(',"lastUpdatedTime":"2024-10-21T12:26:40z"')),
    ("time basic format", _rec(',"lastUpdatedTime":"20241021T122640Z"')),
    ("time compact offset", _rec(',"lastUpdatedTime":"2024-10-21T12:26:40+0200"')),
    ("time hour-only offset", _rec(',"lastUpdatedTime":"2024-10-21T12:26:40+02"')),
    ("time month 13", _rec(',"lastUpdatedTime":"2024-13-21T12:26:40Z"')),
    ("time Feb 30", _rec(',"lastUpdatedTime":"2024-02-30T12:26:40Z"')),
    ("time hour 24", _rec(',"lastUpdatedTime":"2024-10-21T24:00:00Z"')),
    ("time leap second", _rec(',"lastUpdatedTime":"2016-12-31T23:59:60Z"')),
    ("time offset hour 25", _rec(',"lastUpdatedTime":"2024-10-21T12:26:40+25:00"')),
    ("time dot without digits", _rec(',"lastUpdatedTime":"2024-10-21T12:26:40.Z"')),
    ("time year 0", _rec(',"lastUpdatedTime":"0000-01-01T00:00:00Z"')),
    ("time 5-digit year", _rec(',"lastUpdatedTime":"10000-01-01T00:00:00Z"')),
    ("time arabic-indic digits", _rec(',"lastUpdatedTime":"\u0662024-10-21T12:26:40Z"')),
    ("deeply nested", b'{"kind":' + b"[" * 100_000 + b"]" * 100_000 + b"}"),
    ("deeply nested objects", b'{"a":' * 100_000),
    # Nesting Python parses but the surrogate clean-up used to recurse through.
    ("nested with a surrogate", b'{"x":' + b"[" * 900 + b'"\\ud800"' + b"]" * 900 + b"}"),
    ("huge number", b'{"kind":' + b"1" * 10_000 + b"}"),
]


@pytest.mark.parametrize(("label", "data"), REJECT, ids=[r[0] for r in REJECT])
def test_decode_rejects(label: str, data: bytes) -> None:
    with pytest.raises(RecordDecodeError) as info:
        decode(data)
    assert info.value.path is None
    assert str(info.value)


def test_decode_error_messages_name_fields_not_values() -> None:
    hash_value = "0123456789abcdef" * 4
    data = _rec(
        ',"credentialMapping":{"a":{"kubernetesSecrets":[{"uid":"u","credentialHash":"'
        + hash_value
        + '","name":3}]}}'
    )
    with pytest.raises(RecordDecodeError, match=r"kubernetesSecrets\[0\]\.name") as info:
        decode(data)
    assert hash_value not in str(info.value)
    with pytest.raises(RecordDecodeError, match="duplicate field 'image'"):
        decode(_intent(',"image":"x","image":"x"'))
    with pytest.raises(RecordDecodeError, match="unknown field 'preloaded'"):
        decode(_intent(',"image":"x","preloaded":true'))


def test_decode_nesting_limit() -> None:
    def nested(levels: int) -> bytes:
        return _rec(',"credentialMapping":{"a":{"x":' + "[" * levels + "]" * levels + "}}")

    # The record is level 1, credentialMapping 2, its entry 3: 253 more levels are the limit.
    with pytest.raises(RecordDecodeError, match="unknown field 'x'"):
        decode(nested(253))
    with pytest.raises(RecordDecodeError, match="nested more than 256 levels deep"):
        decode(nested(254))


def test_decode_rejects_non_bytes() -> None:
    with pytest.raises(RecordDecodeError):
        decode(None)  # type: ignore[arg-type]


# --------------------------------------------------------------------------------------------
# Round trips
# --------------------------------------------------------------------------------------------

_text = st.text(max_size=12)
_secrets = st.builds(ImagePullSecret, _text, _text, _text, _text)
_accounts = st.builds(ImagePullServiceAccount, _text, _text, _text)
_credentials = st.builds(
    ImagePullCredentials,
    st.lists(_secrets, max_size=3).map(tuple),
    st.lists(_accounts, max_size=3).map(tuple),
    st.booleans(),
)
_offsets = st.integers(min_value=-23 * 60, max_value=23 * 60).map(
    lambda m: timezone(timedelta(minutes=m))
)
_times = st.one_of(
    st.just(ZERO_TIME),
    st.datetimes(
        min_value=datetime(2, 1, 1),
        max_value=datetime(9998, 12, 31),
        timezones=st.one_of(st.just(UTC), _offsets),
    ),
)
_records = st.builds(
    ImagePulledRecord,
    _text,
    _times,
    st.dictionaries(_text, _credentials, max_size=4),
)
_objects = st.one_of(st.builds(ImagePullIntent, _text), _records)
_versions = st.sampled_from([V1ALPHA1, V1BETA1])


def _as_stored(obj: ImagePullIntent | ImagePulledRecord) -> ImagePullIntent | ImagePulledRecord:
    """What reading the file back yields: whole seconds in UTC; lone surrogates as U+FFFD."""

    def clean(s: str) -> str:
        return "".join("\ufffd" if "\ud800" <= c <= "\udfff" else c for c in s)

    if isinstance(obj, ImagePullIntent):
        return ImagePullIntent(clean(obj.image))
    t = obj.last_updated_time.astimezone(UTC).replace(microsecond=0)
    mapping = {
        clean(k): ImagePullCredentials(
            tuple(
                ImagePullSecret(
                    clean(s.uid), clean(s.namespace), clean(s.name), clean(s.credential_hash)
                )
                for s in c.kubernetes_secrets
            ),
            tuple(
                ImagePullServiceAccount(clean(a.uid), clean(a.namespace), clean(a.name))
                for a in c.kubernetes_service_accounts
            ),
            c.node_pods_accessible,
        )
        for k, c in obj.credential_mapping.items()
    }
    return ImagePulledRecord(clean(obj.image_ref), t, mapping)


@settings(max_examples=300, deadline=None)
@given(_objects, _versions)
def test_round_trip(obj: ImagePullIntent | ImagePulledRecord, version: str) -> None:
    data = encode(obj, version)
    assert data.endswith(b"}\n") and b"\n" not in data[:-1]
    back, got_version = decode_versioned(data)
    assert got_version == version
    assert back == _as_stored(obj)
    # A second trip is a fixed point, byte for byte.
    assert encode(back, version) == data or _crosses_zero_second(obj)
    again = encode(back, version)
    assert encode(decode(again), version) == again


def _crosses_zero_second(obj: ImagePullIntent | ImagePulledRecord) -> bool:
    return (
        isinstance(obj, ImagePulledRecord)
        and obj.last_updated_time != ZERO_TIME
        and obj.last_updated_time.astimezone(UTC).replace(microsecond=0) == ZERO_TIME
    )


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_decode_never_leaks_other_exceptions(data: bytes) -> None:
    with contextlib.suppress(RecordDecodeError):
        decode(data)


@settings(max_examples=200, deadline=None)
@given(_objects, st.integers(min_value=0, max_value=400), st.binary(min_size=1, max_size=3))
def test_mutated_files_decode_or_raise_decode_error(
    obj: ImagePullIntent | ImagePulledRecord, at: int, junk: bytes
) -> None:
    data = encode(obj)
    at = min(at, len(data))
    for mutated in (data[:at], data[:at] + junk + data[at:], data[:at] + data[at + 1 :]):
        with contextlib.suppress(RecordDecodeError):
            decode(mutated)
