"""Credential provider exec plugins: the protocol, caching, service-account tokens, failures.

Every test runs real plugin processes: the scripts in ``plugins/``, copied into a bin dir under
the provider names.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pullwarden.credentials import (
    CredentialPlugins,
    CredentialProvider,
    CredentialProviderConfig,
    PluginFailure,
    ServiceAccountSource,
    TokenAttributes,
    TrackedCredential,
)
from pullwarden.credentials._plugins import DEFAULT_TIMEOUT, _scrub
from pullwarden.objects import Pod, ServiceAccount
from pullwarden.testing import FakeClock
from tests.support import busy_grpc, ends_within

PLUGINS = Path(__file__).parent / "plugins"
V1 = "credentialprovider.kubelet.k8s.io/v1"
SECRET = "s3cr3t-Pa55w0rd-4f9a8b7c6d5e"  # what bad_plugin.py puts in its answers and stderr


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    d = tmp_path / "bin"
    d.mkdir()
    for name, script in [
        ("static-creds", "static_creds.py"),
        ("static-creds-2", "static_creds.py"),
        ("echo-request", "echo_request.py"),
        ("bad-plugin", "bad_plugin.py"),
    ]:
        shutil.copy(PLUGINS / script, d / name)
        (d / name).chmod(0o755)
    return d


def provider(
    name: str,
    match: tuple[str, ...] = ("*.example",),
    *,
    args: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
    default: float = 0.0,
    api_version: str = V1,
    token: TokenAttributes | None = None,
) -> CredentialProvider:
    return CredentialProvider(
        name=name,
        match_images=match,
        default_cache_duration=default,
        api_version=api_version,
        args=args,
        env=tuple((env or {}).items()),
        token_attributes=token,
    )


def token_mode(
    cache_type: str = "ServiceAccount",
    *,
    require: bool = True,
    required: tuple[str, ...] = (),
    optional: tuple[str, ...] = (),
) -> TokenAttributes:
    return TokenAttributes("registry.example", cache_type, require, required, optional)


@dataclass
class Failures:
    seen: list[PluginFailure] = field(default_factory=list)

    def __call__(self, failure: PluginFailure) -> None:
        self.seen.append(failure)


def plugins(bin_dir: Path, *providers: CredentialProvider, **kwargs: Any) -> CredentialPlugins:
    return CredentialPlugins(CredentialProviderConfig(providers), bin_dir, **kwargs)


def lookup(
    p: CredentialPlugins,
    image: str,
    pod: Pod | None = None,
    sa: ServiceAccount | None = None,
) -> tuple[list[TrackedCredential], list[PluginFailure]]:
    failures = Failures()
    creds = p.keyring_for(pod, sa, failures).lookup(image)
    return creds, failures.seen


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.exists() else []


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in lines(path)]


def static(
    name: str = "static-creds",
    match: tuple[str, ...] = ("*.example",),
    *,
    log: Path | None = None,
    username: str = "alice",
    password: str = "alice-pw",
    key: str = "Registry",
    duration: str | None = None,
    default: float = 0.0,
    env: dict[str, str] | None = None,
) -> CredentialProvider:
    args = ["--username", username, "--password", password, "--cache-key-type", key]
    if duration is not None:
        args += ["--cache-duration", duration]
    environment = dict(env or {})
    if log is not None:
        environment["RUN_LOG"] = str(log)
    return provider(name, match, args=tuple(args), env=environment, default=default)


# --- the exec protocol ------------------------------------------------------------------------


def test_static_plugin_credentials_are_node_wide(bin_dir: Path) -> None:
    p = plugins(bin_dir, static())
    creds, failures = lookup(p, "registry.example/team/app")
    assert failures == []
    assert [(c.username, c.password, c.source) for c in creds] == [("alice", "alice-pw", None)]
    assert creds[0].credential_hash  # hashed like every keyring credential


def test_plugin_runs_only_for_matching_images(bin_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    p = plugins(bin_dir, static(match=("*.example:5000/team",), log=log))
    assert lookup(p, "registry.example/team/app") == ([], [])
    assert lookup(p, "registry.example:5000/other") == ([], [])
    assert lookup(p, "a.b.example:5000/team/app") == ([], [])
    assert lines(log) == []
    creds, _ = lookup(p, "registry.example:5000/team/app")
    assert lines(log) == ["registry.example:5000/team/app"]
    assert [c.username for c in creds] == ["alice"]


def test_request_args_and_environment(bin_dir: Path, tmp_path: Path) -> None:
    echo = tmp_path / "echo.jsonl"
    p = plugins(
        bin_dir,
        provider(
            "echo-request",
            args=("get-credentials", "--v=5", "a b"),
            env={"ECHO_FILE": str(echo), "OVERRIDDEN": "from-config"},
        ),
        environ={"PATH": os.environ["PATH"], "KUBELET_VAR": "inherited", "OVERRIDDEN": "kubelet"},
    )
    creds, failures = lookup(p, "registry.example/app")
    assert failures == []
    assert [(c.username, c.password) for c in creds] == [("echo", "pw-node")]
    (record,) = records(echo)
    assert record["argv"] == ["get-credentials", "--v=5", "a b"]
    assert record["request"] == {
        "kind": "CredentialProviderRequest",
        "apiVersion": V1,
        "image": "registry.example/app",
    }
    assert record["env"]["KUBELET_VAR"] == "inherited"
    assert record["env"]["OVERRIDDEN"] == "from-config"


def test_environment_defaults_to_this_process(
    bin_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    echo = tmp_path / "echo.jsonl"
    monkeypatch.setenv("PULLWARDEN_TEST_VAR", "here")
    p = plugins(bin_dir, provider("echo-request", env={"ECHO_FILE": str(echo)}))
    lookup(p, "registry.example/app")
    assert records(echo)[0]["env"]["PULLWARDEN_TEST_VAR"] == "here"


@pytest.mark.parametrize(
    "api_version",
    ["credentialprovider.kubelet.k8s.io/v1alpha1", "credentialprovider.kubelet.k8s.io/v1beta1"],
)
def test_older_protocol_versions(bin_dir: Path, tmp_path: Path, api_version: str) -> None:
    echo = tmp_path / "echo.jsonl"
    p = plugins(
        bin_dir, provider("echo-request", env={"ECHO_FILE": str(echo)}, api_version=api_version)
    )
    creds, failures = lookup(p, "registry.example/app")
    assert failures == [] and len(creds) == 1
    assert records(echo)[0]["request"]["apiVersion"] == api_version


def test_all_plugins_share_one_keyring(bin_dir: Path) -> None:
    p = plugins(
        bin_dir,
        static(username="generic", password="g-pw"),
        static(
            "static-creds-2",
            username="specific",
            password="s-pw",
            env={"X": "1"},
        ),
        static("static-creds-2", match=("*.other",)),  # not consulted: no match
    )
    creds = p.keyring_for(None, None).lookup("registry.example/team/app")
    assert [c.username for c in creds] == ["generic", "specific"]


def test_keys_order_across_plugins(bin_dir: Path) -> None:
    # Spec §2.3: the index is one reverse-sorted list, whichever plugin a key came from.
    first = provider(
        "static-creds",
        args=("--username", "short", "--match", "registry.example"),
    )
    second = provider(
        "static-creds-2",
        args=("--username", "long", "--match", "registry.example/team"),
    )
    creds, _ = lookup(plugins(bin_dir, first, second), "registry.example/team/app")
    assert [c.username for c in creds] == ["long", "short"]


# --- failures ---------------------------------------------------------------------------------


FAILURES = [
    ("exit1", "the plugin exited with status 1: error: login failed password=<redacted> token"),
    ("secret-stdout-exit", "the plugin exited with status 2"),
    ("garbage", "the plugin's response is not valid JSON"),
    ("not-object", "the plugin's response is not a JSON object but a list"),
    (
        "wrong-api",
        'the response\'s apiVersion "credentialprovider.kubelet.k8s.io/v1beta1" does not match '
        "the request's credentialprovider.kubelet.k8s.io/v1",
    ),
    (
        "wrong-kind",
        'the response\'s kind "CredentialProviderRequest" is not CredentialProviderResponse',
    ),
    (
        "bad-cache-key",
        'the response\'s cacheKeyType "Pod" is not one of Image, Registry, Global: the response '
        "is not used",
    ),
    ("bad-duration", 'the response\'s cacheDuration "five minutes" is not a valid duration'),
    (
        "unknown-field",
        'cannot decode the plugin\'s response: unknown field auth["bad.example"].email',
    ),
    (
        "wrong-type",
        'cannot decode the plugin\'s response: auth["bad.example"].password must be a string, '
        "not number 12345",
    ),
    ("duplicate-field", "cannot decode the plugin's response: duplicate field cacheKeyType"),
    ("huge", "the plugin's response is larger than 1048576 bytes"),
    ("signal", "the plugin was killed by signal 15"),
]


@pytest.mark.parametrize(("mode", "message"), FAILURES, ids=[f[0] for f in FAILURES])
def test_a_failing_plugin_contributes_nothing(bin_dir: Path, mode: str, message: str) -> None:
    p = plugins(
        bin_dir,
        provider("bad-plugin", ("*.example",), args=(mode,)),
        static(),
    )
    creds, failures = lookup(p, "bad.example/app")
    assert [c.username for c in creds] == ["alice"]  # the other plugin still answers
    assert failures == [PluginFailure("bad-plugin", "bad.example/app", message)]
    assert SECRET not in repr(failures)


def test_a_hanging_plugin_and_its_children_are_killed(bin_dir: Path, tmp_path: Path) -> None:
    child_pid = tmp_path / "child.pid"
    p = plugins(
        bin_dir,
        provider("bad-plugin", args=("sleep-child",), env={"CHILD_PID": str(child_pid)}),
        static(),
        timeout=1.0,
    )
    start = time.monotonic()
    creds, failures = lookup(p, "registry.example/app")
    elapsed = time.monotonic() - start
    assert elapsed < 2.0
    assert [c.username for c in creds] == ["alice"]
    assert failures == [
        PluginFailure(
            "bad-plugin",
            "registry.example/app",
            "the plugin did not finish within 1s and was killed",
        )
    ]
    pid = int(child_pid.read_text(encoding="utf-8"))
    assert ends_within(pid, 2)


def test_a_plugin_that_sleeps_is_killed_within_the_timeout(bin_dir: Path) -> None:
    p = plugins(bin_dir, provider("bad-plugin", args=("sleep",)), timeout=0.5)
    start = time.monotonic()
    creds, failures = lookup(p, "registry.example/app")
    assert time.monotonic() - start < 1.5
    assert creds == [] and "did not finish within 0.5s" in failures[0].message


def test_default_timeout_is_the_kubelets_minute() -> None:
    assert DEFAULT_TIMEOUT == 60.0


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "plugin binary {bin}/ghost does not exist"),
        ("not-executable", "plugin binary {bin}/ghost is not executable"),
        ("directory", "plugin binary {bin}/ghost is not a regular file"),
        ("no-shebang", "cannot start the plugin: Exec format error"),
    ],
)
def test_binary_problems(bin_dir: Path, setup: str, message: str) -> None:
    ghost = bin_dir / "ghost"
    if setup == "not-executable":
        ghost.write_text("#!/bin/sh\n", encoding="utf-8")
        ghost.chmod(0o644)
    elif setup == "directory":
        ghost.mkdir()
    elif setup == "no-shebang":
        ghost.write_bytes(b"\x00\x01binary")
        ghost.chmod(0o755)
    creds, failures = lookup(plugins(bin_dir, provider("ghost")), "registry.example/app")
    assert creds == []
    assert [f.message for f in failures] == [message.format(bin=bin_dir)]


def test_an_unusable_environment_is_a_failure(bin_dir: Path) -> None:
    p = plugins(bin_dir, static(env={"A=B": "c"}))
    creds, failures = lookup(p, "registry.example/app")
    assert creds == []
    assert [f.message for f in failures] == [
        "cannot start the plugin: invalid environment variable"
    ]


def test_failures_are_logged_without_a_callback(
    bin_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    p = plugins(bin_dir, provider("bad-plugin", args=("exit1",)))
    with caplog.at_level(logging.DEBUG, logger="pullwarden.credentials"):
        assert p.keyring_for(None, None).lookup("registry.example/app") == []
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "bad-plugin" in warnings[0].getMessage()
    assert SECRET not in caplog.text


def test_stderr_is_scrubbed() -> None:
    token = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
    text = (
        f"\n  fatal: token={token} password: hunter2 Authorization: Bearer abc\n"
        "second line with more detail\n"
    )
    assert _scrub(text, (token,)) == (
        "fatal: token=<redacted> password: <redacted> Authorization: <redacted> <redacted>"
    )
    assert _scrub("key AKIAIOSFODNN7EXAMPLE0 rejected") == "key <redacted> rejected"
    assert _scrub("no such host registry.example") == "no such host registry.example"
    assert len(_scrub("x" * 1000)) <= 201


# --- caching ------------------------------------------------------------------------------------


def test_registry_key_runs_the_plugin_once(bin_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    p = plugins(bin_dir, static(log=log, key="Registry", duration="1h"))
    for image in ["registry.example/a", "registry.example/b", "registry.example/a"] * 3:
        creds, failures = lookup(p, image)
        assert failures == [] and [c.username for c in creds] == ["alice"]
    lookup(p, "other.example/a")
    assert lines(log) == ["registry.example/a", "other.example/a"]


def test_zero_duration_runs_every_time(bin_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    p = plugins(bin_dir, static(log=log, duration="0s", default=3600))
    for _ in range(3):
        creds, _ = lookup(p, "registry.example/a")
        assert len(creds) == 1
    assert len(lines(log)) == 3


def test_absent_duration_means_the_default(bin_dir: Path, tmp_path: Path) -> None:
    cached_log, uncached_log = tmp_path / "cached", tmp_path / "uncached"
    p = plugins(
        bin_dir,
        static(log=cached_log, default=60),
        static("static-creds-2", log=uncached_log, default=0),
    )
    for _ in range(3):
        lookup(p, "registry.example/a")
    assert len(lines(cached_log)) == 1
    assert len(lines(uncached_log)) == 3


def test_expiry_follows_the_injected_clock(bin_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    clock = FakeClock()
    p = plugins(bin_dir, static(log=log, duration="10s"), clock=clock.monotonic)
    lookup(p, "registry.example/a")
    clock.advance(10)  # still valid at the expiry instant, as in the kubelet
    lookup(p, "registry.example/a")
    assert len(lines(log)) == 1
    clock.advance(0.001)
    lookup(p, "registry.example/a")
    assert len(lines(log)) == 2
    clock.advance(5)
    lookup(p, "registry.example/a")
    assert len(lines(log)) == 2


def test_image_key_and_global_key(bin_dir: Path, tmp_path: Path) -> None:
    image_log, global_log = tmp_path / "image", tmp_path / "global"
    p = plugins(
        bin_dir,
        static(match=("*.example",), log=image_log, key="Image", duration="1h"),
        static("static-creds-2", match=("*.io",), log=global_log, key="Global", duration="1h"),
    )
    for image in ["registry.example/a", "registry.example/b", "registry.example/a"]:
        lookup(p, image)
    assert lines(image_log) == ["registry.example/a", "registry.example/b"]
    for image in ["quay.io/a", "ghcr.io/b", "quay.io/c"]:
        lookup(p, image)
    assert lines(global_log) == ["quay.io/a"]


def test_caches_are_per_provider(bin_dir: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    p = plugins(
        bin_dir,
        static(log=one, key="Global", duration="1h"),
        static("static-creds-2", log=two, key="Global", duration="1h"),
    )
    lookup(p, "registry.example/a")
    lookup(p, "registry.example/b")
    assert (len(lines(one)), len(lines(two))) == (1, 1)


def test_concurrent_lookups_run_the_plugin_once(bin_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "runs"
    p = plugins(bin_dir, static(log=log, duration="1h", env={"SLEEP": "0.5"}))
    results: list[list[TrackedCredential]] = []
    barrier = threading.Barrier(8)

    def worker() -> None:
        barrier.wait()
        results.append(p.keyring_for(None, None).lookup("registry.example/a"))

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 8 and all([c.username for c in r] == ["alice"] for r in results)
    assert len(lines(log)) == 1


def test_concurrent_failures_reach_every_caller(bin_dir: Path) -> None:
    p = plugins(bin_dir, provider("bad-plugin", args=("sleep",)), timeout=0.3)
    seen: list[PluginFailure] = []
    lock = threading.Lock()

    def record(failure: PluginFailure) -> None:
        with lock:
            seen.append(failure)

    threads = [
        threading.Thread(
            target=lambda: p.keyring_for(None, None, record).lookup("registry.example/a")
        )
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == 4 and {f.message for f in seen} == {
        "the plugin did not finish within 0.3s and was killed"
    }


def test_a_failure_is_not_cached(bin_dir: Path, tmp_path: Path) -> None:
    p = plugins(bin_dir, provider("bad-plugin", args=("garbage",), default=3600))
    assert len(lookup(p, "registry.example/a")[1]) == 1
    assert len(lookup(p, "registry.example/a")[1]) == 1


# --- service-account tokens (KEP-4412) ----------------------------------------------------------


@dataclass
class FakeTokens:
    """Tokens ``tok.<pod uid>.<audience>``; records each request."""

    calls: list[tuple[str, str, str]] = field(default_factory=list)
    fail: bool = False

    def token(self, *, pod: Pod, service_account: ServiceAccount, audience: str) -> str:
        self.calls.append((pod.uid, service_account.uid, audience))
        if self.fail:
            raise RuntimeError("issuer down: signing key tok.secret.material unreadable")
        return f"tok.{pod.uid}.{audience}"


def pod(uid: str = "pod-1", sa: str = "builder", namespace: str = "team-a") -> Pod:
    return Pod(uid=uid, namespace=namespace, name=f"web-{uid}", service_account_name=sa)


def account(
    name: str = "builder",
    uid: str = "sa-uid-1",
    namespace: str = "team-a",
    annotations: dict[str, str] | None = None,
) -> ServiceAccount:
    return ServiceAccount(uid=uid, namespace=namespace, name=name, annotations=annotations or {})


def echo_token_provider(
    echo: Path, token: TokenAttributes, *, duration: str = "1h", **env: str
) -> CredentialProvider:
    return provider(
        "echo-request",
        env={"ECHO_FILE": str(echo), "CACHE_KEY_TYPE": "Registry", "CACHE_DURATION": duration}
        | env,
        token=token,
    )


def pw_for(token: str) -> str:
    return "pw-" + hashlib.sha256(token.encode()).hexdigest()[:12]


def test_token_and_selected_annotations_reach_the_plugin(bin_dir: Path, tmp_path: Path) -> None:
    echo = tmp_path / "echo.jsonl"
    tokens = FakeTokens()
    attrs = token_mode(required=("example.com/role",), optional=("example.com/region", "x.io/y"))
    p = plugins(bin_dir, echo_token_provider(echo, attrs), tokens=tokens)
    sa = account(
        annotations={
            "example.com/role": "puller",
            "example.com/region": "eu",
            "unrelated.io/a": "b",
        }
    )
    creds, failures = lookup(p, "registry.example/app", pod(), sa)
    assert failures == []
    token = "tok.pod-1.registry.example"
    assert [(c.username, c.password, c.source) for c in creds] == [
        ("echo", pw_for(token), ServiceAccountSource("sa-uid-1", "team-a", "builder"))
    ]
    assert tokens.calls == [("pod-1", "sa-uid-1", "registry.example")]
    assert records(echo)[0]["request"] == {
        "kind": "CredentialProviderRequest",
        "apiVersion": V1,
        "image": "registry.example/app",
        "serviceAccountToken": token,
        "serviceAccountAnnotations": {"example.com/region": "eu", "example.com/role": "puller"},
    }


def test_cache_type_service_account_shares_across_pods_of_one_account(
    bin_dir: Path, tmp_path: Path
) -> None:
    echo = tmp_path / "echo.jsonl"
    p = plugins(
        bin_dir, echo_token_provider(echo, token_mode("ServiceAccount")), tokens=FakeTokens()
    )
    lookup(p, "registry.example/a", pod("pod-1"), account())
    creds, _ = lookup(p, "registry.example/b", pod("pod-2"), account())
    assert len(records(echo)) == 1
    # the cached credentials still name the pod's service account
    assert creds[0].source == ServiceAccountSource("sa-uid-1", "team-a", "builder")
    lookup(p, "registry.example/a", pod("pod-3", sa="other"), account("other", uid="sa-uid-2"))
    assert len(records(echo)) == 2
    # the same name re-created (a new UID) is another account
    lookup(p, "registry.example/a", pod("pod-1"), account(uid="sa-uid-3"))
    assert len(records(echo)) == 3
    # so are other values of the selected annotations
    attrs = token_mode("ServiceAccount", optional=("example.com/role",))
    q = plugins(bin_dir, echo_token_provider(echo, attrs), tokens=FakeTokens())
    lookup(q, "registry.example/a", pod(), account(annotations={"example.com/role": "a"}))
    lookup(q, "registry.example/a", pod(), account(annotations={"example.com/role": "a"}))
    lookup(q, "registry.example/a", pod(), account(annotations={"example.com/role": "b"}))
    assert len(records(echo)) == 5


def test_cache_type_token_keys_by_the_token(bin_dir: Path, tmp_path: Path) -> None:
    echo = tmp_path / "echo.jsonl"
    p = plugins(bin_dir, echo_token_provider(echo, token_mode("Token")), tokens=FakeTokens())
    lookup(p, "registry.example/a", pod("pod-1"), account())
    lookup(p, "registry.example/a", pod("pod-2"), account())
    lookup(p, "registry.example/b", pod("pod-1"), account())
    assert [r["request"]["serviceAccountToken"] for r in records(echo)] == [
        "tok.pod-1.registry.example",
        "tok.pod-2.registry.example",
    ]


def test_node_wide_and_token_credentials_are_cached_apart(bin_dir: Path, tmp_path: Path) -> None:
    echo = tmp_path / "echo.jsonl"
    attrs = token_mode(require=False)
    p = plugins(bin_dir, echo_token_provider(echo, attrs), tokens=FakeTokens())
    static_pod = pod("static", sa="")
    node, _ = lookup(p, "registry.example/a", static_pod, None)
    with_sa, _ = lookup(p, "registry.example/a", pod(), account())
    again, _ = lookup(p, "registry.example/a", static_pod, None)
    assert [c.source for c in node + with_sa + again] == [
        None,
        ServiceAccountSource("sa-uid-1", "team-a", "builder"),
        None,
    ]
    assert len(records(echo)) == 2


def test_required_annotation_missing_skips_the_plugin_quietly(
    bin_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    echo = tmp_path / "echo.jsonl"
    tokens = FakeTokens()
    attrs = token_mode(required=("example.com/role",))
    p = plugins(bin_dir, echo_token_provider(echo, attrs), static(), tokens=tokens)
    with caplog.at_level(logging.DEBUG, logger="pullwarden.credentials"):
        creds, failures = lookup(p, "registry.example/a", pod(), account())
    assert failures == [] and [c.username for c in creds] == ["alice"]
    assert records(echo) == [] and tokens.calls == []
    assert "lacks the required annotation example.com/role" in caplog.text


def test_no_service_account_with_require_is_a_failure(bin_dir: Path, tmp_path: Path) -> None:
    echo = tmp_path / "echo.jsonl"
    p = plugins(bin_dir, echo_token_provider(echo, token_mode()), tokens=FakeTokens())
    creds, failures = lookup(p, "registry.example/a", pod(sa=""), None)
    assert creds == [] and [f.message for f in failures] == [
        "the pod has no service account and the provider requires one "
        "(tokenAttributes.requireServiceAccount)"
    ]
    creds, failures = lookup(p, "registry.example/a", None, None)
    assert creds == [] and len(failures) == 1
    creds, failures = lookup(p, "registry.example/a", pod(), None)
    assert creds == [] and [f.message for f in failures] == [
        "service account team-a/builder not found"
    ]
    assert records(echo) == []


def test_no_service_account_without_require_runs_node_wide(bin_dir: Path, tmp_path: Path) -> None:
    echo = tmp_path / "echo.jsonl"
    tokens = FakeTokens()
    p = plugins(bin_dir, echo_token_provider(echo, token_mode(require=False)), tokens=tokens)
    creds, failures = lookup(p, "registry.example/a", pod(sa=""), None)
    assert failures == []
    assert [(c.password, c.source) for c in creds] == [("pw-node", None)]
    assert "serviceAccountToken" not in records(echo)[0]["request"]
    assert tokens.calls == []


def test_no_token_issuer_is_a_failure(bin_dir: Path, tmp_path: Path) -> None:
    echo = tmp_path / "echo.jsonl"
    p = plugins(bin_dir, echo_token_provider(echo, token_mode()), static())
    creds, failures = lookup(p, "registry.example/a", pod(), account())
    assert [c.username for c in creds] == ["alice"]
    assert [f.message for f in failures] == [
        "no service account token issuer is configured (the provider has tokenAttributes)"
    ]
    # a provider without tokenAttributes never needs the issuer
    assert lookup(plugins(bin_dir, static()), "registry.example/a", pod(), account())[1] == []


def test_token_issuer_errors_are_failures(bin_dir: Path, tmp_path: Path) -> None:
    echo = tmp_path / "echo.jsonl"
    p = plugins(bin_dir, echo_token_provider(echo, token_mode()), tokens=FakeTokens(fail=True))
    creds, failures = lookup(p, "registry.example/a", pod(), account())
    assert creds == []
    (failure,) = failures
    assert failure.message.startswith(
        "cannot get a token for service account team-a/builder: RuntimeError: issuer down"
    )


def test_an_echoed_token_needs_cache_type_token(bin_dir: Path, tmp_path: Path) -> None:
    echo = tmp_path / "echo.jsonl"
    token = "tok.pod-1.registry.example"
    refused = plugins(
        bin_dir,
        echo_token_provider(echo, token_mode("ServiceAccount"), ECHO_PASSWORD="token"),
        tokens=FakeTokens(),
    )
    creds, failures = lookup(refused, "registry.example/a", pod(), account())
    assert creds == []
    assert [f.message for f in failures] == [
        "the plugin returned the service account token as a password, which needs "
        "tokenAttributes.cacheType Token"
    ]
    allowed = plugins(
        bin_dir,
        echo_token_provider(echo, token_mode("Token"), ECHO_PASSWORD="token"),
        tokens=FakeTokens(),
    )
    creds, failures = lookup(allowed, "registry.example/a", pod(), account())
    assert failures == [] and [c.password for c in creds] == [token]


def test_a_failing_plugin_never_shows_the_token(bin_dir: Path) -> None:
    p = plugins(
        bin_dir,
        provider("bad-plugin", args=("exit1",), token=token_mode()),
        tokens=FakeTokens(),
    )
    _creds, failures = lookup(p, "registry.example/a", pod(), account())
    (failure,) = failures
    assert "tok.pod-1" not in failure.message and SECRET not in failure.message
    assert failure.message.startswith("the plugin exited with status 1: error: login failed")


# --- reprs --------------------------------------------------------------------------------------


def test_reprs_hold_no_secret(bin_dir: Path) -> None:
    p = plugins(
        bin_dir,
        static(env={"STATIC_PASSWORD": SECRET}),  # configured env values are secrets too
        tokens=FakeTokens(),
    )
    keyring = p.keyring_for(pod(), account())
    creds = keyring.lookup("registry.example/a")
    assert [c.password for c in creds] == [SECRET]
    for text in (repr(p), repr(keyring), repr(creds), repr(p.config)):
        assert SECRET not in text
    assert repr(p) == f"CredentialPlugins(providers=('static-creds',), bin_dir={str(bin_dir)!r})"


def test_the_public_names() -> None:
    import pullwarden.credentials as credentials

    for name in (
        "CredentialPlugins",
        "CredentialProvider",
        "CredentialProviderConfig",
        "PluginFailure",
        "ServiceAccountTokenSource",
        "TokenAttributes",
        "load_credential_provider_config",
    ):
        assert name in credentials.__all__ and hasattr(credentials, name)

    def check(tokens: FakeTokens) -> credentials.ServiceAccountTokenSource:
        return tokens  # FakeTokens satisfies the protocol (mypy checks this)

    assert check(FakeTokens()) is not None


def test_plugins_run_while_grpc_is_busy(tmp_path: Path) -> None:
    """A node on containerd runs its plugins while gRPC is busy in the same process; the runner
    starts them without fork handlers (subprocess's vfork path), so that grpcio cannot abort
    one before it execs (see ``busy_grpc``): every run answers."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    answer = {
        "kind": "CredentialProviderResponse",
        "apiVersion": V1,
        "cacheKeyType": "Registry",
        "auth": {"*.example": {"username": "alice", "password": "alice-pw"}},
    }
    script = bin_dir / "sh-creds"
    script.write_text(f"#!/bin/sh\ncat >/dev/null\necho '{json.dumps(answer)}'\n")
    script.chmod(0o755)
    p = plugins(bin_dir, provider("sh-creds", default=0.0))
    with busy_grpc():
        results = [lookup(p, "registry.example/a") for _ in range(200)]
    assert [(len(creds), failures) for creds, failures in results] == [(1, [])] * 200
