"""The registry client's HTTP vocabulary: URLs, headers, requests, answers and their failures.

These are the types that cross the client's transport seam.  :class:`~._transport.Session`
builds a :class:`Request`, a :class:`Transport` answers it with a :class:`Response` whose body
streams from the connection (the network one is :class:`~._wire.RegistryTransport`; tests
inject :class:`pullwarden.testing.MockTransport`), and a failure to get an answer at all is a
:class:`TransportError`.  They hold only what the client uses, and load nothing heavier than
:mod:`urllib.parse`, so a pull starts without an HTTP library.

* :class:`URL` keeps what it sends in its canonical form: the scheme and host lower-cased
  (an IDN host in its ASCII form, an IPv6 host without brackets), the scheme's default port
  dropped, userinfo and fragment dropped, and every byte of the path and query outside
  printable ASCII percent-encoded, so no URL can put a space or a line break on the wire.
* :class:`Request` refuses header names that are not tokens and values with a control
  character (CR, LF, NUL...) or beyond Latin-1 (:class:`LocalProtocolError`), whatever chose
  them: a token, a user's configured credential, can never end the head early and add a
  header of its own.
* :class:`Response` streams: :meth:`Response.iter_bytes` reads the body as the transport
  frames it, :meth:`Response.close` gives the connection back (or drops it).

The errors mirror the kinds the retry logic tells apart: timeouts, network failures (a
refused or failed connection, a dropped read or send), a server breaking the protocol, a
scheme the client does not speak, and a request the client itself must not send.
"""

from __future__ import annotations

import json as _json
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Protocol
from urllib.parse import parse_qsl, quote, urlencode, urljoin, urlsplit

from pullwarden._gojson import go_bytes

__all__ = [
    "NO_BODY",
    "URL",
    "ConnectError",
    "ConnectTimeout",
    "Headers",
    "InvalidURL",
    "LocalProtocolError",
    "NetworkError",
    "ReadError",
    "ReadTimeout",
    "RemoteProtocolError",
    "Request",
    "Response",
    "TimeoutException",
    "Transport",
    "TransportError",
    "UnsupportedProtocol",
    "WriteError",
    "WriteTimeout",
]

_DEFAULT_PORTS = {"http": 80, "https": 443}
# What stays as it is in a path or query (all else is percent-encoded): RFC 3986's unreserved
# and sub-delimiters, ":" and "@", and "%" so that escapes already made are kept.
_PATH_SAFE = "!$&'()*+,;=:@%/"
_QUERY_SAFE = _PATH_SAFE + "?"
_HOST_BAD = frozenset(' \t\r\n\0"<>\\^`{|}/?#@[]')
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


# --- failures --------------------------------------------------------------------------------


class TransportError(Exception):
    """No usable answer to a request; ``request`` is the request, once the session knows it."""

    def __init__(self, message: str, *, request: Request | None = None) -> None:
        super().__init__(message)
        self.request = request


class TimeoutException(TransportError):
    """An operation on the connection ran out of time."""


class ConnectTimeout(TimeoutException):
    """Connecting (or the TLS handshake) timed out."""


class ReadTimeout(TimeoutException):
    """The answer did not come in time."""


class WriteTimeout(TimeoutException):
    """The request could not be sent in time."""


class NetworkError(TransportError):
    """The connection could not be made or broke."""


class ConnectError(NetworkError):
    """The connection (or its TLS) could not be set up."""


class ReadError(NetworkError):
    """The connection failed while the answer was read."""


class WriteError(NetworkError):
    """The connection failed while the request was sent."""


class RemoteProtocolError(TransportError):
    """The server broke HTTP/1.1 (or closed the connection in the middle of an answer)."""


class LocalProtocolError(TransportError):
    """The request itself cannot be sent (a header that would break the framing)."""


class UnsupportedProtocol(TransportError):
    """The URL's scheme is not ``http`` or ``https``."""


class InvalidURL(ValueError):
    """Text that cannot be a URL the client would send (a bad host or port)."""


# --- URLs ------------------------------------------------------------------------------------


