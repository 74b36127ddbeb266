"""Registry authentication helpers: challenge parsing, the token cache, token replies.

Nothing here talks to the network or decides where credentials may go:
:mod:`pullwarden.runtime._transport` does the requests, and the rules for what is sent where
(the registry's own origin, the token realm) are in :mod:`pullwarden.runtime._policy`.
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import field

from pullwarden._gojson import go_bytes
from pullwarden._nesting import loads_json
from pullwarden._values import frozen
from pullwarden.runtime._base import AuthConfig

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "Challenge",
    "TokenCache",
    "TokenKey",
    "basic_authorization",
    "credential_id",
    "is_loopback_host",
    "merge_scopes",
    "parse_challenges",
    "parse_token_reply",
]

DEFAULT_TOKEN_LIFETIME = 60.0  # seconds, when the token server gives no expires_in

# --- WWW-Authenticate ------------------------------------------------------------------------
# RFC 7235: challenge = scheme [ 1*SP ( token68 / #auth-param ) ], challenges separated by ",".
_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_QUOTED = re.compile(r'"((?:[^"\\]|\\.)*)"?', re.DOTALL)
# Unquoted parameter values: be lenient (some servers send realm=https://... without quotes).
_BARE_VALUE = re.compile(r'[^\s,"]+')
_ESCAPE = re.compile(r"\\(.)", re.DOTALL)
_SPACE = " \t"


@frozen
class Challenge:
    """One authentication challenge: lower-cased scheme and lower-cased parameter names."""

    scheme: str
    params: Mapping[str, str] = field(default_factory=dict)
    token68: str = ""

    def param(self, name: str) -> str:
        return self.params.get(name, "")

    @property
    def scopes(self) -> tuple[str, ...]:
        """The ``scope`` parameter split on spaces (a challenge may name several)."""
        return tuple(self.param("scope").split())


def _skip(text: str, pos: int, chars: str) -> int:
    while pos < len(text) and text[pos] in chars:
        pos += 1
    return pos


def _param_at(text: str, pos: int) -> tuple[str, str, int] | None:
    """Read ``name = value`` at ``pos``; None when there is no parameter there."""
    name = _TOKEN.match(text, pos)
    if name is None:
        return None
    pos = _skip(text, name.end(), _SPACE)
    if pos >= len(text) or text[pos] != "=":
        return None
    pos = _skip(text, pos + 1, _SPACE)
    if pos < len(text) and text[pos] == '"':
        quoted = _QUOTED.match(text, pos)
        assert quoted is not None  # the pattern accepts any text after an opening quote
        return name.group().lower(), _ESCAPE.sub(r"\1", quoted.group(1)), quoted.end()
    bare = _BARE_VALUE.match(text, pos)
    if bare is None or bare.group().startswith("="):
        return None
    return name.group().lower(), bare.group(), bare.end()


def _token68_at(text: str, pos: int) -> tuple[str, int] | None:
    """Read a token68 that forms the whole challenge body (ends at ``,`` or the end)."""
    found = _TOKEN68.match(text, pos)
    if found is None:
        return None
    end = _skip(text, found.end(), _SPACE)
    if end < len(text) and text[end] != ",":
        return None
    return found.group(), found.end()


def _parse_one(text: str) -> list[Challenge]:
    out: list[Challenge] = []
    pos = 0
    while True:
        pos = _skip(text, pos, _SPACE + ",")
        if pos >= len(text):
            return out
        scheme = _TOKEN.match(text, pos)
        if scheme is None:
            pos += 1  # a stray character: skip it rather than give up on the header
            continue
        pos = scheme.end()
        params: dict[str, str] = {}
        token68 = ""
        after_space = _skip(text, pos, _SPACE)
        if after_space > pos and _param_at(text, after_space) is None:
            found = _token68_at(text, after_space)
            if found is not None:
                token68, pos = found
        elif after_space > pos:
            pos = after_space
            while (param := _param_at(text, pos)) is not None:
                name, value, pos = param
                params.setdefault(name, value)
                comma = _skip(text, pos, _SPACE)
                if comma >= len(text) or text[comma] != ",":
                    pos = comma
                    break
                following = _skip(text, comma, _SPACE + ",")
                if _param_at(text, following) is None:
                    pos = comma  # the next item is another challenge's scheme
                    break
                pos = following
        out.append(Challenge(scheme.group().lower(), params, token68))


def parse_challenges(headers: str | Iterable[str]) -> list[Challenge]:
    """Parse one or several ``WWW-Authenticate`` header values into challenges, in order.

    Handles quoted values with commas and backslash escapes, several challenges in one value,
    token68 bodies and unquoted values; malformed parts are skipped, never raised on.
    """
    values = [headers] if isinstance(headers, str) else list(headers)
    out: list[Challenge] = []
    for value in values:
        out.extend(_parse_one(value))
    return out


def merge_scopes(*groups: Iterable[str]) -> tuple[str, ...]:
    """Union of token scopes, one per resource: ``repository:a:pull`` + ``repository:a:push``
    gives ``repository:a:pull,push``.  Order of first appearance is kept.
    """
    actions: dict[str, list[str]] = {}
    for scope in (s for group in groups for s in group):
        resource, sep, wanted = scope.rpartition(":")
        if not sep or not resource:
            resource, wanted = scope, ""
        known = actions.setdefault(resource, [])
        known.extend(a for a in wanted.split(",") if a and a not in known)
    return tuple(f"{r}:{','.join(a)}" if a else r for r, a in actions.items())


# --- credentials -----------------------------------------------------------------------------


def credential_id(auth: AuthConfig) -> str:
    """A stable, non-reversible identity for ``auth`` (cache keys must not hold secrets)."""
    if auth.anonymous:
        return "anonymous"
    material = go_bytes(
        "\0".join((auth.username, auth.password, auth.identity_token, auth.registry_token))
    )
    return hashlib.sha256(b"pullwarden-credential\0" + material).hexdigest()[:32]


def basic_authorization(username: str, password: str) -> str:
    """The ``Authorization`` value for HTTP Basic: the credentials' own bytes (a password from
    a pull Secret may be any bytes, which reach us as ``surrogateescape`` text)."""
    raw = go_bytes(f"{username}:{password}")
    return "Basic " + base64.b64encode(raw).decode("ascii")


def is_loopback_host(host: str) -> bool:
    """True for the name ``localhost`` and the addresses ``127.0.0.0/8`` and ``::1``.

    ``host`` may carry a port (``localhost:5000``, ``[::1]:5000``); brackets are for IPv6
    only.  Other names are not loopback whatever they look like (``foo.localhost`` and
    ``localhost.example`` are resolved by DNS like any name, and may point anywhere).
    """
    host = host.strip().lower()
    if host.startswith("["):
        inside, sep, rest = host[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and rest[1:].isdigit())):
            return False
        try:
            address = ipaddress.ip_address(inside)
        except ValueError:
            return False
        return address.version == 6 and address.is_loopback
    if host.count(":") == 1:
        host, _, port = host.partition(":")
        if not port.isdigit():
            return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


# --- tokens ----------------------------------------------------------------------------------


def parse_token_reply(data: bytes) -> tuple[str, float]:
    """``(token, lifetime seconds)`` from a token server's JSON; ValueError when unusable.

    Accepts both ``token`` and ``access_token``; ``expires_in`` defaults to 60 seconds.  A
    token goes into an ``Authorization`` header, so one with anything but visible ASCII in it
    (a line break would start a header of the token server's choosing) is refused.
    """
    try:
        doc = loads_json(data)
    except ValueError:  # not JSON, or nested too deeply (NestingError)
        raise ValueError("token server reply is not JSON") from None
    if not isinstance(doc, dict):
        raise ValueError("token server reply is not a JSON object")
    token = doc.get("token") or doc.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValueError("token server reply has no token")
    if not all("!" <= c <= "~" for c in token):
        raise ValueError("token server reply has a token that is not visible ASCII")
    lifetime = doc.get("expires_in")
    if isinstance(lifetime, bool) or not isinstance(lifetime, int | float) or lifetime <= 0:
        lifetime = DEFAULT_TOKEN_LIFETIME
    return token, float(lifetime)


@frozen
class TokenKey:
    """What a bearer token is good for: one registry, realm, service, scope set and credential."""

    registry: str
    realm: str
    service: str
    scopes: tuple[str, ...]
    credential: str  # credential_id(), never the secret itself


class TokenCache:
    """Bearer tokens until shortly before they expire; thread-safe; time from ``clock``.

    A token is reused until ``lifetime - min(10 s, lifetime / 10)`` has passed, so that a token
    is not sent in the last moments of its life.
    """

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[TokenKey, tuple[str, float]] = {}

    def get(self, key: TokenKey) -> str | None:
        with self._lock:
            entry = self._tokens.get(key)
            if entry is None:
                return None
            token, deadline = entry
            if self._clock() >= deadline:
                del self._tokens[key]
                return None
            return token

    def put(self, key: TokenKey, token: str, lifetime: float) -> None:
        deadline = self._clock() + lifetime - min(10.0, lifetime / 10)
        with self._lock:
            self._tokens[key] = (token, deadline)

    def discard(self, key: TokenKey, token: str) -> None:
        """Forget ``key`` if it still maps to ``token`` (the registry refused that token)."""
        with self._lock:
            entry = self._tokens.get(key)
            if entry is not None and entry[0] == token:
                del self._tokens[key]

    def __len__(self) -> int:
        with self._lock:
            return len(self._tokens)
