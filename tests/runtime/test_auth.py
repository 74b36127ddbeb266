"""Unit tests for the registry authentication helpers (challenge parser, token cache, rules)."""

from __future__ import annotations

import base64

import pytest

from pullwarden.errors import NotFoundError, UnauthorizedError
from pullwarden.runtime import AuthConfig, RegistryClient
from pullwarden.runtime._auth import (
    Challenge,
    TokenCache,
    TokenKey,
    basic_authorization,
    credential_id,
    is_loopback_host,
    merge_scopes,
    parse_challenges,
    parse_token_reply,
)
from pullwarden.runtime._messages import Request, Response
from pullwarden.testing import MockTransport

REALM = "http://127.0.0.1:5080/token"

CHALLENGE_TABLE: list[tuple[str, list[tuple[str, dict[str, str], str]]]] = [
    ('Basic realm="test-basic-realm"', [("basic", {"realm": "test-basic-realm"}, "")]),
    (
        f'Bearer realm="{REALM}",service="test-registry",scope="repository:ns/hello:pull"',
        [
            (
                "bearer",
                {"realm": REALM, "service": "test-registry", "scope": "repository:ns/hello:pull"},
                "",
            )
        ],
    ),
    # the push scope holds a comma inside the quotes
    (
        f'Bearer realm="{REALM}",service="s",scope="repository:ns/x:pull,push",'
        'error="insufficient_scope"',
        [
            (
                "bearer",
                {
                    "realm": REALM,
                    "service": "s",
                    "scope": "repository:ns/x:pull,push",
                    "error": "insufficient_scope",
                },
                "",
            )
        ],
    ),
    # case-insensitive scheme and parameter names, spaces around "=" and ","
    (
        'BEARER  Realm = "r" ,  SERVICE=svc',
        [("bearer", {"realm": "r", "service": "svc"}, "")],
    ),
    # escapes inside a quoted string
    (r'Basic realm="a \"quoted\" \\ realm"', [("basic", {"realm": 'a "quoted" \\ realm'}, "")]),
    # two challenges in one header value
    (
        'Basic realm="b", Bearer realm="https://auth.example/token",service="reg"',
        [
            ("basic", {"realm": "b"}, ""),
            ("bearer", {"realm": "https://auth.example/token", "service": "reg"}, ""),
        ],
    ),
    # a parameterless scheme followed by another challenge
    ('Negotiate, Basic realm="x"', [("negotiate", {}, ""), ("basic", {"realm": "x"}, "")]),
    # token68 body
    (
        "Negotiate YWJjZA==, Basic realm=x",
        [("negotiate", {}, "YWJjZA=="), ("basic", {"realm": "x"}, "")],
    ),
    # unquoted URL value (lenient)
    (
        "Bearer realm=https://auth.example/token,service=reg",
        [
            ("bearer", {"realm": "https://auth.example/token", "service": "reg"}, ""),
        ],
    ),
    # empty quoted value, and a duplicate parameter (the first wins)
    ('Bearer realm="", realm="second"', [("bearer", {"realm": ""}, "")]),
    # an unterminated quote does not crash the parser
    ('Basic realm="never closed', [("basic", {"realm": "never closed"}, "")]),
    ("", []),
    ("   ,  , ", []),
]


@pytest.mark.parametrize(("header", "expected"), CHALLENGE_TABLE)
def test_parse_challenges_table(
    header: str, expected: list[tuple[str, dict[str, str], str]]
) -> None:
    got = [(c.scheme, dict(c.params), c.token68) for c in parse_challenges(header)]
    assert got == expected


def test_parse_challenges_accepts_several_header_values() -> None:
    got = parse_challenges(['Basic realm="a"', f'Bearer realm="{REALM}"'])
    assert [c.scheme for c in got] == ["basic", "bearer"]
    assert got[1].param("realm") == REALM
    assert got[1].param("missing") == ""


def test_challenge_scopes_split_on_spaces() -> None:
    challenge = Challenge("bearer", {"scope": "repository:a:pull  repository:b:pull"})
    assert challenge.scopes == ("repository:a:pull", "repository:b:pull")
    assert Challenge("bearer").scopes == ()


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("localhost", True),
        ("localhost:5000", True),
        ("127.0.0.1", True),
        ("127.1.2.3:80", True),
        ("[::1]:5000", True),
        ("::1", True),
        ("LOCALHOST:5000", True),
        ("[::1]", True),
        ("127.255.255.254", True),
        ("registry.localhost", False),
        ("registry.localhost:5000", False),
        ("localhost.example", False),
        ("localhost.", False),
        ("[localhost]:5000", False),
        ("[127.0.0.1]:5000", False),
        ("127.1", False),
        ("128.0.0.1", False),
        ("::2", False),
        ("10.0.0.1", False),
        ("example.com", False),
        ("[2001:db8::1]:443", False),
        ("notlocalhost", False),
    ],
)
def test_is_loopback_host(host: str, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_credential_id_hides_and_distinguishes_secrets() -> None:
    alice = credential_id(AuthConfig("alice", "pw-one"))
    assert "pw-one" not in alice and "alice" not in alice
    assert alice == credential_id(AuthConfig("alice", "pw-one"))
    assert alice != credential_id(AuthConfig("alice", "pw-two"))
    assert alice != credential_id(AuthConfig("bob", "pw-one"))
    # "a" + "b:c" must not collide with "a:b" + "c"
    assert credential_id(AuthConfig("a", "b:c")) != credential_id(AuthConfig("a:b", "c"))
    assert credential_id(AuthConfig()) == "anonymous"


def test_basic_authorization() -> None:
    assert basic_authorization("alice", "pw") == "Basic YWxpY2U6cHc="


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b'{"token": "t1", "expires_in": 300}', ("t1", 300.0)),
        (b'{"access_token": "t2"}', ("t2", 60.0)),
        (b'{"token": "", "access_token": "t3", "expires_in": 0}', ("t3", 60.0)),
        (b'{"token": "t4", "expires_in": "soon"}', ("t4", 60.0)),
        (b'{"token": "t5", "expires_in": true}', ("t5", 60.0)),
    ],
)
def test_parse_token_reply(body: bytes, expected: tuple[str, float]) -> None:
    assert parse_token_reply(body) == expected


