"""The real network behind the client's httpx seam: one transport for every request.

:class:`RegistryTransport` is the ``httpx.BaseTransport`` a :class:`~.registry.RegistryClient`
uses unless a test injects another.  For each request it takes the TLS context from
:class:`._policy.TLSContexts` (a host's CA file, else the default) and

* for a GET marked :data:`._fastblob.LEAN` (blob downloads), first tries the lean reader of
  :mod:`._fastblob`, on a kept-alive connection of this transport's
  :class:`._fastblob.IdleConnections` when there is one for the request's origin, TLS context
  and credentials, else on a new one;
* otherwise, or when the lean reader hands the request back, sends it through the
  :class:`._network.GuardedTransport` pool for that context (plain HTTP has a pool of its own).

The TLS contexts are made when the first https request goes out — a client that only talks to
plain-HTTP registries, or to none, never builds one — except when hosts have CA files: those
are loaded (and checked) at once, so a bad one fails the client's construction.

So a test that injects a transport replaces exactly this module: every rule about what is sent
where (:mod:`._policy`, applied by :class:`._transport.Session`) and the blob writer run the
same either way.  Closing the transport closes every pool, the idle lean connections included.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Callable

import httpx

from pullwarden.runtime._fastblob import LEAN, MAX_IDLE_PER_KEY, IdleConnections, exchange
from pullwarden.runtime._network import GuardedTransport
from pullwarden.runtime._policy import HostPolicy, TLSContexts

__all__ = ["RegistryTransport"]


class RegistryTransport(httpx.BaseTransport):
    """Connection pools per TLS context, and the lean blob reader (``lean`` False: pools only).

    ``default_tls`` makes the context for https hosts without a CA file (when first needed);
    ``idle_per_origin`` bounds the lean reader's idle connections per origin and credential.
    """

    def __init__(
        self,
        hosts: HostPolicy,
        default_tls: Callable[[], ssl.SSLContext],
        *,
        lean: bool = True,
        idle_per_origin: int = MAX_IDLE_PER_KEY,
    ) -> None:
        self._hosts = hosts
        self._default_tls = default_tls
        self._lean = lean
        self._lock = threading.Lock()  # guards _tls and _pools (blob workers share the client)
        self._tls: TLSContexts | None = None
        self._pools: dict[int, GuardedTransport] = {}
        self._plain = GuardedTransport(None)
        self.idle = IdleConnections(per_key=idle_per_origin)
        if hosts.ca_files():
            self._contexts()

    def _contexts(self) -> TLSContexts:
        with self._lock:
            if self._tls is None:
                self._tls = TLSContexts(self._hosts, self._default_tls())
            return self._tls

    def _pool(self, context: ssl.SSLContext) -> GuardedTransport:
        with self._lock:
            pool = self._pools.get(id(context))
            if pool is None:
                pool = self._pools[id(context)] = GuardedTransport(context)
            return pool

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        https = request.url.scheme == "https"
        context = self._contexts().for_url(request.url) if https else None
        if self._lean and request.extensions.get(LEAN):
            answer = exchange(request, context, self.idle)
            if answer is not None:
                return answer
        pool = self._pool(context) if context is not None else self._plain
        return pool.handle_request(request)

    def close(self) -> None:
        self.idle.close()
        self._plain.close()
        with self._lock:
            pools = list(self._pools.values())
        for pool in pools:
            pool.close()
