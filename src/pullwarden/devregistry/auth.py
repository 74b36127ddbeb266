"""Who may do what in the development registry: users, per-repository rules, bearer tokens.

Three modes:

* ``none`` — everyone may pull and push everything; no ``Authorization`` is looked at.
* ``basic`` — requests carry HTTP Basic credentials.  A request without them is served only
  when anonymous access covers it; otherwise ``401`` with a ``Basic`` challenge.  Wrong
  credentials are ``401``; valid credentials without access to the repository are ``403
  DENIED`` (docker-registry's htpasswd mode has no per-repository rules; ours has).
* ``token`` — requests carry ``Bearer`` tokens from the registry's own ``/token`` endpoint, as
  with docker-registry's token auth: no or an unknown token gives ``401`` with a ``Bearer``
  challenge naming the realm, service and scope; a valid token that lacks the scope gives
  ``401`` with ``error="insufficient_scope"``.  Tokens are random strings remembered by the
  server together with the access they grant; they are not JWTs.

Access rules: with no rules, every known user may pull and push every repository.  With rules,
a user gets the union of the actions of the rules whose subject is the user or ``*`` and whose
repository glob matches (:func:`fnmatch.fnmatchcase`, so ``*`` also matches ``/``).  Anonymous
clients (and, in addition to their rules, users) may pull repositories matching one of the
``anonymous_pull`` globs.

Passwords are kept in memory only and compared with :func:`hmac.compare_digest`; neither
passwords nor tokens are ever logged or put in an error message.
"""

from __future__ import annotations

import base64
import binascii
import fnmatch
import hmac
import secrets
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pullwarden._clock import Clock, SystemClock

__all__ = [
    "ACTIONS",
    "SERVICE",
    "TOKEN_LIFETIME",
    "AccessRule",
    "AuthMode",
    "Authority",
    "Decision",
    "TokenGrant",
]

SERVICE = "pullwarden-devregistry"
BASIC_REALM = "pullwarden-devregistry"
TOKEN_LIFETIME = 300  # seconds
ACTIONS = frozenset({"pull", "push"})

AuthMode = Literal["none", "basic", "token"]
_MODES = ("none", "basic", "token")


@dataclass(frozen=True)
class AccessRule:
    """``subject`` (a username, or ``*`` for any authenticated user) may do ``actions`` on
    repositories matching the glob ``repository`` (e.g. ``private/alice`` or ``ns/*``).
    """

    subject: str
    repository: str
    actions: frozenset[str] = frozenset({"pull"})

    def __post_init__(self) -> None:
        if not self.subject:
            raise ValueError("an access rule needs a subject (a username or '*')")
        if not self.repository:
            raise ValueError("an access rule needs a repository glob")
        actions = frozenset(self.actions)
        if not actions or not actions <= ACTIONS:
            raise ValueError(
                f"access rule actions must be 'pull' and/or 'push', not {sorted(actions)}"
            )
        object.__setattr__(self, "actions", actions)

    def grants(self, user: str, repository: str) -> frozenset[str]:
        if self.subject not in ("*", user):
            return frozenset()
        return self.actions if fnmatch.fnmatchcase(repository, self.repository) else frozenset()


@dataclass(frozen=True)
class Decision:
    """The outcome of an access check.

    ``allowed`` with ``user`` (None = anonymous), or a refusal: ``status`` 401/403, the
    ``challenge`` for ``WWW-Authenticate`` (empty for 403), the registry error ``code`` and
    ``message``.
    """

    allowed: bool
    user: str | None = None
    status: int = 200
    challenge: str = ""
    code: str = ""
    message: str = ""


@dataclass(frozen=True)
class TokenGrant:
    """What a bearer token stands for: its user (None = anonymous) and repository actions."""

    user: str | None
    access: Mapping[str, frozenset[str]]
    expires: float  # on the authority's monotonic clock
    issued_at: datetime


class _BadCredentials(Exception):
    pass


def _basic_credentials(header: str) -> tuple[str, str] | None:
    """``(user, password)`` from a Basic ``Authorization`` value; None when not Basic.

    Raises _BadCredentials when the header claims Basic but cannot be decoded.
    """
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        raw = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _BadCredentials from None
    user, sep, password = raw.partition(":")
    if not sep:
        raise _BadCredentials
    return user, password


def _bearer_token(header: str) -> str | None:
    scheme, _, value = header.strip().partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


def parse_scope(scope: str) -> tuple[str, frozenset[str]] | None:
    """``repository:<name>:<a,b>`` → ``(name, {a, b})``; None for other resource types."""
    kind, _, rest = scope.partition(":")
    name, sep, actions = rest.rpartition(":")
    if kind != "repository" or not sep or not name:
        return None
    return name, frozenset(a for a in actions.split(",") if a)


