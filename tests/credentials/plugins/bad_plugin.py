#!/usr/bin/env python3
"""Test plugin: fails in the way its first argument names.

``exit1`` (secrets on stderr, status 1), ``secret-stdout-exit`` (credentials on stdout, status
2), ``garbage``, ``not-object``, ``wrong-api``, ``wrong-kind``, ``bad-cache-key``,
``bad-duration``, ``unknown-field``, ``duplicate-field``, ``wrong-type``, ``huge`` (2 MiB of
stdout), ``signal`` (kills itself), ``sleep`` (30 s), ``sleep-child`` (a child holding stdout
sleeps too; its pid goes to ``CHILD_PID``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

SECRET = "s3cr3t-Pa55w0rd-4f9a8b7c6d5e"


def respond(request: dict[str, object], **changes: object) -> None:
    response: dict[str, object] = {
        "kind": "CredentialProviderResponse",
        "apiVersion": request["apiVersion"],
        "cacheKeyType": "Registry",
        "cacheDuration": "1h",
        "auth": {"bad.example": {"username": "bad", "password": SECRET}},
    }
    response.update(changes)
    json.dump(response, sys.stdout)


def main() -> int:
    mode = sys.argv[1]
    request = json.load(sys.stdin)
    if mode == "exit1":
        token = request.get("serviceAccountToken", "")
        print(f"error: login failed password={SECRET} token {token}", file=sys.stderr)
        return 1
    if mode == "secret-stdout-exit":
        respond(request)
        return 2
    if mode == "garbage":
        print(f"this is not json {{ {SECRET}")
    elif mode == "not-object":
        print(json.dumps([SECRET]))
    elif mode == "wrong-api":
        respond(request, apiVersion="credentialprovider.kubelet.k8s.io/v1beta1")
    elif mode == "wrong-kind":
        respond(request, kind="CredentialProviderRequest")
    elif mode == "bad-cache-key":
        respond(request, cacheKeyType="Pod")
    elif mode == "bad-duration":
        respond(request, cacheDuration="five minutes")
    elif mode == "unknown-field":
        respond(request, auth={"bad.example": {"username": "u", "password": SECRET, "email": "e"}})
    elif mode == "duplicate-field":
        head = json.dumps(
            {"kind": "CredentialProviderResponse", "apiVersion": request["apiVersion"]}
        )
        print(head[:-1] + ', "cacheKeyType": "Image", "cacheKeyType": "Global"}')
    elif mode == "signal":
        os.kill(os.getpid(), signal.SIGTERM)
    elif mode == "wrong-type":
        respond(request, auth={"bad.example": {"username": "u", "password": 12345}})
    elif mode == "huge":
        sys.stdout.write(" " * (2 << 20))
        respond(request)
    elif mode == "sleep":
        time.sleep(30)
    elif mode == "sleep-child":
        child = subprocess.Popen(["sleep", "30"])
        with open(os.environ["CHILD_PID"], "w", encoding="utf-8") as f:
            f.write(str(child.pid))
        time.sleep(30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
