"""The credential keyring: which stored credentials apply to an image (spec §2.3, §2.5, §2.6).

A :class:`DockerKeyring` indexes docker config entries by a key derived from their location
(``host[:port]`` plus an optional path).  ``lookup(image)`` takes a normalised repository name
without tag or digest (``docker.io/library/nginx``) and returns every credential whose key matches,
most specific key first; failing that, Docker Hub images fall back to the ``index.docker.io`` key.

Locations and images are parsed the way Go's ``net/url`` parses ``https://`` + value, because what
counts as unparsable (and therefore ignored) and how percent-escapes decode decides which keys
exist.  Strings are handled as Go strings, i.e. bytes: a ``str`` carries non-UTF-8 bytes through
``surrogateescape``.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import threading
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Final, Protocol, TypeAlias

from pullwarden._gojson import go_bytes, go_str
from pullwarden._values import frozen
from pullwarden.credentials._dockerconfig import DockerConfig, config_from_secret
from pullwarden.credentials._hashing import credential_hash
from pullwarden.errors import DockerConfigError

if TYPE_CHECKING:  # the record types load when a pod's credentials become them (not for a pull)
    from pullwarden.records import (
        ImagePullCredentials,
        ImagePullSecret,
        ImagePullServiceAccount,
    )

__all__ = [
    "DEFAULT_REGISTRY_HOST",
    "CredentialSource",
    "DockerKeyring",
    "Keyring",
    "SecretLike",
    "SecretSource",
    "ServiceAccountSource",
    "TrackedCredential",
    "UnionKeyring",
    "is_docker_hub_image",
    "keyring_from_secrets",
    "pod_credentials",
    "tracked_to_image_pull_credentials",
    "url_matches",
]

_log = logging.getLogger(__name__)

DEFAULT_REGISTRY_HOST: Final = "index.docker.io"
"""The key whose credentials Docker Hub images fall back to (from ``https://index.docker.io/v1/``)."""


# --------------------------------------------------------------------------------------------
# Credentials and where they came from
# --------------------------------------------------------------------------------------------


@frozen
class SecretSource:
    """The image pull Secret a credential was read from."""

    uid: str
    namespace: str
    name: str


@frozen
class ServiceAccountSource:
    """The ServiceAccount whose bound token obtained a credential (credential provider plugins)."""

    uid: str
    namespace: str
    name: str


CredentialSource: TypeAlias = SecretSource | ServiceAccountSource
"""``None`` stands for node-wide credentials (node config files, plugins without a token)."""


@frozen
class TrackedCredential:
    """A stored credential, where it came from and its credential hash (empty if not tracked).

    ``provider`` names the credential provider plugin that supplied it ("" for pull Secrets and
    node docker config files); it is only reported, never recorded.
    """

    username: str
    password: str
    email: str = ""
    source: CredentialSource | None = None
    credential_hash: str = ""
    provider: str = ""

    def __repr__(self) -> str:
        password = "<redacted>" if self.password else "''"
        return (
            f"TrackedCredential(username={self.username!r}, password={password}, "
            f"source={self.source!r})"
        )


class Keyring(Protocol):
    """Anything that answers which credentials to try for an image."""

    def lookup(self, image: str) -> list[TrackedCredential]: ...


# --------------------------------------------------------------------------------------------
# Go strings
# --------------------------------------------------------------------------------------------


# --------------------------------------------------------------------------------------------
# URL parsing with Go net/url's acceptance rules (only what the keyring needs: host and path)
# --------------------------------------------------------------------------------------------


class _URLError(ValueError):
    pass


class _Escaping(enum.Enum):
    HOST = "host"
    ZONE = "zone"
    OTHER = "other"  # path, userinfo, fragment: only the %XX syntax is checked


_HEXDIGITS: Final = frozenset(b"0123456789abcdefABCDEF")
_ALNUM: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
# ASCII allowed unescaped in a host: unreserved, sub-delims, and ":[]<>\"" (net/url's choice).
_HOST_CHARS: Final = _ALNUM | frozenset(b"-_.~!$&'()*+,;=:[]<>\"")
_USERINFO_CHARS: Final = _ALNUM | frozenset(b"-._:~!$&'()*+,;=%@")
_PERCENT: Final = ord("%")


def _unescape(text: bytes, mode: _Escaping) -> bytes:
    out = bytearray()
    i = 0
    n = len(text)
    while i < n:
        c = text[i]
        if c == _PERCENT:
            if i + 2 >= n or text[i + 1] not in _HEXDIGITS or text[i + 2] not in _HEXDIGITS:
                raise _URLError("invalid URL escape")
            escape = text[i : i + 3]
            value = int(escape[1:], 16)
            if mode is _Escaping.HOST and value < 0x80 and escape != b"%25":
                raise _URLError("invalid URL escape in host")
            if (
                mode is _Escaping.ZONE
                and escape != b"%25"
                and value != 0x20
                and value not in _HOST_CHARS
            ):
                raise _URLError("invalid URL escape in zone")
            out.append(value)
            i += 3
            continue
        if mode is not _Escaping.OTHER and c < 0x80 and c not in _HOST_CHARS:
            raise _URLError("invalid character in host name")
        out.append(c)
        i += 1
    return bytes(out)


def _valid_optional_port(colon_port: bytes) -> bool:
    if not colon_port:
        return True
    return colon_port[:1] == b":" and (len(colon_port) == 1 or colon_port[1:].isdigit())


def _parse_host(host: bytes) -> bytes:
    if host.startswith(b"["):
        close = host.rfind(b"]")
        if close < 0:
            raise _URLError("missing ']' in host")
        if not _valid_optional_port(host[close + 1 :]):
            raise _URLError("invalid port after host")
        zone = host.find(b"%25", 0, close)
        literal = host[1 : zone if zone >= 0 else close]
        try:
            address = ipaddress.ip_address(literal.decode("ascii"))
        except (UnicodeDecodeError, ValueError):
            raise _URLError("invalid IP-literal") from None
        if address.version != 6:
            raise _URLError("invalid IP-literal")
        if zone >= 0:
            return (
                _unescape(host[:zone], _Escaping.HOST)
                + _unescape(host[zone:close], _Escaping.ZONE)
                + _unescape(host[close:], _Escaping.HOST)
            )
    else:
        colon = host.rfind(b":")
        if colon >= 0 and not _valid_optional_port(host[colon:]):
            raise _URLError("invalid port after host")
    return _unescape(host, _Escaping.HOST)


def _parse_authority(authority: bytes) -> bytes:
    at = authority.rfind(b"@")
    host = _parse_host(authority[at + 1 :])
    if at >= 0:
        userinfo = authority[:at]
        if not all(c in _USERINFO_CHARS for c in userinfo):
            raise _URLError("invalid userinfo")
        user, colon, password = userinfo.partition(b":")
        _unescape(user, _Escaping.OTHER)
        if colon:
            _unescape(password, _Escaping.OTHER)
    return host


def _has_control_byte(text: bytes) -> bool:
    return any(c < 0x20 or c == 0x7F for c in text)


def _parse_url(url: bytes) -> tuple[bytes, bytes]:
    """(host, path) of an ``http(s)://`` URL, both percent-decoded; raises :class:`_URLError`."""
    if _has_control_byte(url):
        raise _URLError("invalid control character in URL")
    url, hash_mark, fragment = url.partition(b"#")
    if hash_mark:
        _unescape(fragment, _Escaping.OTHER)
    rest = url.partition(b":")[2]  # drop the scheme; callers guarantee "http(s)://"
    # The query is dropped; a lone trailing "?" is just an empty (forced) query.
    rest = rest.partition(b"?")[0]
    authority = rest[2:]
    slash = authority.find(b"/")
    path = b""
    if slash >= 0:
        authority, path = authority[:slash], authority[slash:]
    host = _parse_authority(authority)
    return host, _unescape(path, _Escaping.OTHER)


def _index_key(location: str) -> str | None:
    """The keyring key for a docker config location, or ``None`` if it does not parse."""
    value = location
    if not value.startswith(("https://", "http://")):
        value = "https://" + value
    try:
        host, path = _parse_url(go_bytes(value))
    except _URLError:
        return None
    if path.startswith((b"/v2/", b"/v1/")):
        path = path[3:]
    if path in (b"", b"/"):
        return go_str(host)
    return go_str(host + path)


def _split_host_port(hostport: bytes) -> tuple[bytes, bytes]:
    """Go's ``net.SplitHostPort``; when that fails the whole value is the host, port empty."""
    whole = (hostport, b"")
    colon = hostport.rfind(b":")
    if colon < 0:
        return whole
    if hostport.startswith(b"["):
        close = hostport.find(b"]")
        if close < 0 or close + 1 != colon:
            return whole
        host = hostport[1:close]
        no_open_from, no_close_from = 1, close + 1
    else:
        host = hostport[:colon]
        if b":" in host:
            return whole
        no_open_from = no_close_from = 0
    if b"[" in hostport[no_open_from:] or b"]" in hostport[no_close_from:]:
        return whole
    return host, hostport[colon + 1 :]


# --------------------------------------------------------------------------------------------
# Host label globs (Go path/filepath.Match on a non-Windows system)
# --------------------------------------------------------------------------------------------


class _Wildcard(enum.Enum):
    ANY_RUN = "*"
    ANY_ONE = "?"


@frozen
class _CharClass:
    negated: bool
    ranges: tuple[tuple[str, str], ...]

    def matches(self, char: str) -> bool:
        return any(lo <= char <= hi for lo, hi in self.ranges) != self.negated


_GlobToken: TypeAlias = str | _Wildcard | _CharClass
_SEPARATOR: Final = "/"


def _is_escaped_byte(char: str) -> bool:
    return "\udc80" <= char <= "\udcff"


def _class_char(pattern: str, pos: int) -> tuple[str, int] | None:
    """One (possibly escaped) character of a ``[...]`` class and the position after it."""
    if pos >= len(pattern) or pattern[pos] in "-]":
        return None
    if pattern[pos] == "\\":
        pos += 1
        if pos >= len(pattern):
            return None
    char = pattern[pos]
    pos += 1
    if _is_escaped_byte(char) or pos >= len(pattern):  # a class must be closed after a char
        return None
    return char, pos


def _compile_glob(pattern: str) -> tuple[_GlobToken, ...] | None:
    """Tokenise a glob; ``None`` if it is malformed (Go then reports ErrBadPattern)."""
    tokens: list[_GlobToken] = []
    pos = 0
    end = len(pattern)
    while pos < end:
        char = pattern[pos]
        pos += 1
        if char == "*":
            if not tokens or tokens[-1] is not _Wildcard.ANY_RUN:
                tokens.append(_Wildcard.ANY_RUN)
        elif char == "?":
            tokens.append(_Wildcard.ANY_ONE)
        elif char == "\\":
            if pos >= end:
                return None
            tokens.append(pattern[pos])
            pos += 1
        elif char == "[":
            negated = pos < end and pattern[pos] == "^"
            if negated:
                pos += 1
            ranges: list[tuple[str, str]] = []
            while not (pos < end and pattern[pos] == "]" and ranges):
                low = _class_char(pattern, pos)
                if low is None:
                    return None
                lo, pos = low
                hi = lo
                if pattern[pos] == "-":
                    high = _class_char(pattern, pos + 1)
                    if high is None:
                        return None
                    hi, pos = high
                ranges.append((lo, hi))
            pos += 1  # the closing "]"
            tokens.append(_CharClass(negated, tuple(ranges)))
        else:
            tokens.append(char)
    return tuple(tokens)


def _glob_match(tokens: tuple[_GlobToken, ...], name: str) -> bool:
    positions = {0}
    for token in tokens:
        if token is _Wildcard.ANY_RUN:
            extended: set[int] = set()
            for start in positions:
                extended.add(start)
                pos = start
                while pos < len(name) and name[pos] != _SEPARATOR:
                    pos += 1
                    extended.add(pos)
            positions = extended
        else:
            positions = {
                pos + 1 for pos in positions if pos < len(name) and _token_matches(token, name[pos])
            }
        if not positions:
            return False
    return len(name) in positions


def _token_matches(token: _GlobToken, char: str) -> bool:
    if token is _Wildcard.ANY_ONE:
        return char != _SEPARATOR
    if isinstance(token, _CharClass):
        return token.matches(char)
    return token == char


# --------------------------------------------------------------------------------------------
# Matching
# --------------------------------------------------------------------------------------------


@frozen
class _Target:
    port: bytes
    labels: tuple[str, ...]
    path: bytes


@frozen
class _KeyMatcher:
    port: bytes
    globs: tuple[tuple[_GlobToken, ...] | None, ...]  # None: malformed label, never matches
    path: bytes

    def matches(self, target: _Target) -> bool:
        if self.port != target.port or len(self.globs) != len(target.labels):
            return False
        if not target.path.startswith(self.path):
            return False
        return all(
            glob is not None and _glob_match(glob, label)
            for glob, label in zip(self.globs, target.labels, strict=True)
        )


def _parse_schemeless(value: str) -> tuple[bytes, tuple[bytes, ...], bytes] | None:
    try:
        host, path = _parse_url(go_bytes("https://" + value))
    except _URLError:
        return None
    hostname, port = _split_host_port(host)
    return port, tuple(hostname.split(b".")), path


def _target(image: str) -> _Target | None:
    parsed = _parse_schemeless(image)
    if parsed is None:
        return None
    port, labels, path = parsed
    return _Target(port, tuple(go_str(label) for label in labels), path)


def _key_matcher(key: str) -> _KeyMatcher | None:
    parsed = _parse_schemeless(key)
    if parsed is None:
        return None
    port, labels, path = parsed
    return _KeyMatcher(port, tuple(_compile_glob(go_str(label)) for label in labels), path)


def url_matches(key: str, image: str) -> bool:
    """Whether keyring key ``key`` (host labels may be globs) applies to repository ``image``.

    Ports must be equal, the hosts must have the same number of ``.``-separated labels, each
    label must match its glob case-sensitively (malformed glob: no match), and the key's path must
    be a plain string prefix of the image's path.  Unparsable input never matches.
    """
    matcher = _key_matcher(key)
    target = _target(image)
    return matcher is not None and target is not None and matcher.matches(target)


def is_docker_hub_image(image: str) -> bool:
    """Whether a repository name refers to Docker Hub (decides the ``index.docker.io`` fallback)."""
    first, slash, _rest = image.partition("/")
    if not first:
        return False
    if not slash:
        return True
    if first in ("docker.io", "index.docker.io"):
        return True
    return "." not in first and ":" not in first


# --------------------------------------------------------------------------------------------
# Keyrings
# --------------------------------------------------------------------------------------------


def _loggable_location(location: str) -> str:
    """A location fit for logs: any ``user:password@`` part is dropped."""
    scheme, sep, rest = location.partition("://")
    if not sep:
        scheme, rest = "", location
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "<redacted>@" + authority.rpartition("@")[2]
    prefix = scheme + sep if sep else ""
    return ascii(prefix + authority + slash + path)


@frozen
class _Snapshot:
    index: tuple[tuple[str, _KeyMatcher | None], ...]  # reverse byte-wise order of the keys
    creds: Mapping[str, tuple[TrackedCredential, ...]]


class DockerKeyring:
    """Credentials indexed by registry location (Go's ``BasicDockerKeyring``).

    Thread-safe: ``add`` swaps in a new immutable snapshot, ``lookup`` reads one snapshot.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = _Snapshot((), {})

    def add(
        self,
        config: DockerConfig,
        source: CredentialSource | None = None,
        *,
        track_hashes: bool = True,
        provider: str = "",
    ) -> None:
        """Index every entry of ``config`` under its location key, attributed to ``source``.

        ``track_hashes`` mirrors the feature gate: when off, credentials carry an empty hash.
        ``provider`` names the plugin the config came from.  Entries whose location does not
        parse as a URL are skipped.
        """
        with self._lock:
            creds = dict(self._snapshot.creds)
            for location, entry in config.items():
                key = _index_key(location)
                if key is None:
                    _log.warning(
                        "ignoring docker config entry %s: location is not a valid URL",
                        _loggable_location(location),
                    )
                    continue
                digest = (
                    credential_hash(entry.username, entry.password, entry.email)
                    if track_hashes
                    else ""
                )
                tracked = TrackedCredential(
                    entry.username, entry.password, entry.email, source, digest, provider
                )
                creds[key] = (*creds.get(key, ()), tracked)
            ordered = sorted(creds, key=go_bytes, reverse=True)
            self._snapshot = _Snapshot(tuple((key, _key_matcher(key)) for key in ordered), creds)

    @property
    def keys(self) -> tuple[str, ...]:
        """The index keys in lookup order (reverse byte-wise sorted, no duplicates)."""
        return tuple(key for key, _matcher in self._snapshot.index)

    def lookup(self, image: str) -> list[TrackedCredential]:
        """Credentials to try for a normalised repository name (no tag or digest), in order."""
        snapshot = self._snapshot
        found: list[TrackedCredential] = []
        target = _target(image)
        if target is not None:
            for key, matcher in snapshot.index:
                if matcher is not None and matcher.matches(target):
                    found.extend(snapshot.creds[key])
        if found:
            return found
        if is_docker_hub_image(image):
            return list(snapshot.creds.get(DEFAULT_REGISTRY_HOST, ()))
        return []

    def __repr__(self) -> str:
        return f"DockerKeyring(keys={self.keys!r})"


class UnionKeyring:
    """Several keyrings consulted in order; results are concatenated (spec §2.5)."""

    def __init__(self, *keyrings: Keyring) -> None:
        self._keyrings = keyrings

    def lookup(self, image: str) -> list[TrackedCredential]:
        return [cred for keyring in self._keyrings for cred in keyring.lookup(image)]

    def __repr__(self) -> str:
        return f"UnionKeyring({', '.join(repr(k) for k in self._keyrings)})"


class SecretLike(Protocol):
    """The parts of a Kubernetes Secret the keyring needs."""

    @property
    def uid(self) -> str: ...
    @property
    def namespace(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def type(self) -> str: ...
    @property
    def data(self) -> Mapping[str, bytes]: ...


def keyring_from_secrets(
    secrets: Iterable[SecretLike], *, track_hashes: bool = True
) -> DockerKeyring | None:
    """One keyring holding every usable pull Secret, or ``None`` if none was usable (spec §2.1).

    Secrets of other types, or without the key their type requires, are skipped.  A Secret whose
    document does not decode fails the whole lookup with
    :class:`~pullwarden.errors.DockerConfigError` (message as the kubelet's; the Secret's
    namespace/name is attached as an exception note).
    """
    keyring = DockerKeyring()
    accepted = False
    for secret in secrets:
        try:
            config = config_from_secret(secret.type, secret.data)
        except DockerConfigError as exc:
            exc.add_note(f"image pull secret {secret.namespace}/{secret.name}")
            raise
        if config is None:
            continue
        keyring.add(
            config,
            SecretSource(secret.uid, secret.namespace, secret.name),
            track_hashes=track_hashes,
        )
        accepted = True
    return keyring if accepted else None


# --------------------------------------------------------------------------------------------
# From credentials to record coordinates
# --------------------------------------------------------------------------------------------


def pod_credentials(
    creds: Iterable[TrackedCredential],
) -> tuple[list[ImagePullSecret], ImagePullServiceAccount | None]:
    """The pod's credentials for verification (spec §2.6).

    Every Secret-sourced credential becomes an :class:`ImagePullSecret` (several entries of one
    Secret give several items with the same coordinates); the first ServiceAccount-sourced one is
    the pod's service account; credentials without a source are ignored.
    """
    from pullwarden.records import ImagePullSecret, ImagePullServiceAccount

    secrets: list[ImagePullSecret] = []
    service_account: ImagePullServiceAccount | None = None
    for cred in creds:
        source = cred.source
        if isinstance(source, SecretSource):
            secrets.append(
                ImagePullSecret(source.uid, source.namespace, source.name, cred.credential_hash)
            )
        elif isinstance(source, ServiceAccountSource) and service_account is None:
            service_account = ImagePullServiceAccount(source.uid, source.namespace, source.name)
    return secrets, service_account


def tracked_to_image_pull_credentials(cred: TrackedCredential | None) -> ImagePullCredentials:
    """What a successful pull with ``cred`` (``None``: anonymous) records (spec §2.5)."""
    from pullwarden.records import ImagePullCredentials, ImagePullSecret, ImagePullServiceAccount

    source = cred.source if cred is not None else None
    if cred is not None and isinstance(source, SecretSource):
        return ImagePullCredentials(
            kubernetes_secrets=(
                ImagePullSecret(source.uid, source.namespace, source.name, cred.credential_hash),
            )
        )
    if isinstance(source, ServiceAccountSource):
        return ImagePullCredentials(
            kubernetes_service_accounts=(
                ImagePullServiceAccount(source.uid, source.namespace, source.name),
            )
        )
    return ImagePullCredentials(node_pods_accessible=True)
