"""KEP-2535 on a real containerd: ``pullwarden run --runtime-endpoint`` against docker-registry.

The upstream end-to-end scenarios (IfNotPresent and Never: no secret, wrong secret, same secret,
the same credentials in another secret, a rotated secret, the registry down), the KEP's
parallel-pull case, images imported with ``ctr images import`` under every policy, and one
comparison of both backends: the same manifests give the same outcomes, ``verifiedBy`` and
record files (timestamps aside) on the embedded store and on containerd.  Each scenario is
judged by the registry's access log and containerd's own image list.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from pullwarden.records import FileRecordStore
from tests.integration.conftest import RegistryFactory
from tests.integration.containerd import Containerd
from tests.integration.infra import ALICE, BOB, Registry, Seeded, Skopeo, TestImages, seed_one
from tests.integration.test_run_real import (
    PRELOADED_POLICIES,
    PRELOADED_POLICY_IDS,
    outcomes,
    pod,
    run,
    secret,
)

IMAGE = "private/alice:v1"


def run_on(
    containerd: Containerd,
    root: Path,
    docs: list[dict[str, Any]],
    config: dict[str, Any] | None = None,
) -> tuple[int, dict[str, Any], str]:
    return run(root, docs, "--runtime-endpoint", containerd.endpoint, config=config)


def manifest_requests(registry: Registry, since: int, status: int) -> int:
    return sum(
        registry.count_requests(method, "/manifests/", since=since, status=status)
        for method in ("HEAD", "GET")
    )


@pytest.mark.parametrize("policy", ["IfNotPresent", "Never"])
def test_upstream_e2e_scenarios_on_containerd(
    containerd: Containerd, seeded: Seeded, tmp_path: Path, policy: str
) -> None:
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    image_id = seeded.images.alice.config_digest
    root = tmp_path / "node"
    code, data, _ = run_on(
        containerd,
        root,
        [
            secret("a", "alice-cred", registry.host, ALICE),
            pod("a", "first", image, "Always", "alice-cred"),
        ],
    )
    first = outcomes(data)["first"]
    assert code == 0 and (first["verifiedBy"], first["imageRef"]) == ("pull", image_id)
    status = containerd.cri_status(image)
    assert status is not None and status.id == image_id and image in status.repo_tags

    mark = registry.mark()
    code, data, _ = run_on(
        containerd,
        root,
        [
            secret("a", "alice-cred", registry.host, ALICE),
            secret("b", "copy-of-alice", registry.host, ALICE),
            secret("c", "bob-cred", registry.host, BOB),
            pod("c", "no-secret", image, policy),
            pod("c", "wrong-credentials", image, policy, "bob-cred"),
            pod("a", "same-secret", image, policy, "alice-cred"),
            pod("b", "same-credentials", image, policy, "copy-of-alice"),
        ],
    )
    got = outcomes(data)
    assert code == 1
    denied = "ErrImageNeverPull" if policy == "Never" else "ErrImagePull"
    assert got["no-secret"]["outcome"] == got["wrong-credentials"]["outcome"] == denied
    for name in ("same-secret", "same-credentials"):
        assert (got[name]["outcome"], got[name]["verifiedBy"]) == ("Ready", "secretHash")
        assert got[name]["pulled"] is False and got[name]["imageRef"] == image_id
    if policy == "IfNotPresent":  # containerd asked the registry for the denied pods only
        assert "insufficient_scope" in got["wrong-credentials"]["message"]
        assert manifest_requests(registry, mark, 401) > 0
    else:
        assert registry.access_log(since=mark) == []
    assert manifest_requests(registry, mark, 200) == 0
    assert registry.blob_bytes_served(since=mark) == 0
    assert image in containerd.image_names()  # the denied pulls removed nothing

    # A rotated secret (same namespace, name and uid; new content) is trusted by its
    # coordinates without a registry round-trip.
    mark = registry.mark()
    code, data, _ = run_on(
        containerd,
        root,
        [
            secret("a", "alice-cred", registry.host, BOB),
            pod("a", "rotated", image, policy, "alice-cred"),
        ],
    )
    rotated = outcomes(data)["rotated"]
    assert code == 0 and rotated["verifiedBy"] == "secretCoordinates"
    assert registry.access_log(since=mark) == []

    record = FileRecordStore(root, migrate=False, create=False).get_pulled_record(image_id)
    assert record is not None
    names = {s.name for s in record.credential_mapping[image.rsplit(":", 1)[0]].kubernetes_secrets}
    assert names == {"alice-cred", "copy-of-alice"}


def test_registry_down_only_known_credentials_get_in(
    containerd: Containerd,
    registry_factory: RegistryFactory,
    skopeo: Skopeo,
    test_images: TestImages,
    tmp_path: Path,
) -> None:
    registry = registry_factory(auth="token")  # our own: this test stops it
    seed_one(skopeo, test_images, registry, "alice", IMAGE, ALICE)
    containerd.trust(registry)
    image = registry.ref(IMAGE)
    root = tmp_path / "node"
    docs = [secret("a", "alice-cred", registry.host, ALICE)]
    code, _, _ = run_on(
        containerd, root, [*docs, pod("a", "p1", image, "IfNotPresent", "alice-cred")]
    )
    assert code == 0
    registry.stop()
    code, data, _ = run_on(
        containerd, root, [*docs, pod("a", "p2", image, "IfNotPresent", "alice-cred")]
    )
    assert code == 0 and outcomes(data)["p2"]["verifiedBy"] == "secretHash"
    code, data, _ = run_on(containerd, root, [pod("z", "stranger", image, "IfNotPresent")])
    stranger = outcomes(data)["stranger"]
    assert code == 1 and stranger["outcome"] == "RegistryUnavailable"
    assert "connection refused" in stranger["message"]
    assert image in containerd.image_names()


def test_parallel_pulls_with_valid_and_invalid_credentials(
    containerd: Containerd, seeded: Seeded, tmp_path: Path
) -> None:
    """The KEP's case: two pods pull the same absent image at once; only alice's proceeds."""
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    mark = registry.mark()
    code, data, _ = run_on(
        containerd,
        tmp_path / "node",
        [
            secret("a", "alice-cred", registry.host, ALICE),
            secret("b", "bob-cred", registry.host, BOB),
            pod("b", "bob", image, "IfNotPresent", "bob-cred"),
            pod("a", "alice", image, "IfNotPresent", "alice-cred"),
        ],
        config={"serializeImagePulls": False, "maxParallelImagePulls": 2},
    )
    got = outcomes(data)
    assert code == 1
    assert (got["alice"]["outcome"], got["alice"]["verifiedBy"]) == ("Ready", "pull")
    assert got["bob"]["outcome"] == "ErrImagePull" and got["bob"]["verifiedBy"] == ""
    # both asked the registry (bob's pull was not served from alice's)
    assert manifest_requests(registry, mark, 200) >= 1
    assert manifest_requests(registry, mark, 401) >= 1


@pytest.mark.parametrize(
    ("config", "outcome", "verified_by"), PRELOADED_POLICIES, ids=PRELOADED_POLICY_IDS
)
def test_images_imported_with_ctr_are_preloaded(
    containerd: Containerd,
    seeded: Seeded,
    tmp_path: Path,
    config: dict[str, Any],
    outcome: str,
    verified_by: str,
) -> None:
    """An air-gapped node's images (``ctr -n k8s.io images import``) were never pulled by the
    node: they are preloaded, and each policy treats them as the KEP says."""
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    image_id = containerd.import_image(seeded.images.layout_dir, "alice", image)
    assert image_id == seeded.images.alice.config_digest
    if "preloadedImagesVerificationAllowlist" in config:
        allow = [
            p.replace("ALLOWED", registry.host)
            for p in config["preloadedImagesVerificationAllowlist"]
        ]
        config = config | {"preloadedImagesVerificationAllowlist": allow}
    mark = registry.mark()
    code, data, _ = run_on(
        containerd, tmp_path / "node", [pod("z", "no-secret", image, "IfNotPresent")], config
    )
    got = outcomes(data)["no-secret"]
    assert (got["outcome"], got["verifiedBy"]) == (outcome, verified_by)
    assert code == (0 if outcome == "Ready" else 1)
    # exempt images never touch the registry; verified ones ask for the manifest only
    asked = manifest_requests(registry, mark, 401) + manifest_requests(registry, mark, 200)
    assert (asked > 0) == (outcome != "Ready")
    assert registry.blob_bytes_served(since=mark) == 0
    assert image in containerd.image_names()


# -- the same answers on both backends -------------------------------------------------------------

TIME_FIELD = re.compile(r'"lastUpdatedTime":"[^"]*"')


def record_files(root: Path) -> dict[str, str]:
    """Every file under ROOT/image_manager, timestamps masked: relative path → content."""
    base = root / "image_manager"
    return {
        str(p.relative_to(base)): TIME_FIELD.sub('"lastUpdatedTime":"T"', p.read_text())
        for p in sorted(base.rglob("*"))
        if p.is_file()
    }


def test_both_backends_give_the_same_answers_and_the_same_records(
    containerd: Containerd, seeded: Seeded, tmp_path: Path
) -> None:
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    digest = seeded.digest("token", IMAGE)
    public = seeded.ref("token", "ns/hello:v1")
    secrets = [
        secret("a", "alice-cred", registry.host, ALICE),
        secret("b", "copy-of-alice", registry.host, ALICE),
        secret("c", "bob-cred", registry.host, BOB),
    ]
    steps = [
        [
            pod("a", "alice", image, "IfNotPresent", "alice-cred"),
            pod("c", "bob-public", public, "IfNotPresent", "bob-cred"),
        ],
        [
            pod("c", "anon", image, "IfNotPresent"),
            pod("c", "bob", image, "IfNotPresent", "bob-cred"),
            pod("b", "copy", image, "Never", "copy-of-alice"),
            pod(
                "a",
                "by-digest",
                f"{image.rsplit(':', 1)[0]}@{digest}",
                "IfNotPresent",
                "alice-cred",
            ),
            pod("c", "anon-public", public, "IfNotPresent"),
            pod("c", "never-public", public, "Never"),
        ],
        [pod("a", "always", image, "Always", "alice-cred"), pod("c", "anon-never", image, "Never")],
    ]
    answers: dict[str, list[Any]] = {}
    files: dict[str, dict[str, str]] = {}
    for backend in ("embedded", "containerd"):
        root = tmp_path / backend
        answers[backend] = []
        for docs in steps:
            if backend == "containerd":
                code, data, _ = run_on(containerd, root, [*secrets, *docs])
            else:
                code, data, _ = run(root, [*secrets, *docs])
            answers[backend].append(
                (
                    code,
                    {
                        name: (c["outcome"], c["verifiedBy"], c["pulled"], c["imageRef"])
                        for name, c in outcomes(data).items()
                    },
                )
            )
        files[backend] = record_files(root)
    assert answers["containerd"] == answers["embedded"]
    assert files["containerd"] == files["embedded"]
    assert any(path.startswith("pulled/") for path in files["embedded"])
    assert json.dumps(answers["embedded"]).count('"Ready"') >= 5  # the comparison is not vacuous
