"""Container image references: the distribution reference grammar and the kubelet's helpers.

Grammar (spec §1.2), as accepted by ``github.com/distribution/reference``::

    reference   := name [ ":" tag ] [ "@" digest ]
    name        := [ domain "/" ] path
    domain      := host [ ":" port ]            host: DNS-ish labels or a bracketed IPv6 literal
    path        := component ( "/" component )*
    component   := [a-z0-9]+ ( separator [a-z0-9]+ )*   separator: "." | "_" | "__" | "-"+
    tag         := [A-Za-z0-9_][A-Za-z0-9_.-]{0,127}
    digest      := algorithm ":" hex            (sha256/sha384/sha512 checked for length)

As in distribution/reference v0.6.0 (the kubelet's since v1.33), at most
:data:`NAME_TOTAL_LENGTH_MAX` (255) characters of the *path* are allowed; the domain, as the
grammar splits it off, does not count.  Whether a name that fails the grammar is "not lowercase"
is decided with Go's ``strings.ToLower`` (:func:`_go_lower`), not Python's ``str.lower``.

Two parsers are offered.  :func:`parse` keeps the name exactly as written (``nginx`` stays
``nginx``); :func:`parse_normalized` applies the Docker conventions (``docker.io`` default
registry, ``library/`` namespace for official images).  The kubelet helpers built on top of
them are :func:`parse_image_name`, :func:`apply_default_tag`, :func:`default_pull_policy`,
:func:`trim_tag_digest` (v1.36+ credentialMapping key) and :func:`trim_tag_digest_legacy`
(the ≤ v1.35 key).  Every failure raises :class:`~pullwarden.errors.InvalidReferenceError`
whose message follows the upstream wording.
"""

from __future__ import annotations

import functools
import re

from pullwarden._gofmt import go_quote
from pullwarden._values import frozen
from pullwarden.errors import InvalidReferenceError

__all__ = [
    "DEFAULT_DOMAIN",
    "DEFAULT_TAG",
    "LEGACY_DEFAULT_DOMAIN",
    "NAME_TOTAL_LENGTH_MAX",
    "OFFICIAL_REPO_PREFIX",
    "Reference",
    "apply_default_tag",
    "default_pull_policy",
    "familiar_name",
    "parse",
    "parse_image_name",
    "parse_normalized",
    "trim_tag_digest",
    "trim_tag_digest_legacy",
]

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
NAME_TOTAL_LENGTH_MAX = 255
_LOCALHOST = "localhost"

# --- grammar -------------------------------------------------------------------------------
# Character classes are spelled out (no \w) so that only ASCII is accepted, as in Go's RE2.
_ALNUM = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|-+)"
_COMPONENT = rf"{_ALNUM}(?:{_SEPARATOR}{_ALNUM})*"
_PATH = rf"{_COMPONENT}(?:/{_COMPONENT})*"
_LABEL = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_HOST = rf"(?:{_LABEL}(?:\.{_LABEL})*|\[[a-fA-F0-9:]+\])"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH}"
_TAG = r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(rf"({_NAME})(?::({_TAG}))?(?:@({_DIGEST}))?")
_NAME_SPLIT_RE = re.compile(rf"(?:({_DOMAIN})/)?({_PATH})")
_DOMAIN_RE = re.compile(_DOMAIN)
_IDENTIFIER_RE = re.compile(r"[a-f0-9]{64}")

# Digest algorithms the kubelet links in (crypto/sha256 and crypto/sha512), with hex lengths.
_DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX_RE = re.compile(r"[a-f0-9]+")
# Shape a digest of an unknown algorithm must have to be called "unsupported" rather than bad.
_ANY_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")

_ERR_FORMAT = "invalid reference format"
_ERR_EMPTY = "repository name must have at least one component"
_ERR_UPPERCASE = "repository name must be lowercase"
_ERR_TOO_LONG = f"repository name must not be more than {NAME_TOTAL_LENGTH_MAX} characters"
_ERR_DIGEST_FORMAT = "invalid checksum digest format"
_ERR_DIGEST_LENGTH = "invalid checksum digest length"
_ERR_DIGEST_UNSUPPORTED = "unsupported digest algorithm"


