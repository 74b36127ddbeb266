"""Requests to one registry: credentials, redirects, retries and typed errors.

:class:`Session` sends every request pullwarden makes to a registry or token server, blob
downloads included, through one :class:`~._messages.Transport` (the network's is
:mod:`._wire`, over the HTTP/1.1 of :mod:`._http1`).  It answers ``401`` challenges (Basic, or
Bearer with a token from the realm), follows redirects itself, applying the rules of
:mod:`._policy` at every hop (credentials only to their origin, one redirect limit, the token
realm rule), retries connection errors and ``5xx`` answers, and turns every other failure into
a typed :class:`~pullwarden.errors.RegistryError` whose message names the operation and image
and never a secret.

A :class:`Target` is one operation: immutable, and shared by the threads of the operation (the
parallel blob downloads of one pull).  What it learns while running — the ``Authorization``
values sent, the tokens issued — goes to its :class:`~._scrub.Scrubber`, which is locked.  The
challenges a registry sent (what to send it up front next time) are per session, under the
session's lock.

Every exchange runs under a :func:`~pullwarden.runtime._network.guarded` block carrying the
target's cancel token, and manifest and token exchanges also under a deadline: once the token
is cancelled, the sockets in use are shut down, the exchange raises the token's error, and no
retry (nor back-off sleep) follows.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import field
from typing import Any, NoReturn, TypeVar

from pullwarden._cancel import CancelToken
from pullwarden._nesting import loads_json
from pullwarden._values import frozen
from pullwarden.errors import (
    DeniedError,
    NotFoundError,
    RegistryError,
    RegistryUnavailableError,
    UnauthorizedError,
)
from pullwarden.reference import Reference
from pullwarden.runtime._auth import (
    Challenge,
    TokenCache,
    TokenKey,
    basic_authorization,
    credential_id,
    merge_scopes,
    parse_challenges,
    parse_token_reply,
)
from pullwarden.runtime._base import AuthConfig
from pullwarden.runtime._messages import (
    URL,
    ConnectError,
    ConnectTimeout,
    InvalidURL,
    LocalProtocolError,
    NetworkError,
    ReadError,
    ReadTimeout,
    RemoteProtocolError,
    Request,
    Response,
    TimeoutException,
    Transport,
    TransportError,
    UnsupportedProtocol,
    WriteError,
    WriteTimeout,
)
from pullwarden.runtime._network import DeadlineExceeded, guarded
from pullwarden.runtime._policy import (
    MAX_REDIRECTS,
    Origin,
    origin_of,
    realm_gets_credentials,
    redirect_location,
    sends_credentials,
)
from pullwarden.runtime._scrub import Scrubber

__all__ = ["Content", "ServerError", "Session", "Target", "read_capped"]

_T = TypeVar("_T")

USER_AGENT = "pullwarden"
_MAX_ERROR_BODY = 64 * 1024
_MAX_TOKEN_REPLY = 1024 * 1024
_MAX_BACKOFF = 30.0
_NOT_FOUND_CODES = {
    "MANIFEST_UNKNOWN": "manifest unknown",
    "NAME_UNKNOWN": "repository name not known to registry",
    "BLOB_UNKNOWN": "blob unknown",
    "BLOB_UPLOAD_UNKNOWN": "blob upload unknown",
}

_WITHHELD = "; credentials were withheld from the cleartext token realm"
_NO_REALM = "unauthorized: token realm is not an http(s) URL"

Content = Callable[[], bytes | Iterator[bytes]]  # a request body, made afresh for each send


@frozen
class Target:
    """One operation on one repository: where to send requests and how to word errors.

    Immutable; the secrets known to the operation, which grow while it runs, are held by
    ``scrubber`` (thread-safe), and every message goes through it.
    """

    action: str  # "pulling" or "pushing"
    registry: str  # as in the normalised name, e.g. "docker.io"
    repository: str
    name: str  # registry/repository
    tag: str
    digest: str
    base: URL  # scheme://api-host[:port]
    auth: AuthConfig
    insecure_configured: bool
    scope: str  # the token scope this operation needs
    scrubber: Scrubber = field(default_factory=Scrubber)  # masks secrets in every message
    cancel: CancelToken | None = None  # stops every exchange of the operation

    @property
    def reference(self) -> str:
        return self.digest or self.tag

    @property
    def what(self) -> str:
        return str(Reference("", self.name, self.tag, self.digest))

    @property
    def origin(self) -> Origin:
        """Where this operation's credentials may go (:func:`._policy.sends_credentials`)."""
        return origin_of(self.base)

    def url(self, path: str) -> URL:
        return self.base.with_path(f"/v2/{self.repository}/{path}")

    def resolve(self, base: URL, location: str) -> URL:
        """A registry's ``Location`` against the URL it answered; one that is no URL fails."""
        try:
            return base.join(location)
        except InvalidURL:
            self.fail(RegistryError, "redirect to an invalid location")

    def message(self, cause: str) -> str:
        """``<action> <image>: <cause>``, with every piece of a known secret masked as ``***``.

        The last line of defence: callers already leave out registry-supplied text that quotes
        a secret (:meth:`shown`); this also catches what they did not think of, in any case.
        """
        return self.scrubber.mask(f"{self.action} {self.what}: {cause}")

    def quotes_secret(self, text: str) -> bool:
        """True when ``text`` (from the registry) contains a piece of a secret, in any case."""
        return self.scrubber.quotes(text)

    def shown(self, text: str, what: str) -> str:
        """Registry-supplied ``text`` for a message, or a note that it is withheld."""
        return f"({what} withheld: it quoted a credential)" if self.quotes_secret(text) else text

    def fail(self, kind: type[RegistryError], cause: str) -> NoReturn:
        """Raise ``kind`` for this operation."""
        raise kind(
            self.message(cause),
            registry=self.registry,
            repository=self.repository,
            reference=self.reference,
        )


