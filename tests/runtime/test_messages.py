"""The client's HTTP vocabulary (runtime._messages): what a URL, a request and an answer hold.

What matters is what reaches the wire: a URL is sent in one canonical form and can carry no
space or line break, a request refuses header values that would end its head early, and an
answer streams its body or holds one made in memory.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from pullwarden.runtime import URL, Headers, Request, Response
from pullwarden.runtime._messages import InvalidURL, LocalProtocolError


@pytest.mark.parametrize(
    ("text", "canonical", "netloc"),
    [
        ("HTTPS://Registry.Test:443/v2/", "https://registry.test/v2/", "registry.test"),
        ("http://registry.test:80", "http://registry.test", "registry.test"),
        ("http://127.0.0.1:5000/a?b=c#frag", "http://127.0.0.1:5000/a?b=c", "127.0.0.1:5000"),
        ("http://user:secret@registry.test/x", "http://registry.test/x", "registry.test"),
        ("http://[::1]:5000/v2/", "http://[::1]:5000/v2/", "[::1]:5000"),
        (
            "https://bücher.example/v2/",
            "https://xn--bcher-kva.example/v2/",
            "xn--bcher-kva.example",
        ),
    ],
)
def test_a_url_is_kept_in_its_canonical_form(text: str, canonical: str, netloc: str) -> None:
    url = URL(text)
    assert str(url) == canonical and url.netloc == netloc
    assert URL(str(url)) == url and hash(URL(str(url))) == hash(url)
    assert "secret" not in repr(url)


def test_a_bare_origin_is_sent_as_slash() -> None:
    assert URL("http://registry.test").raw_path == b"/"
    assert URL("http://registry.test/v2/x?scope=a%20b").raw_path == b"/v2/x?scope=a%20b"


@pytest.mark.parametrize("path", ["/a b", "/a\u00e9", '/a"<>\\^`{|}', "/a\x7f", "/a\x01"])
def test_a_path_carries_only_printable_ascii(path: str) -> None:
    raw = URL(f"http://registry.test{path}?q={path}").raw_path
    assert all(0x21 <= byte <= 0x7E for byte in raw), raw
    assert URL("http://registry.test/a%2Fb").path == "/a%2Fb"  # an escape already made stays


def test_line_breaks_never_reach_the_request_line() -> None:
    raw = URL("http://registry.test/a\r\nX-Evil: 1").raw_path
    assert b"\r" not in raw and b"\n" not in raw and b" " not in raw


@pytest.mark.parametrize(
    "text",
    [
        "http://registry.test:99999/",
        "http://registry.test:port/",
        "http://a b/",
        "http://a\x00b/",
        # what no resolver (nor the IDNA codec that getaddrinfo and TLS apply) takes
        f"http://{'a' * 64}.example/",
        f"http://registry.{'a' * 64}/",
        "http://a..b/",
        "http://.a/",
    ],
)
def test_a_bad_host_or_port_is_an_invalid_url(text: str) -> None:
    with pytest.raises(InvalidURL):
        URL(text)


@pytest.mark.parametrize(
    "host", [f"{'a' * 63}.example", "registry.test.", f"{'b' * 63}.{'c' * 63}", "[::1]"]
)
def test_dns_labels_up_to_63_characters_and_a_root_dot_are_hosts(host: str) -> None:
    url = URL(f"http://{host}/v2/")
    assert url.netloc == host
    assert url.host.encode("idna")  # what getaddrinfo and TLS do with it cannot fail


def test_join_and_params() -> None:
    base = URL("http://registry.test:5000/v2/ns/x/blobs/uploads/")
    assert str(base.join("/up/1?_state=s")) == "http://registry.test:5000/up/1?_state=s"
    assert str(base.join("https://storage.test/b")) == "https://storage.test/b"
    assert base.with_path("/v2/").query == "" and str(base.with_path("/v2/")).endswith(":5000/v2/")
    url = URL("http://auth.test/token?service=old&keep=1").with_params(
        [("service", "new"), ("scope", "repository:a/b:pull"), ("scope", "repository:c:pull")]
    )
    assert url.params["service"] == "new" and url.params["keep"] == "1"
    assert url.params.get_list("scope") == ["repository:a/b:pull", "repository:c:pull"]
    assert "account" not in url.params and len(url.params) == 3
    assert URL("http://h/?a=1").with_params({"a": "x y"}).query == "a=x%20y"


def test_headers_look_up_without_case_and_hide_values() -> None:
    headers = Headers([(b"WWW-Authenticate", b"Basic"), ("www-authenticate", "Bearer realm=x")])
    assert headers.get_list("Www-Authenticate") == ["Basic", "Bearer realm=x"]
    assert headers["WWW-AUTHENTICATE"] == "Basic, Bearer realm=x"
    assert "www-authenticate" in headers and "Location" not in headers
    assert headers.get("Location", "none") == "none" and list(headers) == ["www-authenticate"]
    secret = Headers({"Authorization": "Bearer s3cret"})
    assert "s3cret" not in repr(secret)


def test_a_request_puts_host_first_and_encodes_a_form() -> None:
    request = Request(
        "post",
        URL("http://auth.test:5080/token"),
        headers={"Host": "evil.test", "X": "1"},
        data={"grant_type": "refresh_token", "scope": "a b"},
    )
    assert request.method == "POST"
    assert request.headers.multi_items()[0] == ("Host", "auth.test:5080")
    assert request.headers.get_list("Host") == ["auth.test:5080"]  # never the caller's
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert request.read() == b"grant_type=refresh_token&scope=a+b"
    assert Request("PUT", "http://h/x", content=iter([b"ab", b"", b"cd"])).content == b"abcd"


@pytest.mark.parametrize(
    "value", ["a\r\nX-Evil: 1", "a\nb", "a\rb", "a\0b", "a\x7fb", "tok\u20acn"]
)
def test_a_request_refuses_a_value_that_would_end_its_head(value: str) -> None:
    with pytest.raises(LocalProtocolError):
        Request("GET", "http://h/", headers={"Authorization": value})
    with pytest.raises(LocalProtocolError):
        Request("GET", "http://h/", headers={"Bad Name": "v"})
    with pytest.raises(LocalProtocolError):
        Request("GET", "http://h/", headers={"": "v"})
    fine = Request("GET", "http://h/", headers={"X": "a\tb c caf\u00e9 !~"})
    assert fine.headers["X"] == "a\tb c caf\u00e9 !~"


def test_an_answer_in_memory_or_streamed() -> None:
    answer = Response(404, json={"errors": []})
    assert answer.reason_phrase == "Not Found" and answer.json() == {"errors": []}
    assert answer.headers["Content-Length"] == str(len(answer.content))
    assert Response(599).reason_phrase == ""
    assert Response(200, reason_phrase="Fine").reason_phrase == "Fine"
    with pytest.raises(RuntimeError):
        _ = answer.url
    answer.request = Request("GET", "http://h/x")
    assert answer.url == URL("http://h/x")

    closed: list[bool] = []

    def body() -> Iterator[bytes]:
        try:
            yield b"abcdefgh"
            yield b"ij"
        finally:
            closed.append(True)

    streamed = Response(200, content=body())
    assert "Content-Length" not in streamed.headers  # a stream's length is not known
    assert list(streamed.iter_bytes(3)) == [b"abc", b"def", b"gh", b"ij"]
    assert list(Response(200, content=b"xyz").iter_bytes()) == [b"xyz"]
    unread = Response(200, content=body())
    assert next(unread.iter_bytes()) == b"abcdefgh"
    unread.close()
    assert closed == [True, True]
