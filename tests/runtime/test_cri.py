"""CRIImageService against a scripted CRI server: the faults containerd does not make on demand.

The behaviour on a real containerd is in tests/integration/test_cri_real.py; here are the
runtime answers that cannot be provoked there: refs that disagree, calls that hang, an old CRI
version, a runtime without the CRI plugin, any status with any text.
"""

from __future__ import annotations

import logging
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from pullwarden._cancel import CancelToken
from pullwarden.errors import (
    ContainerRuntimeError,
    DeniedError,
    ImageStoreError,
    InvalidReferenceError,
    NotFoundError,
    PullCancelledError,
    PullOutcomeUnknownError,
    RegistryUnavailableError,
    RuntimeUnavailableError,
    UnauthorizedError,
)
from pullwarden.runtime import AuthConfig, CRIImageService, PodSandbox, parse_endpoint
from tests.runtime.cri_fake import ID, MANIFEST, NAME, FakeCRI, fake_cri, image

BOUND = 1.0


@pytest.fixture
def short_dir() -> Iterator[Path]:
    """A directory with a short path: unix socket paths are limited to 107 bytes."""
    path = Path(tempfile.mkdtemp(prefix="pwcri.", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def fake(short_dir: Path) -> Iterator[FakeCRI]:
    with fake_cri(short_dir) as server:
        server.script.status[NAME] = image()
        server.script.status[ID] = image()
        yield server


@pytest.fixture
def service(fake: FakeCRI) -> Iterator[CRIImageService]:
    with CRIImageService(fake.endpoint) as cri:
        yield cri


# -- endpoints and connecting -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "target"),
    [
        ("unix:///run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock"),
        ("/run/containerd/containerd.sock", "unix:///run/containerd/containerd.sock"),
        ("  unix:///x.sock ", "unix:///x.sock"),
    ],
)
def test_endpoints_in_the_kubelet_forms(endpoint: str, target: str) -> None:
    assert parse_endpoint(endpoint) == (target, target.removeprefix("unix://"))


@pytest.mark.parametrize(
    ("endpoint", "words"),
    [
        ("tcp://127.0.0.1:2375", "tcp:// scheme is not supported"),
        ("npipe:////./pipe/x", "npipe:// scheme is not supported"),
        ("containerd.sock", "absolute socket path"),
        ("unix://relative.sock", "absolute socket path"),
    ],
)
def test_other_endpoints_are_refused_by_name(endpoint: str, words: str) -> None:
    with pytest.raises(ContainerRuntimeError, match=words) as info:
        parse_endpoint(endpoint)
    assert endpoint in str(info.value)


def test_connect_names_the_runtime_and_its_cri_version(fake: FakeCRI) -> None:
    with CRIImageService(fake.endpoint) as cri:
        assert str(cri.version) == "fakeruntime 9.9 (CRI v1)"
    assert fake.last("Version").version == "v1"


def test_a_missing_socket_is_a_clear_error_at_once(short_dir: Path) -> None:
    started = time.monotonic()
    with pytest.raises(RuntimeUnavailableError) as info:
        CRIImageService(f"unix://{short_dir}/none.sock")
    assert time.monotonic() - started < BOUND
    assert str(info.value) == (
        f"container runtime unavailable at unix://{short_dir}/none.sock: "
        f"{short_dir}/none.sock does not exist (is the runtime running?)"
    )


def test_a_file_that_is_not_a_socket_is_refused(short_dir: Path) -> None:
    (short_dir / "plain").write_text("x")
    with pytest.raises(RuntimeUnavailableError, match="is not a socket"):
        CRIImageService(str(short_dir / "plain"))


def test_a_stale_socket_nobody_listens_on_is_unavailable(short_dir: Path) -> None:
    path = short_dir / "stale.sock"
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(path))
    sock.close()  # the file stays; connecting is refused
    started = time.monotonic()
    with pytest.raises(RuntimeUnavailableError, match="container runtime unavailable at"):
        CRIImageService(str(path))
    assert time.monotonic() - started < 5


def test_a_runtime_without_the_cri_plugin_says_so(fake: FakeCRI) -> None:
    fake.script.runtime_service = False
    with pytest.raises(RuntimeUnavailableError, match=r"does not serve CRI v1.*CRI plugin"):
        CRIImageService(fake.endpoint)


def test_an_older_cri_version_is_refused(fake: FakeCRI) -> None:
    fake.script.api_version = "v1alpha2"
    with pytest.raises(RuntimeUnavailableError, match=r"fakeruntime 9.9 \(CRI v1alpha2\)"):
        CRIImageService(fake.endpoint)


# -- what goes out --------------------------------------------------------------------------------