@frozen
class _Authz:
    """An ``Authorization`` value and how it was obtained."""

    header: str
    kind: str  # "basic" or "bearer"
    fresh: bool  # a refusal is final (not a cached token that may merely have gone stale)
    key: TokenKey | None = None
    withheld: bool = False  # credentials were not sent to a cleartext foreign realm

    @property
    def secret(self) -> str:
        """The credential part of the header (what must never appear in a message)."""
        return self.header.partition(" ")[2]


class ServerError(Exception):
    """A retryable answer (5xx); becomes RegistryUnavailableError when retries run out."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


@frozen
class _Send:
    """What every hop of one exchange sends (the URL and ``Authorization`` vary by hop)."""

    method: str
    headers: Mapping[str, str]
    content: Content | None


def _realm(target: Target, challenge: Challenge) -> URL:
    """The token realm a Bearer challenge names; one that is not an http(s) URL fails."""
    try:
        realm = URL(challenge.param("realm"))
    except InvalidURL:
        target.fail(UnauthorizedError, _NO_REALM)
    if realm.scheme not in ("http", "https"):
        target.fail(UnauthorizedError, _NO_REALM)
    return realm


def _anonymous(target: Target) -> str:
    return " (anonymous)" if target.auth.anonymous else ""


def _status_text(response: Response, target: Target) -> str:
    """``HTTP <status> <reason>``; the (server-chosen) reason is left out if it quotes a secret."""
    phrase = response.reason_phrase
    shown = phrase and not target.quotes_secret(phrase)
    return f"HTTP {response.status_code}" + (f" {phrase}" if shown else "")


# The cause shown for each kind of transport failure, most specific first.
_TRANSPORT_CAUSES: tuple[tuple[type[TransportError], str], ...] = (
    (ConnectTimeout, "connection timed out"),
    (ReadTimeout, "read timed out"),
    (WriteTimeout, "write timed out"),
    (RemoteProtocolError, "connection closed by the server mid-response"),
    (ReadError, "connection dropped while reading"),
    (WriteError, "connection dropped while sending"),
    (UnsupportedProtocol, "unsupported URL scheme"),
)
# What a ConnectError's text says happened (lower-cased text, any of the phrases).
_CONNECT_CAUSES: tuple[tuple[tuple[str, ...], str], ...] = (
    (("refused",), "connection refused"),
    (
        ("certificate verify failed", "certificate_verify_failed"),
        "TLS certificate verification failed",
    ),
    (("name or service not known", "name resolution"), "host name could not be resolved"),
)


def _transport_cause(exc: TransportError) -> str:
    if isinstance(exc, DeadlineExceeded):
        return str(exc)
    if isinstance(exc, ConnectError):
        lowered = str(exc).lower()
        for phrases, cause in _CONNECT_CAUSES:
            if any(phrase in lowered for phrase in phrases):
                return cause
        return "connection failed"
    return next((c for kind, c in _TRANSPORT_CAUSES if isinstance(exc, kind)), type(exc).__name__)


def _describe_transport_error(exc: TransportError) -> str:
    """A short cause for a transport failure, naming the host it happened with."""
    cause = _transport_cause(exc)
    return cause if exc.request is None else f"{exc.request.url.netloc}: {cause}"


def _is_retryable(exc: TransportError) -> bool:
    if isinstance(exc, ConnectError):
        lowered = str(exc).lower()
        return "certificate" not in lowered and "ssl" not in lowered
    return isinstance(exc, TimeoutException | NetworkError | RemoteProtocolError)


def read_capped(response: Response, limit: int) -> bytes:
    """At most ``limit`` bytes of a streamed body (the rest is dropped with the connection)."""
    parts: list[bytes] = []
    size = 0
    for chunk in response.iter_bytes():
        parts.append(chunk)
        size += len(chunk)
        if size >= limit:
            break
    return b"".join(parts)[:limit]


def _registry_errors(body: bytes) -> tuple[str, str, str]:
    """``(code, message, detail)`` of the first entry of a distribution ``{"errors": [...]}``.

    ``code`` is upper-cased, ``message`` shortened to one line; ``detail`` (any JSON) is
    returned as text only so that callers can check it for secrets.
    """
    try:
        doc: Any = loads_json(body)
    except ValueError:  # not JSON, or nested too deeply (NestingError): not an error body
        return "", "", ""
    errors = doc.get("errors") if isinstance(doc, dict) else None
    if not isinstance(errors, list) or not errors or not isinstance(errors[0], dict):
        return "", "", ""
    code, message, detail = (errors[0].get(k) for k in ("code", "message", "detail"))
    # ``detail`` nests no deeper than loads_json allows, far from the recursion limit.
    detail_text = "" if detail is None else json.dumps(detail, ensure_ascii=False)
    return (
        code.upper() if isinstance(code, str) else "",
        " ".join(message.split())[:200] if isinstance(message, str) else "",
        detail_text,
    )


class Session:
    """Sends requests for :class:`Target` operations through one shared transport.

    ``timeout`` bounds each connect, send and read; every request carries ``User-Agent``.
    """

    def __init__(
        self,
        transport: Transport,
        *,
        timeout: float | None,
        retries: int,
        retry_backoff: float,
        sleep: Callable[[float], None] | None,
        clock: Callable[[], float],
        request_timeout: float | None,
    ) -> None:
        self._transport = transport
        self._timeouts = {"connect": timeout, "read": timeout, "write": timeout}
        self._retries = max(0, retries)
        self._retry_backoff = retry_backoff
        self._sleep = sleep
        self._tokens = TokenCache(clock)
        self._lock = threading.Lock()  # guards _challenges (blob workers share the session)
        self._challenges: dict[Origin, Challenge] = {}
        self._request_timeout = request_timeout

    def _build(
        self,
        method: str,
        url: URL,
        headers: Mapping[str, str],
        content: bytes | Iterator[bytes] | None = None,
        data: Mapping[str, str] | None = None,
    ) -> Request:
        return Request(
            method,
            url,
            headers={"User-Agent": USER_AGENT, "Accept": "*/*", **headers},
            content=content,
            data=data,
            extensions={"timeout": self._timeouts},
        )

    def _send(self, request: Request) -> Response:
        """The transport's answer to ``request`` (which its errors and the answer then name)."""
        try:
            response = self._transport.handle_request(request)
        except TransportError as exc:
            if exc.request is None:
                exc.request = request
            raise
        response.request = request
        return response

    def retrying(self, target: Target, attempt: Callable[[], _T]) -> _T:
        """Run ``attempt``; repeat it after connection errors and 5xx with back-off.

        Once ``target.cancel`` is cancelled, its error is raised instead: before an attempt,
        instead of the failure a cancelled attempt ends with, and instead of a back-off sleep
        (which the cancel cuts short).
        """
        token = target.cancel
        failures = 0
        while True:
            if token is not None:
                token.raise_if_cancelled()
            try:
                return attempt()
            except ServerError as exc:
                cause = exc.cause
            except LocalProtocolError as exc:  # ours to fix, not the registry's: never retried
                target.fail(RegistryError, f"cannot send the request: {exc}")
            except TransportError as exc:
                if token is not None:
                    token.raise_if_cancelled()
                cause = _describe_transport_error(exc)
                if not _is_retryable(exc):
                    target.fail(RegistryUnavailableError, f"registry unavailable: {cause}")
            if failures >= self._retries:
                tries = f" (after {failures + 1} attempts)" if failures else ""
                target.fail(RegistryUnavailableError, f"registry unavailable: {cause}{tries}")
            self._pause(min(self._retry_backoff * 2**failures, _MAX_BACKOFF), token)
            failures += 1

    def _pause(self, seconds: float, token: CancelToken | None) -> None:
        """The back-off between attempts: an injected sleep, else a wait the token ends."""
        if self._sleep is not None:
            self._sleep(seconds)
        elif token is not None:
            token.wait(seconds)
        else:
            time.sleep(seconds)

    def _status_error(
        self, target: Target, method: str, response: Response, subject: str
    ) -> NoReturn:
        """Raise the typed error for a non-success answer (or ServerError for a 5xx)."""
        status = response.status_code
        body = b"" if method == "HEAD" else read_capped(response, _MAX_ERROR_BODY)
        response.close()
        code, message, detail = _registry_errors(body)
        # Everything below that the registry chose is checked before it is shown: a registry
        # may echo what it was sent (and the code is upper-cased here, so check it as shown).
        if target.quotes_secret(message) or target.quotes_secret(detail):
            message = "(the registry's message quoted a credential and is not shown)"
        said = (
            f": {message}"
            if message and message.lower() not in _NOT_FOUND_CODES.get(code, "")
            else ""
        )
        shown_code = target.shown(code, "error code") if code else ""
        status_text = _status_text(response, target)
        if code in _NOT_FOUND_CODES:
            target.fail(NotFoundError, f"not found: {_NOT_FOUND_CODES[code]}{said}")
        if code == "DENIED" or (status == 403 and not code):
            target.fail(DeniedError, f"access denied ({code or status_text}){said}")
        if code == "UNAUTHORIZED":
            target.fail(UnauthorizedError, f"unauthorized{said}")
        if code == "TOOMANYREQUESTS" or status == 429:
            target.fail(RegistryUnavailableError, f"registry unavailable: too many requests{said}")
        if status >= 500:
            raise ServerError(f"{target.shown(response.url.netloc, 'host')}: {status_text}")
        if status == 404:
            target.fail(NotFoundError, f"not found: {subject} ({status_text})")
        reason = f" ({shown_code})" if shown_code else ""
        target.fail(RegistryError, f"{subject}: unexpected {status_text}{reason}{said}")

    @contextlib.contextmanager
    def request(
        self,
        target: Target,
        method: str,
        url: URL,
        subject: str,
        headers: Mapping[str, str] | None = None,
        content: Content | None = None,
        ok: Sequence[int] = (),
        *,
        deadline: bool = False,
    ) -> Iterator[Response]:
        """Send a request and yield the open (streamed) answer when it is a success.

        A success is any 2xx, or a status in ``ok``.  Everything else raises a typed error.
        The answer is closed when the ``with`` block ends.  The whole exchange — credentials,
        redirects and reading the answer in the block — runs under ``target.cancel``, and with
        ``deadline`` must also end within the session's ``request_timeout``.
        """
        send = _Send(method, headers or {}, content)
        with guarded(target.cancel, self._request_timeout if deadline else None):
            response = self._authenticated(target, url, send)
            try:
                if not (
                    (200 <= response.status_code < 300 and not ok) or response.status_code in ok
                ):
                    self._status_error(target, method, response, subject)
                yield response
            finally:
                response.close()

    def _authenticated(self, target: Target, url: URL, send: _Send) -> Response:
        """Send with whatever credentials the registry asks for; never returns a 401."""
        authz = self._known_authorization(target)
        for _ in range(4):
            response = self._follow(target, url, send, authz)
            if response.status_code != 401:
                return response
            if not sends_credentials(response.url, target.origin):
                response.close()
                target.fail(
                    UnauthorizedError,
                    f"unauthorized: redirect target {target.shown(response.url.netloc, 'host')}"
                    " asked for "
                    "credentials, which are never sent to another host",
                )
            challenges = parse_challenges(response.headers.get_list("WWW-Authenticate"))
            if send.method != "HEAD":
                read_capped(response, _MAX_ERROR_BODY)
            response.close()
            authz = self._answer(target, challenges, authz)
        target.fail(UnauthorizedError, "unauthorized: the registry keeps asking for credentials")

    def _follow(self, target: Target, url: URL, send: _Send, authz: _Authz | None) -> Response:
        """Send, following redirects; ``Authorization`` only ever goes to the registry itself."""
        for _ in range(MAX_REDIRECTS + 1):
            headers = dict(send.headers)
            if authz is not None and sends_credentials(url, target.origin):
                target.scrubber.add(authz.secret)  # never echoed in errors
                headers["Authorization"] = authz.header
            content = send.content() if send.content is not None else None
            response = self._send(self._build(send.method, url, headers, content))
            location = redirect_location(send.method, response)
            if location is None:
                return response
            if send.method != "HEAD":
                read_capped(response, _MAX_ERROR_BODY)
            response.close()
            url = target.resolve(url, location)
        target.fail(RegistryError, f"too many redirects (more than {MAX_REDIRECTS})")

    def _known_authorization(self, target: Target) -> _Authz | None:
        """Credentials to send up front, from a challenge this registry sent before."""
        with self._lock:
            challenge = self._challenges.get(target.origin)
        if challenge is None:
            return None
        if challenge.scheme == "basic":
            return self._basic(target)
        return self._bearer(target, challenge, (target.scope,))

    def _remember(self, target: Target, challenge: Challenge) -> None:
        with self._lock:
            self._challenges[target.origin] = challenge

    def _answer(
        self, target: Target, challenges: Sequence[Challenge], sent: _Authz | None
    ) -> _Authz:
        """The credentials to retry with after a 401, or the typed refusal."""
        bearer = next((c for c in challenges if c.scheme == "bearer" and c.param("realm")), None)
        if bearer is not None:
            return self._answer_bearer(target, bearer, sent)
        basic = next((c for c in challenges if c.scheme == "basic"), None)
        if basic is not None:
            return self._answer_basic(target, basic, sent)
        schemes = ", ".join(sorted({target.shown(c.scheme, "scheme") for c in challenges}))
        target.fail(
            UnauthorizedError,
            f"unauthorized: authentication required (unsupported challenge: {schemes or 'none'})",
        )

    def _answer_bearer(self, target: Target, bearer: Challenge, sent: _Authz | None) -> _Authz:
        """A token for the challenge; a token that was just refused is final or stale."""
        self._remember(target, bearer)
        if sent is not None and sent.kind == "bearer":
            stale = self._stale_token(target, bearer, sent)
            self._tokens.discard(stale, sent.secret)
        return self._bearer(target, bearer, merge_scopes(bearer.scopes, (target.scope,)))

    @staticmethod
    def _stale_token(target: Target, bearer: Challenge, sent: _Authz) -> TokenKey:
        """The cache key of a refused token that may merely have gone stale, else the refusal."""
        error = bearer.param("error")
        note = _WITHHELD if sent.withheld else ""
        if error == "insufficient_scope":
            target.fail(
                DeniedError, f"access denied (insufficient_scope){_anonymous(target)}{note}"
            )
        if sent.fresh or sent.key is None:
            reason = target.shown(error, "reason") if error else "no reason given"
            target.fail(UnauthorizedError, f"unauthorized: token refused ({reason}){note}")
        return sent.key

    def _answer_basic(self, target: Target, basic: Challenge, sent: _Authz | None) -> _Authz:
        """Basic credentials, unless they were just refused or there are none."""
        self._remember(target, basic)
        if sent is not None and sent.kind == "basic":
            target.fail(UnauthorizedError, "unauthorized: credentials rejected")
        authz = self._basic(target)
        if authz is None:
            target.fail(
                UnauthorizedError, f"unauthorized: authentication required{_anonymous(target)}"
            )
        return authz

    @staticmethod
    def _basic(target: Target) -> _Authz | None:
        auth = target.auth
        if not (auth.username or auth.password):
            return None
        return _Authz(basic_authorization(auth.username, auth.password), "basic", True)

    def _bearer(self, target: Target, challenge: Challenge, scopes: Sequence[str]) -> _Authz:
        auth = target.auth
        if auth.registry_token:
            return _Authz(f"Bearer {auth.registry_token}", "bearer", True)
        realm = _realm(target, challenge)
        key = TokenKey(
            target.registry,
            str(realm),
            challenge.param("service"),
            tuple(scopes),
            credential_id(auth),
        )
        allowed = realm_gets_credentials(realm, target.base, target.insecure_configured)
        withheld = not auth.anonymous and not allowed
        cached = self._tokens.get(key)
        if cached is not None:
            return _Authz(f"Bearer {cached}", "bearer", False, key, withheld)
        token, lifetime = self._fetch_token(target, realm, key, allowed)
        target.scrubber.add(token)
        self._tokens.put(key, token, lifetime)
        return _Authz(f"Bearer {token}", "bearer", True, key, withheld)

    def _fetch_token(
        self, target: Target, realm: URL, key: TokenKey, allowed: bool
    ) -> tuple[str, float]:
        """Ask the realm for a token (``allowed``: with the caller's credentials)."""
        where = target.shown(realm.netloc, "token server address")
        request = self._token_request(target.auth, realm, key, allowed)
        with guarded(target.cancel, self._request_timeout):
            body = self._token_reply(target, request, where, allowed)
        try:
            return parse_token_reply(body)
        except ValueError as exc:
            target.fail(RegistryError, f"token server {where}: {exc}")

    def _token_request(self, auth: AuthConfig, realm: URL, key: TokenKey, allowed: bool) -> Request:
        """A refresh-token POST, or a GET with Basic credentials or anonymously."""
        headers = {"Accept": "application/json"}
        if allowed and auth.identity_token:
            form = {
                "grant_type": "refresh_token",
                "refresh_token": auth.identity_token,
                "service": key.service,
                "scope": " ".join(key.scopes),
                "client_id": USER_AGENT,
            }
            return self._build("POST", realm, headers, data=form)
        params = [("service", key.service)] if key.service else []
        params.extend(("scope", scope) for scope in key.scopes)
        if allowed and (auth.username or auth.password):
            if auth.username:
                params.append(("account", auth.username))
            headers["Authorization"] = basic_authorization(auth.username, auth.password)
        return self._build("GET", realm.with_params(params), headers)

    def _token_reply(self, target: Target, request: Request, where: str, allowed: bool) -> bytes:
        """Send the token request; the reply body, or the typed refusal."""
        response = self._send(request)
        try:
            status = response.status_code
            if status == 200:
                return read_capped(response, _MAX_TOKEN_REPLY)
            if status == 401:
                target.fail(
                    UnauthorizedError,
                    f"unauthorized: token server {where} rejected the credentials"
                    + _anonymous(target)
                    + ("" if allowed else _WITHHELD),
                )
            if status == 403:
                target.fail(DeniedError, f"access denied by token server {where}")
            if status >= 500:
                raise ServerError(f"token server {where}: {_status_text(response, target)}")
            target.fail(
                RegistryError,
                f"token server {where} answered {_status_text(response, target)}",
            )
        finally:
            response.close()
