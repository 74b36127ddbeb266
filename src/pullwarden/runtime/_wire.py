"""The real network behind the client's httpx seam: one transport for every request.

:class:`RegistryTransport` is the ``httpx.BaseTransport`` a :class:`~.registry.RegistryClient`
uses unless a test injects another.  For each request it takes the TLS context from
:class:`._policy.TLSContexts` (a host's CA file, else the default) and

* for a GET marked :data:`._fastblob.LEAN` (blob downloads), first tries the lean reader of
  :mod:`._fastblob` on a fresh connection with that context;
* otherwise, or when the lean reader hands the request back, sends it through the
  :class:`._network.GuardedTransport` pool for that context.

So a test that injects a transport replaces exactly this module: every rule about what is sent
where (:mod:`._policy`, applied by :class:`._transport.Session`) and the blob writer run the
same either way.
"""

from __future__ import annotations

import httpx

from pullwarden.runtime._fastblob import LEAN, exchange
from pullwarden.runtime._network import GuardedTransport
from pullwarden.runtime._policy import TLSContexts

__all__ = ["RegistryTransport"]


class RegistryTransport(httpx.BaseTransport):
    """Connection pools per TLS context, and the lean blob reader (``lean`` False: pools only)."""

    def __init__(self, tls: TLSContexts, *, lean: bool = True) -> None:
        self._tls = tls
        self._lean = lean
        self._pools = {id(context): GuardedTransport(context) for context in tls.all()}

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        context = self._tls.for_url(request.url)
        if self._lean and request.extensions.get(LEAN):
            answer = exchange(request, context)
            if answer is not None:
                return answer
        return self._pools[id(context)].handle_request(request)

    def close(self) -> None:
        for pool in self._pools.values():
            pool.close()
