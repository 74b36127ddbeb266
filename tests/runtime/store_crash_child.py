"""Child of ``test_store_crash.py``: a fork server whose children pull into one store until killed.

Usage: ``python store_crash_child.py STORE_ROOT``. The process imports everything and builds the
stub registry's content once (deterministically, from a fixed seed), then serves one line per run
on stdin: a seed. For each it forks a worker that prints ``pid <pid>``, opens the store (start-up
sweep included), prints ``ready`` and then pulls, removes and collects garbage from two threads
until it is killed; the server waits for the worker and prints ``exit <wait status>``. Forking
from a warm process keeps interpreter start-up out of the kill loop.

The content: eight single-platform images drawn from a shared pool of layers (so images share
blobs), one two-platform index, and a ``rolling`` tag that each worker points at another image.
"""

from __future__ import annotations

import os
import random
import sys
import threading
from pathlib import Path

from pullwarden.runtime import LocalImageService
from tests.runtime.stub_registry import AMD64, ARM64, StubRegistry, random_layer

REGISTRY = "127.0.0.1:5999"
CONTENT_SEED = 20250102
IMAGES = [f"{REGISTRY}/crash/img{i}:v1" for i in range(8)]
MULTI = f"{REGISTRY}/crash/multi:v1"
ROLLING_REPO = f"{REGISTRY}/crash/rolling"
ROLLING = f"{ROLLING_REPO}:latest"


def build_content() -> tuple[StubRegistry, list[str]]:
    """The stub and every manifest digest a ``rolling`` tag may point at."""
    rng = random.Random(CONTENT_SEED)
    stub = StubRegistry(chunk_size=4096, chunk_delay=0.0002)
    pool = [random_layer(rng, rng.randrange(4_000, 120_000)) for _ in range(10)]
    digests = []
    for ref in IMAGES:
        chosen = rng.sample(pool, rng.randrange(1, 4))
        image = stub.add_image(ref, chosen, label=ref)
        rolling = stub.add_image(None, chosen, label=ref + "-rolling", repository=ROLLING_REPO)
        digests.append(rolling.manifest_digest)
        assert image.manifest_digest
    repo = MULTI.rsplit(":", 1)[0]
    amd = stub.add_image(None, rng.sample(pool, 2), platform=AMD64, repository=repo)
    arm = stub.add_image(None, rng.sample(pool, 2), platform=ARM64, repository=repo)
    stub.add_index(MULTI, [amd, arm])
    return stub, digests


def work(root: Path, seed: int, stub: StubRegistry, rolling: list[str]) -> None:
    """One worker's life: open the store, then keep changing it from three threads."""
    rng = random.Random(seed)
    stub.move_tag(ROLLING, rng.choice(rolling))
    sys.stdout.write(f"pid {os.getpid()}\n")
    sys.stdout.flush()
    store = LocalImageService(root, client=stub, platform=AMD64)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    names = [*IMAGES, MULTI, ROLLING]

    def puller(thread_seed: int) -> None:
        r = random.Random(thread_seed)
        try:
            while True:
                store.pull_image(r.choice(names))
        except BaseException as exc:
            sys.stderr.write(f"crash worker thread failed: {exc!r}\n")
            os._exit(4)

    for k in range(2):
        threading.Thread(target=puller, args=(seed * 7 + k,), daemon=True).start()
    while True:
        op = rng.random()
        if op < 0.4:
            images = store.list_images()
            if images:
                store.remove_image(rng.choice(images).id)
        elif op < 0.7:
            store.gc()
        else:
            store.pull_image(rng.choice(names))


def main() -> None:
    root = Path(sys.argv[1])
    stub, rolling = build_content()
    sys.stdout.write("serving\n")
    sys.stdout.flush()
    for line in sys.stdin:
        seed = int(line)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                work(root, seed, stub, rolling)
            except BaseException as exc:
                sys.stderr.write(f"crash worker failed: {exc!r}\n")
                code = 3
            finally:
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(f"exit {status}\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
