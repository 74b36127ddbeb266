"""Child process for ``test_crash.py``: hammers a FileRecordStore until it is killed.

Usage: ``python crash_child.py KUBELET_ROOT SEED``.  Imports everything, then waits for a line
on stdin (so the parent can start the next child while the current one runs), opens the store
(start-up migration included), prints ``ready`` and writes and deletes intents and records of
varying size until it is killed.
"""

from __future__ import annotations

import random
import sys
from datetime import UTC, datetime, timedelta

from pullwarden.records import FileRecordStore
from pullwarden.records._model import (
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
)

IMAGES = [f"registry.example/team/app{i}:v{i % 3}" for i in range(12)]
REFS = [f"sha256:{i:064x}" for i in range(12)]


def random_record(rng: random.Random) -> ImagePulledRecord:
    mapping = {}
    for k in range(rng.randrange(0, 4)):
        size = rng.choice([0, 1, 3, 50, 400, 2000])
        secrets = tuple(
            ImagePullSecret(f"uid-{rng.random()}", f"ns-{j}", f"secret-{j}", f"{j:064x}")
            for j in range(size)
        )
        accounts = tuple(
            ImagePullServiceAccount(f"sa-uid-{j}", "ns", f"sa-{j}") for j in range(rng.randrange(3))
        )
        mapping[f"registry.example/repo{k}-{rng.randrange(100)}"] = ImagePullCredentials(
            secrets, accounts, rng.random() < 0.3
        )
    when = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(10**8))
    return ImagePulledRecord(rng.choice(REFS), when, mapping)


def main() -> None:
    root, seed = sys.argv[1], int(sys.argv[2])
    rng = random.Random(seed)
    if not sys.stdin.readline():
        return  # the parent went away without starting us
    store = FileRecordStore(root)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        op = rng.random()
        if op < 0.3:
            store.write_intent(ImagePullIntent(rng.choice(IMAGES)))
        elif op < 0.4:
            store.delete_intent(rng.choice(IMAGES))
        elif op < 0.9:
            store.write_pulled_record(random_record(rng))
        else:
            store.delete_pulled_record(rng.choice(REFS))


if __name__ == "__main__":
    main()