class URL:
    """An absolute (or, from odd input, relative) URL in the canonical form the notes give."""

    __slots__ = ("host", "path", "port", "query", "scheme")

    scheme: str
    host: str  # lower-case ASCII; an IPv6 address without brackets
    port: int | None  # None: the scheme's default
    path: str  # percent-encoded; empty for a bare origin (sent as "/")
    query: str  # percent-encoded, without the "?"

    def __init__(self, text: str) -> None:
        try:
            parts = urlsplit(text)
        except ValueError:  # an unclosed IPv6 bracket, say
            raise InvalidURL(f"invalid URL {text[:200]!r}") from None
        try:
            port = parts.port
        except ValueError:
            raise InvalidURL(f"invalid port in URL {text[:200]!r}") from None
        self._set(
            parts.scheme.lower(), _host(parts.hostname or "", text), port, parts.path, parts.query
        )

    def _set(self, scheme: str, host: str, port: int | None, path: str, query: str) -> None:
        self.scheme = scheme
        self.host = host
        self.port = None if port == _DEFAULT_PORTS.get(scheme) else port
        self.path = quote(path, safe=_PATH_SAFE)
        self.query = quote(query, safe=_QUERY_SAFE)

    def _copy(self, path: str, query: str) -> URL:
        url = URL.__new__(URL)
        url._set(self.scheme, self.host, self.port, path, query)
        return url

    @property
    def effective_port(self) -> int:
        """The port a connection goes to: :attr:`port`, else the scheme's default (80 for a
        scheme that has none here)."""
        return self.port or _DEFAULT_PORTS.get(self.scheme, 80)

    @property
    def netloc(self) -> str:
        """``host[:port]``, the host bracketed when it is an IPv6 address."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    @property
    def raw_path(self) -> bytes:
        """The request target: path and query, as they go on the wire."""
        return ((self.path or "/") + (f"?{self.query}" if self.query else "")).encode("ascii")

    @property
    def params(self) -> Params:
        """The query's fields, decoded."""
        return Params(parse_qsl(self.query, keep_blank_values=True))

    def with_path(self, path: str) -> URL:
        """This origin with ``path`` and no query."""
        return self._copy(path, "")

    def with_params(self, params: Mapping[str, str] | Iterable[tuple[str, str]]) -> URL:
        """This URL with ``params`` in its query, replacing fields of the same names."""
        pairs = list(params.items() if isinstance(params, Mapping) else params)
        names = {name for name, _ in pairs}
        kept = [(n, v) for n, v in parse_qsl(self.query, keep_blank_values=True) if n not in names]
        return self._copy(self.path, urlencode(kept + pairs, quote_via=quote, safe="/:"))

    def join(self, location: str) -> URL:
        """``location`` (a redirect's, say) resolved against this URL."""
        try:
            joined = urljoin(str(self), location)
        except ValueError:  # an unclosed IPv6 bracket, say
            raise InvalidURL(f"invalid URL {location[:200]!r}") from None
        return URL(joined)

    def __str__(self) -> str:
        origin = f"{self.scheme}://{self.netloc}" if self.host else ""
        if not origin and self.scheme:
            origin = f"{self.scheme}:"
        return origin + self.path + (f"?{self.query}" if self.query else "")

    def __repr__(self) -> str:
        return f"URL({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, URL) and str(other) == str(self)

    def __hash__(self) -> int:
        return hash(str(self))


def _host(host: str, text: str) -> str:
    """``host`` as sent: ASCII (IDNA for international names), checked for stray characters
    and for DNS labels of 1 to 63 characters (a last empty one is the root: ``example.com.``).

    The label rule is the one the IDNA codec applies to an ASCII name, which ``getaddrinfo``
    and TLS apply to a ``str`` host: a host that passes cannot fail there.
    """
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            raise InvalidURL(f"invalid host in URL {text[:200]!r}") from None
    if any(c in _HOST_BAD or not c.isprintable() for c in host):
        raise InvalidURL(f"invalid host in URL {text[:200]!r}")
    *labels, last = host.split(".")
    if len(last) > 63 or not all(0 < len(label) < 64 for label in labels):
        raise InvalidURL(f"invalid host in URL {text[:200]!r}: a DNS label is empty or too long")
    return host


