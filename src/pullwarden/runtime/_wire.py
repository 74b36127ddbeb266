"""The real network behind the client's transport seam: one transport for every request.

:class:`RegistryTransport` is the :class:`~._messages.Transport` a
:class:`~.registry.RegistryClient` uses unless a test injects another. For each request it takes
the TLS context from :class:`._policy.TLSContexts` (a host's CA file, else the default) and sends
it with :func:`._http1.exchange`, on a kept-alive connection of this transport's
:class:`._http1.IdleConnections` when there is one for the request's origin, TLS context and
credentials, else on a new one.

The TLS contexts are made when the first https request goes out — a client that only talks to
plain-HTTP registries, or to none, never builds one — except when hosts have CA files: those
are loaded (and checked) at once, so a bad one fails the client's construction.

So a test that injects a transport replaces exactly this module: every rule about what is sent
where (:mod:`._policy`, applied by :class:`._transport.Session`) and the blob writer run the
same either way.  Closing the transport closes the idle connections.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from pullwarden.runtime._http1 import MAX_IDLE_PER_KEY, IdleConnections, exchange
from pullwarden.runtime._messages import Request, Response
from pullwarden.runtime._policy import HostPolicy, TLSContexts

if TYPE_CHECKING:
    import ssl

__all__ = ["RegistryTransport"]


class RegistryTransport:
    """HTTP/1.1 with kept-alive connections and the TLS context of each host.

    ``default_tls`` makes the context for https hosts without a CA file (when first needed);
    ``idle_per_origin`` bounds the idle connections kept per origin and credential.
    """

    def __init__(
        self,
        hosts: HostPolicy,
        default_tls: Callable[[], ssl.SSLContext],
        *,
        idle_per_origin: int = MAX_IDLE_PER_KEY,
    ) -> None:
        self._hosts = hosts
        self._default_tls = default_tls
        self._lock = threading.Lock()  # guards _tls (blob workers share the client)
        self._tls: TLSContexts | None = None
        self.idle = IdleConnections(per_key=idle_per_origin)
        if hosts.ca_files():
            self._contexts()

    def _contexts(self) -> TLSContexts:
        with self._lock:
            if self._tls is None:
                self._tls = TLSContexts(self._hosts, self._default_tls())
            return self._tls

    def handle_request(self, request: Request) -> Response:
        https = request.url.scheme == "https"
        context = self._contexts().for_url(request.url) if https else None
        return exchange(request, context, self.idle)

    def close(self) -> None:
        self.idle.close()
