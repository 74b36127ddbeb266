#!/usr/bin/env python3
"""Test plugin: records what it was given and answers credentials derived from it.

Each run appends one JSON line ``{"argv": [...], "env": {...}, "request": {...}}`` to the file
named by ``ECHO_FILE``.  The answer is user ``echo`` for the image's registry, with password
``pw-<first 12 hex digits of sha256(token)>`` (``pw-node`` without a token), or the token
itself with ``ECHO_PASSWORD=token``; ``CACHE_KEY_TYPE`` (default ``Image``) and
``CACHE_DURATION`` (default: none in the response) set the caching fields.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys


def main() -> int:
    request = json.load(sys.stdin)
    with open(os.environ["ECHO_FILE"], "a", encoding="utf-8") as f:
        record = {"argv": sys.argv[1:], "env": dict(os.environ), "request": request}
        f.write(json.dumps(record) + "\n")
    token = request.get("serviceAccountToken", "")
    if os.environ.get("ECHO_PASSWORD") == "token":
        password = token
    elif token:
        password = "pw-" + hashlib.sha256(token.encode()).hexdigest()[:12]
    else:
        password = "pw-node"
    response: dict[str, object] = {
        "kind": "CredentialProviderResponse",
        "apiVersion": request["apiVersion"],
        "cacheKeyType": os.environ.get("CACHE_KEY_TYPE", "Image"),
        "auth": {request["image"].split("/", 1)[0]: {"username": "echo", "password": password}},
    }
    if "CACHE_DURATION" in os.environ:
        response["cacheDuration"] = os.environ["CACHE_DURATION"]
    json.dump(response, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