class Params(Mapping[str, str]):
    """A query's fields: ``params[name]`` is the first value, :meth:`get_list` all of them."""

    __slots__ = ("_pairs",)

    def __init__(self, pairs: list[tuple[str, str]]) -> None:
        self._pairs = pairs

    def get_list(self, name: str) -> list[str]:
        return [value for key, value in self._pairs if key == name]

    def __getitem__(self, name: str) -> str:
        for key, value in self._pairs:
            if key == name:
                return value
        raise KeyError(name)

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(key for key, _ in self._pairs))

    def __len__(self) -> int:
        return len({key for key, _ in self._pairs})


# --- headers ---------------------------------------------------------------------------------

HeaderInput = Mapping[str, str] | Iterable[tuple[str | bytes, str | bytes]] | None


class Headers(Mapping[str, str]):
    """Header fields in order, looked up without regard to case.

    ``headers[name]`` joins repeated fields with ``", "``; :meth:`get_list` gives them apart.
    Bytes (as read off the wire) are decoded as Latin-1.
    """

    __slots__ = ("_fields",)

    def __init__(self, fields: HeaderInput = None) -> None:
        pairs = fields.items() if isinstance(fields, Mapping) else (fields or ())
        self._fields = [(_text(name), _text(value)) for name, value in pairs]

    def multi_items(self) -> list[tuple[str, str]]:
        """Every field as ``(name, value)``, in order, repeats included."""
        return list(self._fields)

    def get_list(self, name: str) -> list[str]:
        lowered = name.lower()
        return [value for key, value in self._fields if key.lower() == lowered]

    def tokens(self, name: str) -> list[str]:
        """The comma-separated elements of every ``name`` field, in order, each stripped (a
        list-valued field such as ``Connection`` may be split over several fields)."""
        return [token.strip() for token in ",".join(self.get_list(name)).split(",")]

    def __getitem__(self, name: str) -> str:
        values = self.get_list(name)
        if not values:
            raise KeyError(name)
        return ", ".join(values)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and bool(self.get_list(name))

    def __iter__(self) -> Iterator[str]:
        return iter(dict.fromkeys(key.lower() for key, _ in self._fields))

    def __len__(self) -> int:
        return len({key.lower() for key, _ in self._fields})

    def __repr__(self) -> str:
        return (
            f"Headers({[name for name, _ in self._fields]!r})"  # names only: values may be secret
        )


def _field_value(value: str) -> bool:
    """True for what a field value may hold: visible characters, spaces and tabs (RFC 9110),
    Latin-1 at most; never a line break or another control character."""
    if value.isascii() and value.isprintable():
        return True
    return all(c == "\t" or (" " <= c <= "\xff" and c != "\x7f") for c in value)


def _text(value: str | bytes) -> str:
    return value.decode("latin-1") if isinstance(value, bytes) else value


# --- requests and answers --------------------------------------------------------------------


class Request:
    """One request: method, URL, headers (``Host`` first), a whole body and transport options.

    ``content`` may be bytes or chunks (joined here: the client sends bodies whole, with their
    length); ``data`` is a form, sent url-encoded.  ``extensions`` carries what the transport
    reads (``"timeout"``: the connect, read and write timeouts).
    """

    __slots__ = ("content", "extensions", "headers", "method", "url")

    def __init__(
        self,
        method: str,
        url: URL | str,
        *,
        headers: HeaderInput = None,
        content: bytes | Iterable[bytes] | None = None,
        data: Mapping[str, str] | None = None,
        extensions: Mapping[str, Any] | None = None,
    ) -> None:
        self.method = method.upper()
        self.url = url if isinstance(url, URL) else URL(url)
        given = Headers(headers).multi_items()
        fields = [("Host", self.url.netloc)]
        if data is not None:
            # a value's Go bytes: an identity token from an auth file may be any bytes
            content = urlencode([(k, go_bytes(v)) for k, v in data.items()]).encode("ascii")
            fields.append(("Content-Type", "application/x-www-form-urlencoded"))
        fields += [(n, v) for n, v in given if n.lower() != "host"]
        for name, value in fields:
            if not name or not _TOKEN.issuperset(name) or not _field_value(value):
                raise LocalProtocolError(f"refusing to send the header field {name[:40]!r}")
        self.headers = Headers(fields)
        if content is None or isinstance(content, bytes):
            self.content = content or b""
        else:
            self.content = b"".join(content)
        self.extensions = dict(extensions or {})

    def read(self) -> bytes:
        return self.content

    def __repr__(self) -> str:
        return f"<Request {self.method} {self.url}>"


