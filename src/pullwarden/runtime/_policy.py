"""Where a request may go and what it may carry: one rule for every path to a registry.

Every request to a registry — manifests, tokens, pushes and blobs — is sent by
:class:`._transport.Session`, which asks this module each time.  Nothing else decides these things.

* **Origin.** ``(scheme, host, port)``, scheme and host lower-cased and the default port filled
  in (:func:`origin_of`).  Two URLs are "the same place" exactly when their origins are equal.
* **Credentials go only to their origin** (design §5).  The ``Authorization`` an operation
  earned is attached to a request only when the request's origin is the registry's own
  (:func:`sends_credentials`); a redirect elsewhere is followed without it, and a redirect
  target that asks for credentials is refused.  The token realm a registry names in a Bearer
  challenge may receive the caller's credentials only when :func:`realm_gets_credentials`
  says so (the rule is spelled out there).
* **Redirects.** ``GET`` and ``HEAD`` follow ``301``/``302``/``303``/``307``/``308`` answers
  that carry a ``Location`` (:func:`redirect_location`), at most :data:`MAX_REDIRECTS` times
  per request.  The transport never follows a redirect on its own, so the credential rule
  above is applied at every hop.
* **TLS.** One context per https origin (:class:`TLSContexts`): the CA file configured for the
  host (:class:`HostOptions`), else the default.  The real network's transport
  (:mod:`._wire`) takes its contexts from here for every connection, so each CA file is
  loaded once.
* **Hosts.** :class:`HostPolicy` says, for a registry name, which API host to talk to and
  whether over plain HTTP (:meth:`HostPolicy.base_url`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from pullwarden._values import frozen
from pullwarden.reference import DEFAULT_DOMAIN
from pullwarden.runtime._auth import is_loopback_host
from pullwarden.runtime._messages import URL, Response

if TYPE_CHECKING:
    import ssl  # loaded only when a TLS context is made

__all__ = [
    "DOCKER_HUB_HOST",
    "MAX_REDIRECTS",
    "HostOptions",
    "HostPolicy",
    "Origin",
    "TLSContexts",
    "load_ca_file",
    "origin_of",
    "realm_gets_credentials",
    "redirect_location",
    "sends_credentials",
]

DOCKER_HUB_HOST = "registry-1.docker.io"
MAX_REDIRECTS = 10
_REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
_FOLLOWED_METHODS = frozenset({"GET", "HEAD"})

Origin = tuple[str, str, int]


def origin_of(url: URL) -> Origin:
    """``(scheme, host, port)`` of ``url``: lower-cased (as a URL keeps them), with the
    scheme's default port."""
    return url.scheme, url.host, url.effective_port


def sends_credentials(url: URL, origin: Origin) -> bool:
    """True when a request to ``url`` may carry the credentials that belong to ``origin``."""
    return origin_of(url) == origin


def realm_gets_credentials(realm: URL, base: URL, insecure_configured: bool) -> bool:
    """True when the token realm ``realm`` of the registry at ``base`` may see credentials.

    The caller's credentials belong to one registry; a realm receives them only when

    * the realm is ``https``, or
    * the realm host is a loopback address (``localhost``, ``127.0.0.0/8``, ``::1``), or
    * the realm host is the registry host itself and the operator configured that registry
      as insecure (the credentials already travel to that host in clear text).

    Otherwise the token is requested anonymously, and the refusal that follows says so.
    """
    if realm.scheme == "https" or is_loopback_host(realm.host):
        return True
    return insecure_configured and realm.host.lower() == base.host.lower()


def redirect_location(method: str, response: Response) -> str | None:
    """The ``Location`` of a redirect answer to ``method`` that is to be followed, else None."""
    if response.status_code not in _REDIRECT_STATUSES or method not in _FOLLOWED_METHODS:
        return None
    return response.headers.get("Location") or None


@frozen
class HostOptions:
    """How to reach one registry host.

    ``insecure``: True means plain HTTP; False means HTTPS always; None (the default) means
    plain HTTP only for loopback hosts (``localhost``, ``127.0.0.0/8``, ``::1``) that have no
    ``ca_file``, as containerd does.  ``ca_file`` adds a CA bundle for this host's TLS.
    """

    insecure: bool | None = None
    ca_file: Path | None = None


