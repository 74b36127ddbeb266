"""Credential hash (spec §3): canonical Go JSON bytes and SHA-256."""

from __future__ import annotations

import hashlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pullwarden.credentials import canonical_auth_json, credential_hash, parse_config_json

# --- the worked examples of spec §3 ----------------------------------------------------------


def test_example_auth_field_user_password() -> None:
    config = parse_config_json(b'{"auths":{"r.io":{"auth":"dXNlcjpwYXNzd29yZA=="}}}')
    entry = config["r.io"]
    assert canonical_auth_json(entry.username, entry.password, entry.email) == (
        b'{"username":"user","password":"password"}'
    )
    assert (
        credential_hash(entry.username, entry.password, entry.email)
        == "a55436fc140d516560d072c5fe8700385ce9f41629abf65c1edcbcb39fac691d"
    )


def test_example_with_email() -> None:
    assert canonical_auth_json("user", "password", "user@example.com") == (
        b'{"username":"user","password":"password","email":"user@example.com"}'
    )
    assert (
        credential_hash("user", "password", "user@example.com")
        == "db7d5ceb6ea50628b734b451349fe756e3d89aac39c302c9640bc8b6545a62f0"
    )


def test_example_empty_entry() -> None:
    assert canonical_auth_json("", "", "") == b"{}"
    assert (
        credential_hash("", "")
        == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    )


def test_example_html_escaping() -> None:
    assert canonical_auth_json("a<b", "p&q") == b'{"username":"a\\u003cb","password":"p\\u0026q"}'
    assert (
        credential_hash("a<b", "p&q")
        == "42fc9e210e952607b1824f0bf945c017165b6fe8b575e8b9ec57bd5d279b469f"
    )


# --- member omission and order ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("username", "password", "email", "expected"),
    [
        ("u", "", "", b'{"username":"u"}'),
        ("", "p", "", b'{"password":"p"}'),
        ("", "", "e", b'{"email":"e"}'),
        ("u", "", "e", b'{"username":"u","email":"e"}'),
        ("", "p", "e", b'{"password":"p","email":"e"}'),
    ],
)
def test_empty_members_are_omitted(
    username: str, password: str, email: str, expected: bytes
) -> None:
    assert canonical_auth_json(username, password, email) == expected


def test_hash_is_lowercase_hex_sha256_of_canonical_bytes() -> None:
    digest = credential_hash("user", "pw")
    assert digest == hashlib.sha256(b'{"username":"user","password":"pw"}').hexdigest()
    assert len(digest) == 64
    assert digest == digest.lower()


def test_hash_ignores_nothing_but_content() -> None:
    # Same content, same hash; any change in any member changes it.
    assert credential_hash("u", "p") == credential_hash(b"u", b"p")
    assert credential_hash("u", "p") != credential_hash("u", "p", "e")
    assert credential_hash("u", "p") != credential_hash("p", "u")


# --- Go string escaping ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "encoded"),
    [
        ("a\nb", b"a\\nb"),
        ("a\rb\tc", b"a\\rb\\tc"),
        ("\b\f", b"\\b\\f"),
        ("a\x1fb", b"a\\u001fb"),
        ("\x00", b"\\u0000"),
        ('say "hi"', b'say \\"hi\\"'),
        ("back\\slash", b"back\\\\slash"),
        ("<>&", b"\\u003c\\u003e\\u0026"),
        ("line\u2028sep\u2029", b"line\\u2028sep\\u2029"),
        ("caf\u00e9 \u65e5\u672c", "caf\u00e9 \u65e5\u672c".encode()),
        ("emoji \U0001f600", "emoji \U0001f600".encode()),
        ("del\x7f", b"del\x7f"),
        ("slash/", b"slash/"),
    ],
)
def test_go_string_escaping(value: str, encoded: bytes) -> None:
    assert canonical_auth_json(value, "") == b'{"username":"' + encoded + b'"}'
    assert canonical_auth_json(value.encode(), "") == b'{"username":"' + encoded + b'"}'


def test_invalid_utf8_bytes_become_escape_text() -> None:
    assert canonical_auth_json(b"\xff", b"a\xc3") == (
        b'{"username":"\\ufffd","password":"a\\ufffd"}'
    )


def test_surrogateescape_str_is_treated_as_its_bytes() -> None:
    smuggled = b"us\xfer".decode("utf-8", "surrogateescape")
    assert canonical_auth_json(smuggled, "p") == canonical_auth_json(b"us\xfer", b"p")
    assert canonical_auth_json(smuggled, "p") == b'{"username":"us\\ufffdr","password":"p"}'
    assert credential_hash(smuggled, "p") == credential_hash(b"us\xfer", b"p")


def test_each_invalid_byte_is_replaced_separately() -> None:
    # A truncated three-byte sequence is two invalid bytes, not one.
    assert canonical_auth_json(b"\xe2\x80x", b"") == b'{"username":"\\ufffd\\ufffdx"}'


def test_u_fffd_character_itself_is_written_raw() -> None:
    assert canonical_auth_json("\ufffd", "") == b'{"username":"\xef\xbf\xbd"}'


# --- property: agrees with a plain JSON encoding where Go and Python agree --------------------

_SAFE_ASCII = st.text(
    alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='<>&"\\'),
    max_size=40,
)


@given(username=_SAFE_ASCII, password=_SAFE_ASCII, email=_SAFE_ASCII)
def test_matches_reference_encoding_for_plain_ascii(
    username: str, password: str, email: str
) -> None:
    members = {"username": username, "password": password, "email": email}
    reference = json.dumps(
        {name: value for name, value in members.items() if value}, separators=(",", ":")
    ).encode()
    assert canonical_auth_json(username, password, email) == reference
    assert credential_hash(username, password, email) == hashlib.sha256(reference).hexdigest()