class Body(Protocol):
    """A response body as a transport hands it over: chunks of bytes, and a way to let go."""

    def __iter__(self) -> Iterator[bytes]: ...

    def close(self) -> None: ...


class _Chunks:
    """A body made by the caller: bytes in memory, or chunks as an iterable yields them."""

    __slots__ = ("_chunks",)

    def __init__(self, chunks: Iterable[bytes]) -> None:
        self._chunks = chunks

    def __iter__(self) -> Iterator[bytes]:
        return (chunk for chunk in self._chunks if chunk)

    def close(self) -> None:
        close = getattr(self._chunks, "close", None)
        if close is not None:
            close()


NO_BODY: Body = _Chunks(())
"""The body of an answer that has none (``HEAD``, ``204``, ``304``)."""


class Response:
    """An answer: status, headers, reason and a body streamed from ``stream`` (or in memory).

    ``content`` (bytes, or chunks to stream), ``json`` or ``text`` make a body of the
    caller's (tests' answers); a transport passes the connection's body as ``stream``.  The
    session sets :attr:`request`, which gives :attr:`url`.  ``extensions`` carries what a
    transport offers readers beyond the bytes (:data:`._http1.SIZED_BODY`).
    """

    __slots__ = (
        "_content",
        "_reason",
        "_stream",
        "extensions",
        "headers",
        "request",
        "status_code",
    )

    def __init__(
        self,
        status_code: int,
        *,
        headers: HeaderInput = None,
        content: bytes | Iterable[bytes] | None = None,
        json: Any = None,
        text: str | None = None,
        stream: Body | None = None,
        reason_phrase: str | None = None,
        extensions: Mapping[str, Any] | None = None,
        request: Request | None = None,
    ) -> None:
        fields = Headers(headers).multi_items()
        if json is not None:
            content = _json.dumps(json).encode()
            fields.append(("Content-Type", "application/json"))
        elif text is not None:
            content = text.encode()
            fields.append(("Content-Type", "text/plain; charset=utf-8"))
        if stream is None:
            content = b"" if content is None else content
            stream = _Chunks((content,) if isinstance(content, bytes) else content)
            sized = any(name.lower() == "content-length" for name, _ in fields)
            if isinstance(content, bytes) and not sized:
                fields.append(("Content-Length", str(len(content))))
        self.status_code = status_code
        self.headers = Headers(fields)
        self.request = request
        self.extensions = dict(extensions or {})
        self._stream = stream
        self._reason = reason_phrase
        self._content: bytes | None = None

    @property
    def reason_phrase(self) -> str:
        """The server's reason phrase, or the standard one for an answer made in memory."""
        if self._reason is None:
            from http import HTTPStatus  # only for answers made in memory

            try:
                self._reason = HTTPStatus(self.status_code).phrase
            except ValueError:
                self._reason = ""
        return self._reason

    @property
    def url(self) -> URL:
        if self.request is None:
            raise RuntimeError("this answer has no request")
        return self.request.url

    def iter_bytes(self, chunk_size: int | None = None) -> Iterator[bytes]:
        """The body, in the transport's chunks or cut to at most ``chunk_size`` bytes."""
        if self._content is not None:
            chunks: Iterable[bytes] = (self._content,) if self._content else ()
        else:
            chunks = self._stream
        for chunk in chunks:
            if chunk_size is None or len(chunk) <= chunk_size:
                yield chunk
                continue
            for start in range(0, len(chunk), chunk_size):
                yield chunk[start : start + chunk_size]

    def read(self) -> bytes:
        """The whole body (read once, then kept)."""
        if self._content is None:
            self._content = b"".join(self._stream)
        return self._content

    @property
    def content(self) -> bytes:
        return self.read()

    def json(self) -> Any:
        return _json.loads(self.read())

    def close(self) -> None:
        self._stream.close()

    def __repr__(self) -> str:
        return f"<Response [{self.status_code}]>"


class Transport(Protocol):
    """What answers the client's requests: the network, or a test's stand-in."""

    def handle_request(self, request: Request) -> Response: ...

    def close(self) -> None: ...