def load_ca_file(ca_file: Path) -> ssl.SSLContext:
    """A TLS client context trusting the system CAs and the PEM certificates in ``ca_file``.

    Raises ValueError, with a one-line message naming the file, when it cannot be read or
    holds no certificate (empty, garbage, a private key only, a damaged PEM block).
    """
    try:
        pem = ca_file.read_bytes()
    except OSError as err:
        raise ValueError(f"cannot read CA file {ca_file}: {err.strerror or err}") from None
    import ssl

    text = pem.decode("ascii", errors="replace")
    if b"-----BEGIN CERTIFICATE-----" not in pem:
        raise ValueError(f"CA file {ca_file} holds no certificate")
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cadata=text)
    except ssl.SSLError as err:
        reason = err.reason or "unreadable"
        raise ValueError(f"CA file {ca_file} holds a damaged certificate ({reason})") from None
    if probe.cert_store_stats()["x509"] == 0:
        raise ValueError(f"CA file {ca_file} holds no certificate")
    context = ssl.create_default_context()
    context.load_verify_locations(cadata=text)
    return context


class HostPolicy:
    """What the client knows about each registry host (``hosts`` as in :class:`RegistryClient`).

    Keys are registries as image names spell them (``127.0.0.1:5000``, ``docker.io``); Docker
    Hub's name maps to its API host, and options may be keyed by either.
    """

    def __init__(self, hosts: Mapping[str, HostOptions] | None = None) -> None:
        self._hosts = dict(hosts or {})

    @staticmethod
    def api_host(registry: str) -> str:
        """The host (and port) the registry's API is served on."""
        return DOCKER_HUB_HOST if registry == DEFAULT_DOMAIN else registry

    def options(self, registry: str) -> HostOptions:
        return (
            self._hosts.get(registry) or self._hosts.get(self.api_host(registry)) or HostOptions()
        )

    def insecure_configured(self, registry: str) -> bool:
        """True when the operator configured ``registry`` as plain HTTP."""
        return self.options(registry).insecure is True

    def base_url(self, registry: str) -> URL:
        """``scheme://api-host[:port]`` of ``registry``."""
        return URL(f"{self._scheme(registry)}://{self.api_host(registry)}")

    def _scheme(self, registry: str) -> str:
        options = self.options(registry)
        if options.insecure is not None:
            return "http" if options.insecure else "https"
        if options.ca_file is None and is_loopback_host(self.api_host(registry)):
            return "http"
        return "https"

    def ca_files(self) -> list[tuple[str, Path]]:
        """``(api host, CA file)`` of every host configured with a CA file."""
        return [
            (self.api_host(host), options.ca_file)
            for host, options in self._hosts.items()
            if options.ca_file is not None
        ]


class TLSContexts:
    """The TLS context for each https URL: its host's CA file's, else ``default``.

    A CA file configured for ``host:port`` applies to that port only; one configured for a
    bare ``host`` (or ``host:443``) applies to every port of the host, and the port-specific
    one wins where both exist.  Every CA file is loaded here, once (ValueError when one is
    unusable, see :func:`load_ca_file`).
    """

    def __init__(self, policy: HostPolicy, default: ssl.SSLContext) -> None:
        self.default = default
        entries: list[tuple[str, int | None, ssl.SSLContext]] = []
        for api_host, ca_file in policy.ca_files():
            url = URL(f"https://{api_host}")
            entries.append((url.host, url.port, load_ca_file(ca_file)))
        entries.sort(key=lambda entry: entry[1] is None)  # a port-specific entry first
        self._entries = tuple(entries)

    def all(self) -> list[ssl.SSLContext]:
        """Every distinct context, the default first."""
        return [self.default, *(context for _, _, context in self._entries)]

    def for_url(self, url: URL) -> ssl.SSLContext:
        if url.scheme == "https":
            host = url.host.lower()
            for entry_host, port, context in self._entries:
                if entry_host == host and (port is None or port == url.port):
                    return context
        return self.default