class Authority:
    """Checks requests against the mode, users and rules; issues and remembers tokens.

    Thread-safe.  ``clock`` times token expiry (tests pass a FakeClock).
    """

    def __init__(
        self,
        *,
        mode: AuthMode = "none",
        users: Mapping[str, str] | None = None,
        rules: Sequence[AccessRule] = (),
        anonymous_pull: Sequence[str] = (),
        clock: Clock | None = None,
    ) -> None:
        if mode not in _MODES:
            raise ValueError(f"auth must be one of {', '.join(_MODES)}, not {mode!r}")
        users = dict(users or {})
        if mode == "none" and (users or rules or anonymous_pull):
            raise ValueError(
                "users, access rules and anonymous-pull patterns need auth 'basic' or 'token'"
            )
        for name in users:
            if not name or ":" in name:
                raise ValueError(f"invalid user name {name!r} (empty, or contains ':')")
        for rule in rules:
            if not isinstance(rule, AccessRule):
                raise TypeError(f"rules must be AccessRule objects, not {type(rule).__name__}")
        for pattern in anonymous_pull:
            if not pattern:
                raise ValueError("an anonymous-pull pattern must not be empty")
        self.mode: AuthMode = mode
        self._users = users
        self._rules = tuple(rules)
        self._anonymous = tuple(anonymous_pull)
        self._clock: Clock = clock or SystemClock()
        self._tokens: dict[str, TokenGrant] = {}
        self._lock = threading.Lock()
        self._realm = ""

    def set_realm(self, realm: str) -> None:
        """The token endpoint URL named in Bearer challenges (known once the server listens)."""
        self._realm = realm

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    @property
    def usernames(self) -> tuple[str, ...]:
        return tuple(sorted(self._users))

    # -- who may do what --

    def allowed_actions(self, user: str | None, repository: str) -> frozenset[str]:
        """The actions ``user`` (None = anonymous) may perform on ``repository``."""
        if not self.enabled:
            return ACTIONS
        actions: set[str] = set()
        if any(fnmatch.fnmatchcase(repository, p) for p in self._anonymous):
            actions.add("pull")
        if user is not None:
            if not self._rules:
                return ACTIONS
            for rule in self._rules:
                actions |= rule.grants(user, repository)
        return frozenset(actions)

    def verify_password(self, user: str, password: str) -> bool:
        """True when ``user`` exists and ``password`` is its password (constant-time compare)."""
        expected = self._users.get(user)
        probe = (expected if expected is not None else "\0not-a-user\0").encode()
        match = hmac.compare_digest(probe, password.encode())
        return expected is not None and match

    # -- checking a request --

    def check(
        self, authorization: str | None, repository: str | None, actions: Sequence[str]
    ) -> Decision:
        """May a request with this ``Authorization`` do ``actions`` on ``repository``?

        ``repository`` None is the ``/v2/`` base endpoint, which needs only authentication.
        """
        if not self.enabled:
            return Decision(True)
        if self.mode == "basic":
            return self._check_basic(authorization or "", repository, actions)
        return self._check_token(authorization or "", repository, actions)

    def _check_basic(self, header: str, repository: str | None, actions: Sequence[str]) -> Decision:
        challenge = f'Basic realm="{BASIC_REALM}"'
        try:
            creds = _basic_credentials(header) if header else None
        except _BadCredentials:
            return self._unauthorized(challenge)
        if creds is None:
            if repository is not None and set(actions) <= self.allowed_actions(None, repository):
                return Decision(True)
            return self._unauthorized(challenge)
        user, password = creds
        if not self.verify_password(user, password):
            return self._unauthorized(challenge)
        if repository is None or set(actions) <= self.allowed_actions(user, repository):
            return Decision(True, user)
        return Decision(
            False,
            user,
            status=403,
            code="DENIED",
            message="requested access to the resource is denied",
        )

    def _check_token(self, header: str, repository: str | None, actions: Sequence[str]) -> Decision:
        challenge = f'Bearer realm="{self._realm}",service="{SERVICE}"'
        if repository is not None:
            challenge += f',scope="repository:{repository}:{",".join(actions)}"'
        token = _bearer_token(header) if header else None
        if token is None:
            return self._unauthorized(challenge)
        grant = self._grant(token)
        if grant is None:
            return self._unauthorized(challenge + ',error="invalid_token"')
        if repository is None or set(actions) <= grant.access.get(repository, frozenset()):
            return Decision(True, grant.user)
        refused = self._unauthorized(challenge + ',error="insufficient_scope"')
        return Decision(
            False, grant.user, refused.status, refused.challenge, refused.code, refused.message
        )

    @staticmethod
    def _unauthorized(challenge: str) -> Decision:
        return Decision(
            False,
            status=401,
            challenge=challenge,
            code="UNAUTHORIZED",
            message="authentication required",
        )

    # -- tokens --

    def authenticate(self, authorization: str | None) -> tuple[bool, str | None]:
        """For the token endpoint: ``(ok, user)`` from an optional Basic header."""
        if not authorization:
            return True, None
        try:
            creds = _basic_credentials(authorization)
        except _BadCredentials:
            return False, None
        if creds is None:
            return False, None
        return self.login(*creds)

    def login(self, user: str, password: str) -> tuple[bool, str | None]:
        """``(ok, user)`` for a username/password pair; both empty means anonymous."""
        if not user and not password:
            return True, None
        if self.verify_password(user, password):
            return True, user
        return False, None

    def issue_token(self, user: str | None, scopes: Iterable[str]) -> tuple[str, TokenGrant]:
        """A new token for ``user`` granting the part of ``scopes`` the rules allow."""
        access: dict[str, frozenset[str]] = {}
        for scope in scopes:
            parsed = parse_scope(scope)
            if parsed is None:
                continue
            name, wanted = parsed
            granted = wanted & self.allowed_actions(user, name)
            if granted:
                access[name] = access.get(name, frozenset()) | granted
        now = self._clock.monotonic()
        grant = TokenGrant(user, access, now + TOKEN_LIFETIME, self._clock.now())
        token = secrets.token_urlsafe(32)
        with self._lock:
            for stale in [t for t, g in self._tokens.items() if g.expires <= now]:
                del self._tokens[stale]
            self._tokens[token] = grant
        return token, grant

    def _grant(self, token: str) -> TokenGrant | None:
        with self._lock:
            grant = self._tokens.get(token)
            if grant is None:
                return None
            if grant.expires <= self._clock.monotonic():
                del self._tokens[token]
                return None
            return grant
