"""The kubelet's credential hash (spec §3).

The kubelet hashes a stored credential by marshalling it with Go's ``encoding/json`` as a docker
auth config (members ``username``, ``password``, ``auth``, ``email``, ``serveraddress``,
``identitytoken``, ``registrytoken``, all omitted when empty) and taking the SHA-256 of the bytes.
Only username, password and email are ever set, so the canonical form is
``{"username":…,"password":…,"email":…}`` with empty members left out, compact, no newline.

Strings may be ``str`` or ``bytes``.  A ``str`` may carry arbitrary bytes through the
``surrogateescape`` error handler (that is how a base64-decoded ``auth`` value reaches us); those
bytes are hashed exactly as Go would see them, invalid UTF-8 included.
"""

from __future__ import annotations

import hashlib

from pullwarden._gojson import quote

__all__ = ["canonical_auth_json", "credential_hash"]

# Members in the order Go's auth-config struct declares them; only these three can be non-empty.
_MEMBERS = (b"username", b"password", b"email")


def canonical_auth_json(
    username: str | bytes, password: str | bytes, email: str | bytes = ""
) -> bytes:
    """The exact bytes the kubelet hashes for a credential (compact Go JSON, empties omitted)."""
    parts = [
        b'"' + name + b'":' + quote(value)
        for name, value in zip(_MEMBERS, (username, password, email), strict=True)
        if len(value) > 0
    ]
    return b"{" + b",".join(parts) + b"}"


def credential_hash(username: str | bytes, password: str | bytes, email: str | bytes = "") -> str:
    """SHA-256 (lowercase hex) of :func:`canonical_auth_json` — the record's ``credentialHash``."""
    return hashlib.sha256(canonical_auth_json(username, password, email)).hexdigest()
