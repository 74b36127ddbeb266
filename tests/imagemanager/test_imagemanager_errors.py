"""Error classification, aggregation, the default tag and the metrics (spec §1.2b, §1.7, §1.8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pullwarden.errors import ImageStoreError, RecordWriteError
from pullwarden.imagemanager import aggregate_error_text, classify_pull_error
from pullwarden.metrics import Metrics, image_size_bucket
from pullwarden.reference import apply_default_tag
from pullwarden.testing import FakeClock
from tests.imagemanager.doubles import FakeImageService, make_pod, make_rig

DIGEST = "sha256:" + "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"[:64]


@pytest.mark.parametrize(
    ("text", "value", "message"),
    [
        ("boom", "ErrImagePull", "boom"),
        ("RegistryUnavailable", "RegistryUnavailable",
         "image pull failed for img because the registry is unavailable"),
        ("RegistryUnavailable: foo", "RegistryUnavailable",
         "image pull failed for img because the registry is unavailable: foo"),
        ("SignatureValidationFailed", "SignatureValidationFailed",
         "image pull failed for img because the signature validation failed"),
        ("SignatureValidationFailed: bar", "SignatureValidationFailed",
         "image pull failed for img because the signature validation failed: bar"),
        ("[RegistryUnavailable: a, boom]", "ErrImagePull", "[RegistryUnavailable: a, boom]"),
    ],
    ids=["fallback", "unavailable", "unavailable-with-message", "signature",
         "signature-wrapped", "aggregated-prefix-hidden"],
)  # fmt: skip
def test_classify(text: str, value: str, message: str) -> None:
    assert classify_pull_error("img", text) == (value, message)


def test_classify_own_unavailable_error() -> None:
    assert classify_pull_error("img", "connection refused", registry_unavailable=True) == (
        "RegistryUnavailable",
        "image pull failed for img because the registry is unavailable: connection refused",
    )


@pytest.mark.parametrize(
    ("texts", "expected"),
    [
        (["a"], "a"),
        (["a", "a"], "a"),
        (["a", "b"], "[a, b]"),
        (["b", "a", "b", "c"], "[b, a, c]"),
    ],
)
def test_aggregate(texts: list[str], expected: str) -> None:
    assert aggregate_error_text(texts) == expected


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("root", "root:latest"),
        ("root:tag", "root:tag"),
        (f"root@{DIGEST}", f"root@{DIGEST}"),
        (f"root:latest@{DIGEST}", f"root:latest@{DIGEST}"),
        ("root:latest", "root:latest"),
        ("registry.example:5000/team/app", "registry.example:5000/team/app:latest"),
    ],
)
def test_default_tag(image: str, expected: str) -> None:
    assert apply_default_tag(image) == expected


def test_runtime_receives_the_raw_name_with_default_tag(tmp_path: Path, clock: FakeClock) -> None:
    rig = make_rig(tmp_path, clock)
    with rig.manager:
        rig.ensure("nginx", "IfNotPresent")
    assert [p.image for p in rig.service.pulls] == ["nginx:latest"]  # not docker.io/library/...
    # the intent, back-off key and events use the name as the pod spells it
    assert rig.events.messages()[0] == 'Pulling image "nginx"'


def test_size_buckets() -> None:
    mib, gib = 1 << 20, 1 << 30
    assert image_size_bucket(0) == "N/A"
    assert image_size_bucket(1) == "0-10MB"
    assert image_size_bucket(10 * mib) == "0-10MB"  # bounds are exclusive
    assert image_size_bucket(10 * mib + 1) == "10MB-100MB"
    assert image_size_bucket(700 * mib) == "500MB-1GB"
    assert image_size_bucket(3 * gib) == "1GB-5GB"
    assert image_size_bucket(100 * gib + 1) == "GT100GB"


def test_pull_duration_histogram(tmp_path: Path, clock: FakeClock) -> None:
    service = FakeImageService(clock=clock, pull_seconds=7.0)
    rig = make_rig(tmp_path, clock, service=service)
    with rig.manager:
        assert rig.ensure("registry.example/team/app:v1", "Always").ok
    m = rig.metrics
    labels = {"image_size_in_bytes": "0-10MB"}
    assert m.value("kubelet_image_pull_duration_seconds_count", labels) == 1
    assert m.value("kubelet_image_pull_duration_seconds_sum", labels) == 7.0
    assert m.value("kubelet_image_pull_duration_seconds_bucket", {**labels, "le": "5.0"}) == 0
    assert m.value("kubelet_image_pull_duration_seconds_bucket", {**labels, "le": "10.0"}) == 1


def test_ensure_requests_counter_labels() -> None:
    m = Metrics()
    m.count_ensure_image_request("IfNotPresent", True, None)
    m.count_ensure_image_request("IfNotPresent", True, None)
    m.count_ensure_image_request("Never", False, True)
    name = "kubelet_image_manager_ensure_image_requests_total"
    assert m.value(name, {"pull_policy": "ifnotpresent", "present_locally": "true",
                          "pull_required": "unknown"}) == 2  # fmt: skip
    assert m.value(name, {"pull_policy": "never", "present_locally": "false",
                          "pull_required": "true"}) == 1  # fmt: skip


class FailingIntents:
    """Wraps a store and refuses to write intents."""

    def __init__(self, store: object) -> None:
        self._store = store

    def write_intent(self, intent: object) -> None:
        raise RecordWriteError("disk full", "/x")

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)


def test_intent_write_failure(tmp_path: Path, clock: FakeClock) -> None:
    rig = make_rig(tmp_path, clock)
    assert rig.pull_manager is not None
    rig.pull_manager.store = FailingIntents(rig.pull_manager.store)  # type: ignore[assignment]
    with rig.manager:
        result = rig.ensure("registry.example/team/app:v1", "IfNotPresent", pod=make_pod())
    assert result.error == "ErrImagePull" and not result.pulled
    assert result.message == (
        'Failed to record image pull intent for container image "registry.example/team/app:v1": '
        "failed to record image pull intent: disk full"
    )
    assert rig.service.calls == ["status"]  # no pull without an intent
    assert rig.events.reasons() == []


@pytest.mark.parametrize(
    ("error", "logged"),
    [(TypeError("a bug"), True), (ImageStoreError("disk on fire"), False)],
)
def test_unexpected_errors_are_logged_with_their_traceback(
    tmp_path: Path,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    error: Exception,
    logged: bool,
) -> None:
    service = FakeImageService(clock=clock, inspect_error=error)
    rig = make_rig(tmp_path, clock, service=service)
    with caplog.at_level("ERROR", logger="pullwarden.imagemanager"):
        result = rig.ensure("registry.example/app:v1", "IfNotPresent")
    assert result.error == "ImageInspectError" and str(error) in result.message
    tracebacks = [r for r in caplog.records if r.exc_info is not None]
    assert bool(tracebacks) is logged