def test_pull_sends_the_credentials_and_the_pod(fake: FakeCRI, service: CRIImageService) -> None:
    auth = AuthConfig("alice", "pw", identity_token="idt", registry_token="rgt")
    pod = PodSandbox("web", "team-a", "uid-1", {"team": "a"})
    assert service.pull_image(NAME, auth, sandbox=pod) == ID
    sent = fake.last("PullImage")
    assert (sent.auth.username, sent.auth.password) == ("alice", "pw")
    assert (sent.auth.identity_token, sent.auth.registry_token) == ("idt", "rgt")
    assert sent.auth.server_address == ""  # containerd 1.6 cannot parse host:port there
    assert sent.image.image == sent.image.user_specified_image == NAME
    assert dict(sent.image.annotations) == {"team": "a"}
    meta = sent.sandbox_config.metadata
    assert (meta.name, meta.namespace, meta.uid) == ("web", "team-a", "uid-1")


def test_an_anonymous_pull_sends_no_auth_and_no_pod(
    fake: FakeCRI, service: CRIImageService
) -> None:
    service.pull_image(NAME, AuthConfig())
    sent = fake.last("PullImage")
    assert not sent.HasField("auth")
    assert not sent.HasField("sandbox_config")


def test_status_list_remove_and_usage(fake: FakeCRI, service: CRIImageService) -> None:
    fake.script.images = [image("sha256:" + "e" * 64, (), pinned=True), image()]
    assert service.image_status("nothing:here") is None
    found = service.image_status(NAME)
    assert found is not None and (found.id, found.repo_tags, found.size) == (ID, (NAME,), 1234)
    listed = service.list_images()
    assert [i.id for i in listed] == [ID, "sha256:" + "e" * 64]
    assert [i.pinned for i in listed] == [False, True]
    service.remove_image(ID)
    assert fake.last("RemoveImage").image.image == ID
    usage = service.fs_usage()
    assert (usage.used_bytes, usage.inodes_used, usage.mountpoint) == (
        4096,
        7,
        str(fake.socket.parent),
    )


# -- the image ref ------------------------------------------------------------------------------


def test_a_ref_in_another_format_becomes_the_runtime_s_image_id(
    fake: FakeCRI, service: CRIImageService, caplog: pytest.LogCaptureFixture
) -> None:
    """CRI-O before 1.36 answered PullImage with repo@manifest-digest but ImageStatus with the
    config digest: a record under the first would never be found by the second."""
    digest_ref = f"127.0.0.1:5000/ns/app@{MANIFEST}"
    fake.script.pull_ref = digest_ref
    fake.script.status[digest_ref] = image()
    with caplog.at_level(logging.WARNING, "pullwarden.runtime.cri"):
        assert service.pull_image(NAME) == ID
    assert f"reported {digest_ref}" in caplog.text


def test_a_ref_the_runtime_cannot_find_is_kept_and_warned_about(
    fake: FakeCRI, service: CRIImageService, caplog: pytest.LogCaptureFixture
) -> None:
    fake.script.pull_ref = "sha256:" + "f" * 64
    with caplog.at_level(logging.WARNING, "pullwarden.runtime.cri"):
        assert service.pull_image(NAME) == "sha256:" + "f" * 64
    assert "will never match" in caplog.text


# -- errors ----------------------------------------------------------------------------------------

UNKNOWN = grpc.StatusCode.UNKNOWN
PREFIX = f'failed to pull and unpack image "{NAME}": failed to resolve reference "{NAME}": '


@pytest.mark.parametrize(
    ("code", "text", "kind"),
    [
        (UNKNOWN, PREFIX + "pulling from host 127.0.0.1:5000 failed with status code "
         "[manifests v1]: 401 Unauthorized", UnauthorizedError),
        (UNKNOWN, PREFIX + "failed to authorize: failed to fetch oauth token: unexpected "
         "status: 401 Unauthorized", UnauthorizedError),
        (UNKNOWN, PREFIX + "pull access denied, repository does not exist or may require "
         "authorization: server message: insufficient_scope: authorization failed", DeniedError),
        (UNKNOWN, PREFIX + "unexpected status from HEAD request: 403 Forbidden", DeniedError),
        (grpc.StatusCode.NOT_FOUND, PREFIX + f"{NAME}: not found", NotFoundError),
        (UNKNOWN, PREFIX + 'failed to do request: Head "http://127.0.0.1:5000/v2/ns/app/'
         'manifests/v1": dial tcp 127.0.0.1:5000: connect: connection refused',
         RegistryUnavailableError),
        (UNKNOWN, PREFIX + "failed to authorize: failed to fetch anonymous token: Get "
         '"http://127.0.0.1:5001/token": dial tcp 127.0.0.1:5001: connect: connection refused',
         RegistryUnavailableError),
        (UNKNOWN, PREFIX + "unexpected status: 503 Service Unavailable", RegistryUnavailableError),
        (UNKNOWN, 'failed to parse image reference "A/b": invalid reference format',
         InvalidReferenceError),
        (UNKNOWN, "failed to unpack image on snapshotter native: no space left on device",
         ContainerRuntimeError),
    ],
)  # fmt: skip
def test_pull_failures_are_classified_like_the_registry_client(
    fake: FakeCRI, service: CRIImageService, code: grpc.StatusCode, text: str, kind: type
) -> None:
    fake.script.fail["PullImage"] = (code, text)
    with pytest.raises(kind) as info:
        service.pull_image(NAME)
    assert type(info.value) is kind
    go_code = "NotFound" if code is grpc.StatusCode.NOT_FOUND else "Unknown"
    assert str(info.value) == f"rpc error: code = {go_code} desc = {text}"
    assert not isinstance(info.value, PullOutcomeUnknownError)  # nothing was committed