@frozen
class Reference:
    """A parsed image reference; empty strings stand for absent parts."""

    domain: str
    path: str
    tag: str = ""
    digest: str = ""

    @property
    def name(self) -> str:
        """The repository name: ``domain/path``, or only ``path`` without a domain."""
        if self.domain:
            return f"{self.domain}/{self.path}"
        return self.path

    def __str__(self) -> str:
        text = self.name
        if self.tag:
            text += ":" + self.tag
        if self.digest:
            text += "@" + self.digest
        return text


# --- low-level parsing -----------------------------------------------------------------------


def _check_digest(digest: str) -> None:
    """Validate ``algorithm:hex`` the way the OCI go-digest package does."""
    sep = digest.find(":")
    if sep <= 0 or sep + 1 == len(digest):
        raise InvalidReferenceError(_ERR_DIGEST_FORMAT)
    algorithm, encoded = digest[:sep], digest[sep + 1 :]
    size = _DIGEST_HEX_LENGTHS.get(algorithm)
    if size is None:
        if _ANY_DIGEST_RE.fullmatch(digest) is None:
            raise InvalidReferenceError(_ERR_DIGEST_FORMAT)
        raise InvalidReferenceError(_ERR_DIGEST_UNSUPPORTED)
    if len(encoded) != size:
        raise InvalidReferenceError(_ERR_DIGEST_LENGTH)
    if _LOWER_HEX_RE.fullmatch(encoded) is None:
        raise InvalidReferenceError(_ERR_DIGEST_FORMAT)


def _go_lower(s: str) -> str:
    """Go's ``strings.ToLower``: each code point by its simple (one-to-one) lowercase mapping.

    Python's ``str.lower`` applies full case mapping instead.  A scan over every code point finds
    one whose lowercase is longer than one code point: U+0130 (İ), which Go lowers to ``i`` and
    Python to ``i`` + U+0307, so Go finds ``İmg`` merely "not lowercase" where Python's mapping
    would make it an invalid name.  (Python's final-sigma rule is the other difference; lowering
    code point by code point, as Go does, removes it too.)
    """
    if s.isascii():
        return s.lower()
    return "".join("i" if c == "\u0130" else c.lower() for c in s)


def _path_too_long(name: str) -> bool:
    """Whether the path of a grammar-valid name, split as the grammar splits it, is too long."""
    if len(name) <= NAME_TOTAL_LENGTH_MAX:  # the path is part of the name: nothing to split
        return False
    m = _NAME_SPLIT_RE.fullmatch(name)
    return m is not None and len(m.group(2)) > NAME_TOTAL_LENGTH_MAX


def _match(s: str) -> tuple[str, str, str]:
    """Check ``s`` against the grammar and return its (name, tag, digest) parts."""
    m = _REFERENCE_RE.fullmatch(s)
    if m is None:
        if not s:
            raise InvalidReferenceError(_ERR_EMPTY)
        if _REFERENCE_RE.fullmatch(_go_lower(s)) is not None:
            raise InvalidReferenceError(_ERR_UPPERCASE)
        raise InvalidReferenceError(_ERR_FORMAT)
    name, tag, digest = m.group(1), m.group(2) or "", m.group(3) or ""
    if _path_too_long(name):
        raise InvalidReferenceError(_ERR_TOO_LONG)
    if digest:
        _check_digest(digest)
    return name, tag, digest


def _looks_like_domain(component: str) -> bool:
    """Docker's rule for whether the first path element names a registry."""
    return (
        "." in component
        or ":" in component
        or component == _LOCALHOST
        or _go_lower(component) != component
    )


def _parse_grammar_split(s: str) -> Reference:
    """Parse and split the name the way the grammar's regular expression does."""
    name, tag, digest = _match(s)
    m = _NAME_SPLIT_RE.fullmatch(name)
    if m is None:  # pragma: no cover - _match already proved the name matches
        raise InvalidReferenceError(_ERR_FORMAT)
    return Reference(domain=m.group(1) or "", path=m.group(2), tag=tag, digest=digest)


# --- public parsers --------------------------------------------------------------------------


def parse(s: str) -> Reference:
    """Parse ``s`` without normalising it: the name stays exactly as written.

    The first path element is taken as the registry domain only when it looks like one
    (contains ``.`` or ``:``, is ``localhost``, or has an uppercase letter) and is a valid
    host; otherwise ``domain`` is empty and the whole name is the path.
    """
    name, tag, digest = _match(s)
    first, slash, rest = name.partition("/")
    if slash and _looks_like_domain(first) and _DOMAIN_RE.fullmatch(first) is not None:
        return Reference(domain=first, path=rest, tag=tag, digest=digest)
    return Reference(domain="", path=name, tag=tag, digest=digest)


