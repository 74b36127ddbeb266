"""Fault knobs for the development registry: what a misbehaving registry does to a client.

A :class:`Faults` object is shared between the test (which turns knobs while the server runs)
and the server's request threads (which read them, and consume the counted ones).  Every
assignment is validated and done under a lock, and the counted knobs are consumed with
:meth:`Faults.take_5xx` / :meth:`Faults.take_drop`, so two concurrent requests never use up the
same failure.
"""

from __future__ import annotations

import ipaddress
import math
import threading
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

__all__ = ["Faults", "is_loopback_host"]


def is_loopback_host(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (``127.0.0.0/8``, ``::1``, brackets ok)."""
    host = host.strip().lower().removeprefix("[").removesuffix("]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"Faults.{name} must be a non-negative integer, not {value!r}")


def _check_redirect(value: object) -> None:
    if value is None:
        return
    if not isinstance(value, str):
        raise ValueError(f"Faults.redirect_blobs_to must be a URL string or None, not {value!r}")
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(
            f"Faults.redirect_blobs_to must look like http://127.0.0.1:PORT, not {value!r}"
        )
    if not is_loopback_host(parts.hostname):
        raise ValueError(
            f"Faults.redirect_blobs_to must name a loopback host (got {parts.hostname!r})"
        )
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError("Faults.redirect_blobs_to is an origin only (scheme://host:port)")


_CHECKS: dict[str, Any] = {
    "fail_5xx": lambda v: _check_count("fail_5xx", v),
    "drop_connection": lambda v: _check_count("drop_connection", v),
    "redirect_blobs_to": _check_redirect,
}


@dataclass
class Faults:
    """Ways to make the registry misbehave; change them at any time, from any thread.

    ``latency``: seconds added before every request is answered.
    ``fail_5xx``: the next N requests (any kind, the token endpoint included) get ``503``.
    ``drop_connection``: the next N blob GETs send the headers and half the body, then close.
    ``wrong_digest``: blob GETs serve bytes that differ from the digest (same length).
    ``oversized_manifest``: manifest answers are padded with whitespace past 4 MiB.
    ``redirect_blobs_to``: blob GETs answer ``307`` to the same path on this loopback origin
    (``http://127.0.0.1:PORT``), which another registry must serve.
    ``available``: False answers ``503`` to everything.
    """

    latency: float = 0.0
    fail_5xx: int = 0
    drop_connection: int = 0
    wrong_digest: bool = False
    oversized_manifest: bool = False
    redirect_blobs_to: str | None = None
    available: bool = True
    _lock: threading.Lock = field(
        default_factory=threading.Lock, init=False, repr=False, compare=False
    )

    def __setattr__(self, name: str, value: Any) -> None:
        if name == "latency" and (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"Faults.latency must be a non-negative number, not {value!r}")
        if name in ("wrong_digest", "oversized_manifest", "available") and not isinstance(
            value, bool
        ):
            raise ValueError(f"Faults.{name} must be True or False, not {value!r}")
        check = _CHECKS.get(name)
        if check is not None:
            check(value)
        lock: threading.Lock | None = self.__dict__.get("_lock")
        if lock is None:
            object.__setattr__(self, name, value)
            return
        with lock:
            object.__setattr__(self, name, value)

    def take_5xx(self) -> bool:
        """Consume one of the pending ``fail_5xx`` failures; False when none is left."""
        with self._lock:
            if self.fail_5xx <= 0:
                return False
            object.__setattr__(self, "fail_5xx", self.fail_5xx - 1)
            return True

    def take_drop(self) -> bool:
        """Consume one of the pending ``drop_connection`` failures; False when none is left."""
        with self._lock:
            if self.drop_connection <= 0:
                return False
            object.__setattr__(self, "drop_connection", self.drop_connection - 1)
            return True

    def reset(self) -> None:
        """Back to a well-behaved registry."""
        for name, value in (
            ("latency", 0.0),
            ("fail_5xx", 0),
            ("drop_connection", 0),
            ("wrong_digest", False),
            ("oversized_manifest", False),
            ("redirect_blobs_to", None),
            ("available", True),
        ):
            setattr(self, name, value)
