#!/usr/bin/env python3
"""Test plugin: answers fixed credentials for one or more match patterns.

Arguments select the answer (``--username``, ``--password``, ``--match`` (repeatable),
``--cache-key-type``, ``--cache-duration``; without ``--cache-duration`` the response has
none).  Environment: ``STATIC_PASSWORD`` overrides the password, ``RUN_LOG`` names a file that
gets one line (the image) per run, ``SLEEP`` seconds to wait before answering.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--username", default="static-user")
    parser.add_argument("--password", default="static-password")
    parser.add_argument("--match", action="append", default=[])
    parser.add_argument("--cache-key-type", default="Registry")
    parser.add_argument("--cache-duration")
    args = parser.parse_args()
    request = json.load(sys.stdin)
    log = os.environ.get("RUN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as f:
            f.write(request["image"] + "\n")
    time.sleep(float(os.environ.get("SLEEP", "0")))
    password = os.environ.get("STATIC_PASSWORD", args.password)
    patterns = args.match or [request["image"].split("/", 1)[0]]
    response: dict[str, object] = {
        "kind": "CredentialProviderResponse",
        "apiVersion": request["apiVersion"],
        "cacheKeyType": args.cache_key_type,
        "auth": {p: {"username": args.username, "password": password} for p in patterns},
    }
    if args.cache_duration is not None:
        response["cacheDuration"] = args.cache_duration
    json.dump(response, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