def _split_docker_domain(s: str) -> tuple[str, str]:
    """Split ``s`` into (registry, remainder), filling in Docker Hub defaults."""
    first, slash, rest = s.partition("/")
    if not slash:
        return DEFAULT_DOMAIN, OFFICIAL_REPO_PREFIX + s
    if first == LEGACY_DEFAULT_DOMAIN:
        domain, remainder = DEFAULT_DOMAIN, rest
    elif _looks_like_domain(first):
        domain, remainder = first, rest
    else:
        domain, remainder = DEFAULT_DOMAIN, s
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_normalized(s: str) -> Reference:
    """Parse ``s`` with the Docker conventions (like ``ParseNormalizedNamed``).

    ``nginx`` becomes ``docker.io/library/nginx``, ``user/repo`` becomes
    ``docker.io/user/repo`` and ``index.docker.io`` is rewritten to ``docker.io``.  A bare
    64-character hex string is refused because it would be mistaken for an image ID.
    """
    if _IDENTIFIER_RE.fullmatch(s) is not None:
        raise InvalidReferenceError(
            f"invalid repository name ({s}), cannot specify 64-byte hexadecimal strings"
        )
    domain, remainder = _split_docker_domain(s)
    remote = remainder.partition(":")[0]
    if _go_lower(remote) != remote:
        raise InvalidReferenceError(
            f"invalid reference format: repository name ({remote}) must be lowercase"
        )
    return _parse_grammar_split(f"{domain}/{remainder}")


def familiar_name(s: str) -> str:
    """Return the short form Docker shows for ``s`` (tag and digest dropped).

    ``docker.io/library/nginx:1.2`` → ``nginx``; ``docker.io/user/repo`` → ``user/repo``;
    names on other registries are returned in full.
    """
    ref = parse_normalized(s)
    if ref.domain != DEFAULT_DOMAIN:
        return ref.name
    path = ref.path
    if path.startswith(OFFICIAL_REPO_PREFIX):
        short = path[len(OFFICIAL_REPO_PREFIX) :]
        if "/" not in short:
            return short
    return path


# --- kubelet helpers -------------------------------------------------------------------------


def parse_image_name(image: str) -> tuple[str, str, str]:
    """Return (normalised repository, tag, digest) for a pod image (``ParseImageName``).

    The tag defaults to ``latest`` only when the image carries neither a tag nor a digest.
    """
    try:
        ref = parse_normalized(image)
    except InvalidReferenceError as err:
        raise InvalidReferenceError(f"couldn't parse image name {go_quote(image)}: {err}") from err
    tag = ref.tag
    if not tag and not ref.digest:
        tag = DEFAULT_TAG
    return ref.name, tag, ref.digest


def apply_default_tag(image: str) -> str:
    """Append ``:<tag>`` to the raw image when it has no digest and does not end in it.

    The result is still the name as the user wrote it: the runtime receives it unnormalised.
    """
    _, tag, digest = parse_image_name(image)
    if not digest and tag and not image.endswith(":" + tag):
        return f"{image}:{tag}"
    return image


def default_pull_policy(image: str) -> str:
    """The API server's default ``imagePullPolicy`` for ``image``: Always for ``latest``."""
    try:
        _, tag, _ = parse_image_name(image)
    except InvalidReferenceError:
        tag = ""
    return "Always" if tag == DEFAULT_TAG else "IfNotPresent"


# Every verification trims; parsing costs ~1.4 µs, a hit ~0.1 µs.  The memo holds as many names
# as the record cache holds records (2**18, ≈50 MB when full, which only a node checking that
# many distinct images fills): at 65,536 it missed every time at 200,000 records checked in
# turn, and 4,096 made checks 50% slower at 100,000.
@functools.lru_cache(maxsize=1 << 18)
def trim_tag_digest(image: str) -> str:
    """Strip tag and digest from ``image`` without normalising it (kubelet ≥ v1.36).

    This is the credentialMapping key and the string compared with the allowlist:
    ``nginx:1.2`` → ``nginx``, ``registry.io/org/app:v1@sha256:…`` → ``registry.io/org/app``.
    """
    name, _, _ = _match(image)
    return name


def trim_tag_digest_legacy(image: str) -> str:
    """Strip tag and digest the ≤ v1.35 way: the docker-normalised repository name."""
    return parse_image_name(image)[0]
