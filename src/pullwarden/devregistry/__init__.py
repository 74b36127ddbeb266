"""An embedded OCI distribution registry for the demo, experiments and adversarial tests.

:class:`DevRegistry` serves the distribution pull API, and the push API for seeding, on a
loopback port, from memory or a directory, with Basic or Bearer-token authentication,
per-repository :class:`AccessRule` objects and :class:`Faults` knobs (latency, 5xx answers,
dropped connections, wrong digests, oversized manifests, redirects to another origin).
Every request is logged as a :class:`RequestRecord`.

Nothing in the pull stack imports this package; real-registry tests use the real
``docker-registry`` instead.
"""

from pullwarden.devregistry.auth import SERVICE, AccessRule
from pullwarden.devregistry.faults import Faults
from pullwarden.devregistry.server import DevRegistry, RequestRecord

__all__ = ["SERVICE", "AccessRule", "DevRegistry", "Faults", "RequestRecord"]
