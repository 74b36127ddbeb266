"""Child process for ``test_fs_processes.py``: rewrites one pulled record until a deadline.

Usage: ``python rewrite_child.py KUBELET_ROOT VARIANT SECONDS``.  Imports everything, waits
for a line on stdin (so that both writers start together), then writes the record of
:func:`record` for VARIANT over and over for SECONDS, and finally prints how many writes it
made and how many failed.
"""

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime

from pullwarden.errors import RecordWriteError
from pullwarden.records import FileRecordStore
from pullwarden.records._model import ImagePullCredentials, ImagePulledRecord, ImagePullSecret

IMAGE_REF = "sha256:" + "ab" * 32
WHEN = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)


def record(variant: int) -> ImagePulledRecord:
    """A record whose size depends on ``variant`` (a few KiB apart), so torn files show."""
    secrets = tuple(
        ImagePullSecret(f"uid-{variant}-{i}", "team", f"secret-{i}", f"{variant:064x}")
        for i in range(100 + 150 * variant)
    )
    creds = ImagePullCredentials(kubernetes_secrets=secrets)
    return ImagePulledRecord(IMAGE_REF, WHEN, {f"registry.example/app{variant}": creds})


def main() -> None:
    root, variant, seconds = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
    store = FileRecordStore(root, migrate=False)
    mine = record(variant)
    if not sys.stdin.readline():
        return  # the parent went away without starting us
    writes = failures = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            store.write_pulled_record(mine)
        except RecordWriteError:
            failures += 1
        writes += 1
    print(writes, failures)


if __name__ == "__main__":
    main()