@pytest.mark.parametrize("body", [b"not json", b"[1]", b"{}", b'{"token": 5}'])
def test_parse_token_reply_refuses_unusable_replies(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_token_reply(body)


def test_token_cache_expires_tokens_by_the_injected_clock() -> None:
    now = [100.0]
    cache = TokenCache(lambda: now[0])
    key = TokenKey("reg", REALM, "svc", ("repository:a:pull",), "anonymous")
    assert cache.get(key) is None
    cache.put(key, "tok", 60.0)  # reused until 60 - 6 = 54 s have passed
    now[0] = 153.9
    assert cache.get(key) == "tok"
    now[0] = 154.0
    assert cache.get(key) is None
    assert len(cache) == 0


def test_token_cache_discard_only_forgets_the_refused_token() -> None:
    cache = TokenCache(lambda: 0.0)
    key = TokenKey("reg", REALM, "svc", (), "anonymous")
    cache.put(key, "new", 300.0)
    cache.discard(key, "old")
    assert cache.get(key) == "new"
    cache.discard(key, "new")
    assert cache.get(key) is None


@pytest.mark.parametrize(
    ("groups", "expected"),
    [
        ([["repository:a:pull"], ["repository:a:pull,push"]], ("repository:a:pull,push",)),
        ([["repository:a:push"], ["repository:a:pull"]], ("repository:a:push,pull",)),
        (
            [["repository:a:pull"], ["repository:b:pull"]],
            ("repository:a:pull", "repository:b:pull"),
        ),
        ([["registry:catalog:*"], []], ("registry:catalog:*",)),
        ([["odd"], ["odd"]], ("odd",)),
        ([[], []], ()),
    ],
)
def test_merge_scopes(groups: list[list[str]], expected: tuple[str, ...]) -> None:
    assert merge_scopes(*groups) == expected


def test_a_password_that_is_no_utf8_goes_out_as_its_own_bytes() -> None:
    """A pull Secret's ``auth`` may decode to any bytes (the kubelet sends them as they are);
    the credentials layer carries them as ``surrogateescape`` text, and Basic sends the bytes."""
    password = b"SEKRET\xff".decode("utf-8", "surrogateescape")
    header = basic_authorization("bob", password)
    assert base64.b64decode(header.removeprefix("Basic ")) == b"bob:SEKRET\xff"
    other = b"SEKRET\xfe".decode("utf-8", "surrogateescape")
    assert credential_id(AuthConfig("bob", password)) != credential_id(AuthConfig("bob", other))


def test_a_pull_with_such_a_password_sends_it_and_shows_none_of_it() -> None:
    sent: list[str] = []

    def handler(request: Request) -> Response:
        sent.append(request.headers.get("Authorization", ""))
        return Response(401, headers={"WWW-Authenticate": 'Basic realm="r"'})

    password = b"SEKRET\xff".decode("utf-8", "surrogateescape")
    client = RegistryClient(transport=MockTransport(handler), sleep=lambda s: None)
    with client, pytest.raises(UnauthorizedError) as info:
        client.get_manifest("127.0.0.1:5000/ns/x:v1", AuthConfig("bob", password))
    assert base64.b64decode(sent[-1].removeprefix("Basic ")) == b"bob:SEKRET\xff"
    assert "SEKRET" not in str(info.value) and "\\udcff" not in str(info.value)


def test_an_identity_token_that_is_no_utf8_goes_out_as_its_own_bytes() -> None:
    forms: list[bytes] = []

    def handler(request: Request) -> Response:
        if request.url.path == "/token":
            forms.append(request.read())
            return Response(200, json={"token": "t"})
        if request.headers.get("Authorization") == "Bearer t":
            return Response(404)
        realm = 'Bearer realm="http://127.0.0.1:5000/token",service="s"'
        return Response(401, headers={"WWW-Authenticate": realm})

    token = b"id\xfftok".decode("utf-8", "surrogateescape")
    client = RegistryClient(transport=MockTransport(handler), sleep=lambda s: None)
    with client, pytest.raises(NotFoundError):
        client.get_manifest("127.0.0.1:5000/ns/x:v1", AuthConfig(identity_token=token))
    assert b"refresh_token=id%FFtok" in forms[0]