def test_registry_errors_name_where(fake: FakeCRI, service: CRIImageService) -> None:
    fake.script.fail["PullImage"] = (grpc.StatusCode.NOT_FOUND, "not found")
    with pytest.raises(NotFoundError) as info:
        service.pull_image(NAME)
    err = info.value
    assert (err.registry, err.repository, err.reference) == ("127.0.0.1:5000", "ns/app", "v1")


def test_a_secret_the_runtime_echoes_is_masked(fake: FakeCRI, service: CRIImageService) -> None:
    fake.script.fail["PullImage"] = (UNKNOWN, "401 Unauthorized for s3cr3t-pass and tok-en-123")
    with pytest.raises(UnauthorizedError) as info:
        service.pull_image(NAME, AuthConfig("alice", "s3cr3t-pass", registry_token="tok-en-123"))
    assert "s3cr3t" not in str(info.value) and "tok-en" not in str(info.value)
    assert str(info.value).startswith("rpc error: code = Unknown desc = 401 Unauthorized for ")


@pytest.mark.parametrize("code", ["UNAVAILABLE", "INTERNAL", "DEADLINE_EXCEEDED"])
def test_a_pull_without_a_clear_answer_may_have_committed(
    fake: FakeCRI, service: CRIImageService, code: str
) -> None:
    fake.script.fail["PullImage"] = (getattr(grpc.StatusCode, code), "transport is closing")
    with pytest.raises(PullOutcomeUnknownError, match="may have pulled it"):
        service.pull_image(NAME)


def test_other_calls_fail_as_runtime_errors(fake: FakeCRI, service: CRIImageService) -> None:
    fake.script.fail["ImageStatus"] = (grpc.StatusCode.INTERNAL, "boom")
    with pytest.raises(ContainerRuntimeError) as info:
        service.image_status(NAME)
    assert str(info.value) == "rpc error: code = Internal desc = boom"
    assert info.value.code == "INTERNAL" and isinstance(info.value, ImageStoreError)
    fake.script.fail["ListImages"] = (grpc.StatusCode.INVALID_ARGUMENT, "bad filter")
    with pytest.raises(InvalidReferenceError):
        service.list_images()


# -- deadlines and cancelling ----------------------------------------------------------------------


def test_calls_other_than_pull_have_the_request_timeout(fake: FakeCRI) -> None:
    fake.script.hang.add("ImageStatus")
    with CRIImageService(fake.endpoint, request_timeout=0.3) as cri:
        started = time.monotonic()
        with pytest.raises(ContainerRuntimeError, match=r"did not answer within 0.3s"):
            cri.image_status(NAME)
        assert time.monotonic() - started < 0.3 + BOUND


def test_a_pull_past_its_deadline_may_have_committed(fake: FakeCRI) -> None:
    fake.script.hang.add("PullImage")
    with (
        CRIImageService(fake.endpoint, pull_timeout=0.3) as cri,
        pytest.raises(PullOutcomeUnknownError, match="DeadlineExceeded"),
    ):
        cri.pull_image(NAME)


def cancel_when(event: threading.Event, token: CancelToken) -> list[float]:
    at: list[float] = []

    def run() -> None:
        event.wait(10)
        time.sleep(0.1)
        at.append(time.monotonic())
        token.cancel()

    threading.Thread(target=run, daemon=True).start()
    return at


def test_cancelling_a_hung_pull_stops_it_at_once_and_says_it_may_have_committed(
    fake: FakeCRI, service: CRIImageService
) -> None:
    fake.script.hang.add("PullImage")
    token = CancelToken()
    at = cancel_when(fake.hung, token)
    with pytest.raises(PullOutcomeUnknownError, match=r"cancelled.*may have pulled it"):
        service.pull_image(NAME, cancel=token)
    assert time.monotonic() - at[0] < BOUND


def test_a_pull_cancelled_before_it_starts_sends_nothing(
    fake: FakeCRI, service: CRIImageService
) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(PullCancelledError):
        service.pull_image(NAME, cancel=token)
    assert "PullImage" not in fake.methods()


def test_the_service_token_stops_any_call(fake: FakeCRI) -> None:
    token = CancelToken()
    fake.script.hang.add("ListImages")
    with CRIImageService(fake.endpoint, cancel=token) as cri:
        at = cancel_when(fake.hung, token)
        with pytest.raises(PullCancelledError):
            cri.list_images()
        assert time.monotonic() - at[0] < BOUND


def test_a_pull_that_committed_never_raises_even_if_the_lookup_after_it_fails(
    fake: FakeCRI, service: CRIImageService
) -> None:
    """Raising would tell the caller nothing was committed: its intent would go, and the image
    would be on the node without record or intent (preloaded, open to every pod)."""
    fake.script.fail["ImageStatus"] = (grpc.StatusCode.UNAVAILABLE, "transport is closing")
    assert service.pull_image(NAME) == ID
