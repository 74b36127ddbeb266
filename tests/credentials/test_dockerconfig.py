"""Docker config decoding and pull-secret selection (spec §2.1, §2.2)."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pullwarden.credentials import (
    AuthEntry,
    config_from_secret,
    credential_hash,
    parse_config_json,
    parse_dockercfg,
)
from pullwarden.errors import CredentialError, DockerConfigError

AUTH_FORMAT_ERROR = "unable to parse auth field, must be formatted as base64(username:password)"


def b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def config_json(entries: dict[str, object]) -> bytes:
    return json.dumps({"auths": entries}).encode()


def one_entry(entry: object) -> AuthEntry:
    return parse_config_json(config_json({"r.io": entry}))["r.io"]


# --- formats ---------------------------------------------------------------------------------


def test_config_json_uses_auths_and_ignores_other_members() -> None:
    data = json.dumps(
        {
            "auths": {
                "https://index.docker.io/v1/": {"username": "u", "password": "p", "email": "e"},
                "quay.io": {"auth": b64(b"qu:qp")},
            },
            "HttpHeaders": {"User-Agent": "docker"},
            "credsStore": "desktop",
            "credHelpers": {"gcr.io": "gcloud"},
        }
    ).encode()
    config = parse_config_json(data)
    assert dict(config) == {
        "https://index.docker.io/v1/": AuthEntry("u", "p", "e"),
        "quay.io": AuthEntry("qu", "qp"),
    }


def test_dockercfg_is_a_bare_map() -> None:
    data = json.dumps({"r.io": {"username": "u", "password": "p"}}).encode()
    assert dict(parse_dockercfg(data)) == {"r.io": AuthEntry("u", "p")}


def test_dockercfg_document_in_config_json_parser_yields_nothing() -> None:
    # A bare map has no "auths" member, so the config.json reader finds no entries.
    data = json.dumps({"r.io": {"username": "u", "password": "p"}}).encode()
    assert dict(parse_config_json(data)) == {}


def test_config_json_document_in_dockercfg_parser_is_a_location_named_auths() -> None:
    data = config_json({"r.io": {"username": "u", "password": "p"}})
    assert dict(parse_dockercfg(data)) == {"auths": AuthEntry("", "")}


def test_result_is_read_only() -> None:
    config = parse_config_json(config_json({"r.io": {"username": "u"}}))
    with pytest.raises(TypeError):
        config["x"] = AuthEntry("a", "b")  # type: ignore[index]


def test_document_order_is_kept() -> None:
    data = b'{"auths":{"b.io":{},"a.io":{},"c.io":{}}}'
    assert list(parse_config_json(data)) == ["b.io", "a.io", "c.io"]


# --- Go decoding semantics -------------------------------------------------------------------


@pytest.mark.parametrize(
    "entry",
    [
        {"Username": "u", "Password": "p", "Email": "e"},
        {"USERNAME": "u", "PASSWORD": "p", "EMAIL": "e"},
        {"uSeRnAmE": "u", "pAsSwOrD": "p", "eMaIl": "e"},
        # Go's folding maps the long s and the dotless i onto S and I.
        {"u\u017fername": "u", "pa\u017f\u017fword": "p", "ema\u0131l": "e"},
    ],
)
def test_entry_member_names_are_case_insensitive(entry: dict[str, str]) -> None:
    assert one_entry(entry) == AuthEntry("u", "p", "e")


def test_top_level_auths_is_case_insensitive() -> None:
    data = b'{"AUTHS":{"r.io":{"username":"u"}}}'
    assert dict(parse_config_json(data)) == {"r.io": AuthEntry("u", "")}


def test_unknown_members_ignored_whatever_their_type() -> None:
    data = json.dumps(
        {
            "auths": {
                "r.io": {
                    "username": "u",
                    "password": "p",
                    "identitytoken": 5,
                    "serveraddress": ["x"],
                    "registrytoken": {"a": None},
                }
            },
            "other": [1, 2, {"x": True}],
        }
    ).encode()
    assert dict(parse_config_json(data)) == {"r.io": AuthEntry("u", "p")}


def test_last_duplicate_member_wins() -> None:
    data = b'{"auths":{"r.io":{"username":"a","password":"x","Username":"b"}}}'
    assert parse_config_json(data)["r.io"] == AuthEntry("b", "x")


def test_null_member_leaves_field_unchanged() -> None:
    data = b'{"auths":{"r.io":{"username":"a","username":null,"password":null}}}'
    assert parse_config_json(data)["r.io"] == AuthEntry("a", "")


def test_last_duplicate_location_wins() -> None:
    data = b'{"auths":{"r.io":{"username":"a"},"r.io":{"username":"b"}}}'
    assert dict(parse_config_json(data)) == {"r.io": AuthEntry("b", "")}


def test_repeated_auths_objects_merge_and_null_clears() -> None:
    merged = b'{"auths":{"a.io":{"username":"a"}},"Auths":{"b.io":{"username":"b"}}}'
    assert dict(parse_config_json(merged)) == {
        "a.io": AuthEntry("a", ""),
        "b.io": AuthEntry("b", ""),
    }
    cleared = b'{"auths":{"a.io":{"username":"a"}},"auths":null}'
    assert dict(parse_config_json(cleared)) == {}


@pytest.mark.parametrize("data", [b"null", b' {"auths": null} ', b"{}", b'{"auths":{}}'])
def test_null_and_empty_documents_are_empty_configs(data: bytes) -> None:
    assert dict(parse_config_json(data)) == {}


def test_null_dockercfg_is_empty() -> None:
    assert dict(parse_dockercfg(b"null")) == {}


def test_null_entry_is_an_empty_credential() -> None:
    assert parse_config_json(b'{"auths":{"r.io":null}}')["r.io"] == AuthEntry("", "")


def test_invalid_utf8_in_json_string_becomes_replacement_character() -> None:
    entry = parse_config_json(b'{"auths":{"r.io":{"username":"a\xffb","password":"p"}}}')["r.io"]
    assert entry.username == "a\ufffdb"
    # Go writes the decoded U+FFFD back raw, unlike a raw 0xFF byte from an auth field.
    assert credential_hash(entry.username, entry.password) == credential_hash(
        "a\ufffdb".encode(), b"p"
    )


def test_unpaired_surrogate_escape_becomes_replacement_character() -> None:
    entry = one_entry({"username": "\ud800x", "password": "\U0001f600"})
    assert entry.username == "\ufffdx"
    assert entry.password == "\U0001f600"


# --- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"{",
        b'{"auths":{"r.io":{"username":"u",}}}',
        b'{"auths":{"r.io":{"password":NaN}}}',
        b'{"auths":{"r.io":{"x":Infinity}}}',
        b"\xef\xbb\xbf{}",  # a UTF-8 byte order mark is not JSON
        b'{"auths":{}} x',
        b'{"auths":{"r.io":{"username":"a\x01"}}}',  # raw control character in a string
    ],
)
def test_syntax_errors(data: bytes) -> None:
    with pytest.raises(DockerConfigError):
        parse_config_json(data)


@pytest.mark.parametrize(
    "data",
    [
        b"[]",
        b'"auths"',
        b"1",
        b"true",
        b'{"auths":[]}',
        b'{"auths":"x"}',
        b'{"auths":{"r.io":"user:pass"}}',
        b'{"auths":{"r.io":[]}}',
        b'{"auths":{"r.io":{"username":1}}}',
        b'{"auths":{"r.io":{"password":true}}}',
        b'{"auths":{"r.io":{"email":{}}}}',
        b'{"auths":{"r.io":{"auth":["x"]}}}',
        b'{"HttpHeaders":[]}',
        b'{"HttpHeaders":{"X-A":1}}',
    ],
)
def test_wrong_json_types_are_errors(data: bytes) -> None:
    with pytest.raises(DockerConfigError, match="cannot unmarshal"):
        parse_config_json(data)


@pytest.mark.parametrize("data", [b"[]", b'"x"', b'{"r.io":5}', b'{"r.io":{"username":5}}'])
def test_dockercfg_wrong_types(data: bytes) -> None:
    with pytest.raises(DockerConfigError):
        parse_dockercfg(data)


def test_error_type_is_a_credential_error_and_value_error() -> None:
    with pytest.raises(CredentialError):
        parse_config_json(b"[")
    with pytest.raises(ValueError):
        parse_config_json(b"[")


def test_error_messages_never_contain_secrets() -> None:
    secret = "hunter2-secret"
    truncated = ('{"auths":{"r.io":{"password":"' + secret + '"').encode()
    bad_type = ('{"auths":{"r.io":{"password":"' + secret + '","username":3}}}').encode()
    bad_b64 = ('{"auths":{"r.io":{"auth":"' + secret + '!"}}}').encode()
    no_colon = ('{"auths":{"r.io":{"auth":"' + b64(secret.encode()) + '"}}}').encode()
    for data in (truncated, bad_type, bad_b64, no_colon):
        with pytest.raises(DockerConfigError) as info:
            parse_config_json(data)
        text = str(info.value) + repr(info.value)
        assert secret not in text
        assert b64(secret.encode()) not in text
        assert info.value.__cause__ is None


# --- the auth member -------------------------------------------------------------------------


def test_auth_overrides_username_and_password_but_not_email() -> None:
    entry = one_entry(
        {"username": "x", "password": "y", "email": "e", "auth": b64(b"user:password")}
    )
    assert entry == AuthEntry("user", "password", "e")


def test_auth_override_is_independent_of_member_order() -> None:
    entry = one_entry({"auth": b64(b"user:password"), "username": "x", "password": "y"})
    assert entry == AuthEntry("user", "password")


@pytest.mark.parametrize("auth", ["", None])
def test_empty_or_null_auth_does_not_override(auth: str | None) -> None:
    assert one_entry({"username": "x", "password": "y", "auth": auth}) == AuthEntry("x", "y")


def test_auth_is_split_at_the_first_colon() -> None:
    assert one_entry({"auth": b64(b"u:p:q")}) == AuthEntry("u", "p:q")
    assert one_entry({"auth": b64(b":pw")}) == AuthEntry("", "pw")
    assert one_entry({"auth": b64(b"user:")}) == AuthEntry("user", "")


def test_auth_member_name_is_case_insensitive() -> None:
    assert one_entry({"AUTH": b64(b"u:p")}) == AuthEntry("u", "p")


def test_auth_without_colon_is_an_error() -> None:
    with pytest.raises(DockerConfigError) as info:
        one_entry({"auth": b64(b"userpassword")})
    assert str(info.value) == AUTH_FORMAT_ERROR


@pytest.mark.parametrize(
    "auth",
    [
        "dXNlcjpwYXNzd29yZA==",  # padded
        "dXNlcjpwYXNzd29yZA",  # unpadded ("raw")
        "dXNlcjpw\nYXNzd29yZA==",  # newlines are skipped
        "dXNl\r\ncjpwYXNzd29yZA",
        "dXNlcjpwYXNzd29yZA=\n=",
        "dXNlcjpwYXNzd29yZA==\r\n",
    ],
)
def test_auth_base64_variants(auth: str) -> None:
    assert one_entry({"auth": auth}) == AuthEntry("user", "password")


def test_nonzero_trailing_bits_are_accepted() -> None:
    # "YR==" decodes to "a" although its last symbol has unused bits set (Go is not strict).
    assert one_entry({"auth": "YTpiYR=="}) == AuthEntry("a", "ba")


@pytest.mark.parametrize(
    ("auth", "offset"),
    [
        ("dXNl=cjpw", 4),  # does not end in "=", so raw decoding: "=" is not allowed
        ("dXNl cjpw", 4),  # whitespace other than CR/LF
        ("dXNlcjpwYXNzd29yZA=", 19),  # a single "=" where two are needed
        ("dXNlc", 4),  # a lone symbol left over
        ("=", 0),
        ("dXNlcjpwYXNzd29yZA== ", 20),  # trimmed it ends in "=", but the space is data
        ("YTo=x=", 4),  # data after the padding
        ("YWJj\tZA", 4),
        ("YWJjZA=\u00e9", 6),  # does not end in "=": raw decoding rejects the "="
        ("YWJj\u00e9", 4),
        ("YQ=", 3),  # padded decoding needs "==" after two symbols
    ],
)
def test_auth_base64_errors(auth: str, offset: int) -> None:
    with pytest.raises(DockerConfigError) as info:
        one_entry({"auth": auth})
    assert str(info.value) == f"illegal base64 data at input byte {offset}"


def test_padding_choice_follows_the_trimmed_value() -> None:
    # Raw "YQ" is the single byte "a" (no colon); a trailing "=" after trimming selects padded.
    with pytest.raises(DockerConfigError, match=r"^unable to parse auth field"):
        one_entry({"auth": "YQ"})
    assert one_entry({"auth": b64(b"a:bc") + "\n"}) == AuthEntry("a", "bc")
    with pytest.raises(DockerConfigError, match=r"^illegal base64"):
        one_entry({"auth": b64(b"a:bc") + " "})  # space trimmed for the choice, not decoding


def test_auth_bytes_are_kept_exactly() -> None:
    entry = one_entry({"auth": b64(b"\xffus\xe9r:p\xe2\x80x")})
    assert entry.username.encode("utf-8", "surrogateescape") == b"\xffus\xe9r"
    assert entry.password.encode("utf-8", "surrogateescape") == b"p\xe2\x80x"
    assert credential_hash(entry.username, entry.password) == credential_hash(
        b"\xffus\xe9r", b"p\xe2\x80x"
    )


def test_auth_with_valid_utf8_gives_plain_text() -> None:
    assert one_entry({"auth": b64("j\u00fcrgen:p\u00e4ss".encode())}) == AuthEntry(
        "j\u00fcrgen", "p\u00e4ss"
    )


@given(
    username=st.binary(max_size=30).filter(lambda b: b":" not in b),
    password=st.binary(max_size=30),
    padded=st.booleans(),
)
def test_auth_round_trip(username: bytes, password: bytes, padded: bool) -> None:
    encoded = base64.b64encode(username + b":" + password).decode()
    if not padded:
        encoded = encoded.rstrip("=")
    entry = one_entry({"auth": encoded})
    assert entry.username.encode("utf-8", "surrogateescape") == username
    assert entry.password.encode("utf-8", "surrogateescape") == password


# --- repr ------------------------------------------------------------------------------------


def test_auth_entry_repr_masks_password() -> None:
    entry = AuthEntry("alice", "s3cr3t-pw", "alice@example.com")
    for text in (repr(entry), str(entry), repr([entry]), repr({"r.io": entry})):
        assert "s3cr3t-pw" not in text
        assert "alice" in text
    assert repr(entry) == "AuthEntry(username='alice', password=<redacted>)"
    assert repr(AuthEntry("a", "")) == "AuthEntry(username='a', password='')"


def test_parsed_config_repr_masks_auth() -> None:
    config = parse_config_json(config_json({"r.io": {"auth": b64(b"bob:topsecret")}}))
    assert "topsecret" not in repr(config)
    assert "topsecret" not in str(config)


# --- pull secrets (spec §2.1) ----------------------------------------------------------------

JSON_TYPE = "kubernetes.io/dockerconfigjson"
CFG_TYPE = "kubernetes.io/dockercfg"
JSON_DOC = config_json({"r.io": {"username": "u", "password": "p"}})
CFG_DOC = json.dumps({"r.io": {"username": "u", "password": "p"}}).encode()


def test_dockerconfigjson_secret() -> None:
    config = config_from_secret(JSON_TYPE, {".dockerconfigjson": JSON_DOC})
    assert config is not None
    assert dict(config) == {"r.io": AuthEntry("u", "p")}


def test_dockercfg_secret() -> None:
    config = config_from_secret(CFG_TYPE, {".dockercfg": CFG_DOC})
    assert config is not None
    assert dict(config) == {"r.io": AuthEntry("u", "p")}


@pytest.mark.parametrize(
    ("secret_type", "data"),
    [
        (JSON_TYPE, {".dockercfg": CFG_DOC}),  # wrong key for the type
        (CFG_TYPE, {".dockerconfigjson": JSON_DOC}),  # wrong key for the type
        (JSON_TYPE, {".dockerconfigjson": b""}),  # empty
        (CFG_TYPE, {".dockercfg": b""}),
        (JSON_TYPE, {}),
        ("Opaque", {".dockerconfigjson": JSON_DOC, ".dockercfg": CFG_DOC}),
        ("kubernetes.io/basic-auth", {"username": b"u", "password": b"p"}),
        ("kubernetes.io/DockerConfigJson", {".dockerconfigjson": JSON_DOC}),  # exact type only
    ],
)
def test_secrets_the_kubelet_ignores(secret_type: str, data: dict[str, bytes]) -> None:
    assert config_from_secret(secret_type, data) is None


def test_secret_with_both_keys_uses_the_one_for_its_type() -> None:
    other = config_json({"other.io": {"username": "x"}})
    data = {".dockerconfigjson": JSON_DOC, ".dockercfg": other}
    config = config_from_secret(JSON_TYPE, data)
    assert config is not None and list(config) == ["r.io"]


def test_secret_decode_error_raises() -> None:
    with pytest.raises(DockerConfigError):
        config_from_secret(JSON_TYPE, {".dockerconfigjson": b"{not json"})
    with pytest.raises(DockerConfigError):
        config_from_secret(CFG_TYPE, {".dockercfg": b"[]"})


def test_secret_with_empty_document_is_still_accepted() -> None:
    config = config_from_secret(JSON_TYPE, {".dockerconfigjson": b"{}"})
    assert config is not None and dict(config) == {}


# --- documents nested too deeply ---------------------------------------------------------------

DEEP = b"[" * 100_000


@pytest.mark.parametrize(
    "data",
    [DEEP, DEEP + b"]" * 100_000, b'{"auths": {}, "x": ' + b"[" * 300 + b"]" * 300 + b"}"],
    ids=["unclosed", "closed", "in-an-ignored-member"],
)
def test_deeply_nested_documents_are_docker_config_errors(data: bytes) -> None:
    for parse in (parse_config_json, parse_dockercfg):
        with pytest.raises(DockerConfigError, match=r"invalid JSON: nested more than 256 levels"):
            parse(data)
    with pytest.raises(DockerConfigError, match="nested more than 256"):
        config_from_secret("kubernetes.io/dockerconfigjson", {".dockerconfigjson": data})
    with pytest.raises(DockerConfigError, match="nested more than 256"):
        config_from_secret("kubernetes.io/dockercfg", {".dockercfg": data})


def test_nesting_error_names_the_position() -> None:
    data = b'{"auths": {},\n "x": ' + b"[" * 300
    with pytest.raises(DockerConfigError) as info:
        parse_config_json(data)
    assert str(info.value) == "invalid JSON: nested more than 256 levels deep (line 2, column 262)"
