"""Credential provider plugins (KEP-2133) and their service-account tokens (KEP-4412), for real.

``pullwarden run`` drives real plugin processes (the two examples in
``examples/credential-providers`` and a few broken ones written here) against the real
token-auth docker-registry.  The service-account plugin trades the pod's token at the test
token server's ``POST /exchange``, which checks the token with the issuer's public key.  Every
answer is judged by the registry's access log, the exchange log, the plugins' own execution logs
and the record files, never by pullwarden's word alone.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from pullwarden.credentials import TokenIssuer
from pullwarden.objects import pod_from_manifest, service_account_from_manifest
from pullwarden.records import FileRecordStore, ImagePullCredentials
from tests.integration.infra import ALICE, BOB, Pki, Registry, Seeded, TokenServer
from tests.support import alive, ends_within

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "credential-providers"
STATIC = "static-credentials"
EXCHANGE = "sa-token-exchange"
PROVIDER_API = "credentialprovider.kubelet.k8s.io/v1"
CONFIG_API = "kubelet.config.k8s.io/v1"

IMAGE = "private/alice:v1"  # alice only
OTHER_IMAGE = "ns/hello:v1"  # alice and bob

ISSUER = "https://issuer.pullwarden.test"
AUDIENCE = "registry.pullwarden.test"
ROLE = "registry.pullwarden.test/role"  # the annotation the SA provider requires

# A plugin that hangs is given up after this long (the kubelet's one minute) ...
PLUGIN_TIMEOUT = 60.0
# ... and the run must end this soon after it.
SLACK = 8.0

# Any compact JWS or JWT: a base64url JSON header ("eyJ") then a dot and a JSON payload.
JWT_TEXT = re.compile(r"eyJ[A-Za-z0-9_-]{4,}\.eyJ[A-Za-z0-9_-]*")


# --------------------------------------------------------------------------------------------
# fixtures


@dataclass(frozen=True)
class SigningKey:
    """The service-account issuer's key: the private PEM file and the public key."""

    path: Path
    private: rsa.RSAPrivateKey
    public_pem: bytes


@pytest.fixture
def signing_key(tmp_path: Path) -> SigningKey:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "sa-signer.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return SigningKey(path, key, public)


@pytest.fixture
def exchange_server(pki: Pki, signing_key: SigningKey) -> Iterator[TokenServer]:
    """A token server of this test's own whose /exchange trusts ``signing_key``.

    team-a/builder and team-a/unannotated are alice; nothing else is mapped.
    """
    server = TokenServer(pki)
    server.configure_exchange(signing_key.public_pem, issuer=ISSUER, audience=AUDIENCE)
    server.exchange_accounts[("team-a", "builder")] = ALICE
    server.exchange_accounts[("team-a", "unannotated")] = ALICE
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def bin_dir(tmp_path: Path) -> Path:
    """The plugin directory: the two example plugins under their provider names."""
    directory = tmp_path / "bin"
    directory.mkdir()
    for name in (STATIC, EXCHANGE):
        shutil.copy2(EXAMPLES / name, directory / name)
    return directory


@pytest.fixture
def password_file(tmp_path: Path) -> Path:
    path = tmp_path / "alice.password"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(ALICE[1] + "\n")
    return path


# --------------------------------------------------------------------------------------------
# manifests and configs


def secret(ns: str, name: str, host: str, creds: tuple[str, str]) -> dict[str, Any]:
    auth = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
    config = json.dumps({"auths": {host: {"auth": auth}}}).encode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"namespace": ns, "name": name},
        "data": {".dockerconfigjson": base64.b64encode(config).decode()},
    }


def service_account(
    ns: str, name: str, uid: str, annotations: dict[str, str] | None = None
) -> dict[str, Any]:
    meta: dict[str, Any] = {"namespace": ns, "name": name, "uid": uid}
    if annotations:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta}


def pod(
    ns: str, name: str, image: str, policy: str, *, secret_name: str = "", sa: str = ""
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "c", "image": image, "imagePullPolicy": policy}]
    }
    if secret_name:
        spec["imagePullSecrets"] = [{"name": secret_name}]
    if sa:
        spec["serviceAccountName"] = sa
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": ns, "name": name, "uid": str(uuid.uuid4())},
        "spec": spec,
    }


def provider(
    name: str,
    match_images: Sequence[str],
    args: Sequence[str] = (),
    *,
    cache: str = "1m",
    token: dict[str, Any] | None = None,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "name": name,
        "matchImages": list(match_images),
        "defaultCacheDuration": cache,
        "apiVersion": PROVIDER_API,
        "args": list(args),
    }
    if token is not None:
        entry["tokenAttributes"] = token
    return entry


def token_attributes(
    cache_type: str = "ServiceAccount", required: Sequence[str] = (ROLE,)
) -> dict[str, Any]:
    return {
        "serviceAccountTokenAudience": AUDIENCE,
        "cacheType": cache_type,
        "requireServiceAccount": True,
        "requiredServiceAccountAnnotationKeys": list(required),
    }


def static_provider(
    registry: Registry, password_file: Path, *extra: str, cache: str = "1m"
) -> dict[str, Any]:
    """static-credentials giving alice for any port of 127.0.0.1."""
    args = ["--match", "127.0.0.1:*", "--username", ALICE[0], "--password-file"]
    return provider(STATIC, [registry.host], [*args, str(password_file), *extra], cache=cache)


def exchange_provider(
    registry: Registry, server: TokenServer, *extra: str, cache_type: str = "ServiceAccount"
) -> dict[str, Any]:
    url = f"http://127.0.0.1:{server.port}/exchange"
    return provider(
        EXCHANGE,
        [registry.host],
        ["--exchange-url", url, *extra],
        token=token_attributes(cache_type),
    )


def write_config(path: Path, providers: list[dict[str, Any]]) -> Path:
    document = {"apiVersion": CONFIG_API, "kind": "CredentialProviderConfig"}
    path.write_text(yaml.safe_dump(document | {"providers": providers}, sort_keys=False))
    return path


# --------------------------------------------------------------------------------------------
# running the CLI


@dataclass(frozen=True)
class Run:
    code: int
    data: dict[str, Any]
    stdout: str
    stderr: str
    seconds: float

    def outcomes(self) -> dict[str, dict[str, Any]]:
        if "pods" not in self.data:
            pytest.fail(f"run exited {self.code} without a result:\n{self.stderr}")
        return {p["name"]: p["containers"][0] for p in self.data["pods"]}

    def warnings(self, reason: str = "CredentialProviderFailed") -> list[str]:
        """The Warning events with ``reason`` (the ``events`` of ``-o json``), one line each."""
        return [
            f"{e['type']}  {e['reason']}  {e['object']}  {e['message']}"
            for e in self.data.get("events", [])
            if e["type"] == "Warning" and e["reason"] == reason
        ]


def run(
    root: Path,
    docs: list[dict[str, Any]],
    *,
    config: Path | None = None,
    bin_dir: Path | None = None,
    key: SigningKey | None = None,
    extra: Sequence[str] = (),
    timeout: float = 120,
) -> Run:
    manifest = root.parent / f"manifest-{len(list(root.parent.glob('manifest-*')))}.yaml"
    manifest.write_text(yaml.safe_dump_all(docs))
    args = ["run", "-f", str(manifest), "--root", str(root), "-o", "json", "--no-node-credentials"]
    if config is not None:
        args += ["--image-credential-provider-config", str(config)]
    if bin_dir is not None:
        args += ["--image-credential-provider-bin-dir", str(bin_dir)]
    if key is not None:
        args += ["--service-account-signing-key-file", str(key.path)]
        args += ["--service-account-issuer", ISSUER]
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "pullwarden.cli", *args, *extra],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "HOME": str(root.parent)},
    )
    seconds = time.monotonic() - started
    assert "Traceback" not in result.stderr, result.stderr
    try:
        data = json.loads(result.stdout) if result.stdout.strip() else {}
    except ValueError:
        pytest.fail(f"run -o json printed no JSON:\n{result.stdout}\n{result.stderr}")
    return Run(result.returncode, data, result.stdout, result.stderr, seconds)


def assert_no_secrets(*texts: str) -> None:
    """No password of the test accounts and no token of any kind in ``texts``."""
    for text in texts:
        assert ALICE[1] not in text and BOB[1] not in text
        assert JWT_TEXT.search(text) is None, "a token was printed"


def mapping(root: Path, seeded: Seeded, image: str) -> ImagePullCredentials | None:
    """The record's credentials for ``image``'s repository (None: no record or no entry)."""
    store = FileRecordStore(root, migrate=False, create=False)
    image_id = {
        IMAGE: seeded.images.alice.config_digest,
        OTHER_IMAGE: seeded.images.hello.config_digest,
    }[image.split("/", 1)[1]]
    record = store.get_pulled_record(image_id)
    if record is None:
        return None
    return record.credential_mapping.get(image.rsplit(":", 1)[0])


def executions(log: Path) -> int:
    """How many times a plugin given ``--log log`` ran."""
    return len(log.read_text().splitlines()) if log.exists() else 0


def manifest_requests(registry: Registry, since: int, status: int | None = None) -> int:
    return sum(
        registry.count_requests(method, "/manifests/", since=since, status=status)
        for method in ("HEAD", "GET")
    )


# --------------------------------------------------------------------------------------------
# the example plugins on their own (no pullwarden involved)


def plugin(
    name: str, request: dict[str, Any] | str, *args: str
) -> subprocess.CompletedProcess[str]:
    text = request if isinstance(request, str) else json.dumps(request)
    return subprocess.run(
        [str(EXAMPLES / name), *args],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def plugin_request(image: str, api: str = PROVIDER_API, **fields: Any) -> dict[str, Any]:
    return {"apiVersion": api, "kind": "CredentialProviderRequest", "image": image, **fields}


def mint(
    key: rsa.RSAPrivateKey,
    *,
    ns: str = "team-a",
    name: str = "builder",
    uid: str = "sa-uid-1",
    pod_name: str = "p",
    audience: str = AUDIENCE,
    issuer: str = ISSUER,
    lifetime: int = 600,
    replace: dict[str, Any] | None = None,
) -> str:
    """A service-account token shaped as kube-apiserver's, signed with ``key``."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "aud": [audience],
        "exp": now + lifetime,
        "iat": now,
        "nbf": now,
        "iss": issuer,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": {
            "namespace": ns,
            "pod": {"name": pod_name, "uid": str(uuid.uuid4())},
            "serviceaccount": {"name": name, "uid": uid},
        },
        "sub": f"system:serviceaccount:{ns}:{name}",
    }
    claims.update(replace or {})
    return jwt.encode(claims, key, algorithm="RS256", headers={"kid": "test"})


def test_static_credentials_answers_in_the_request_api_version(password_file: Path) -> None:
    args = ["--match", "127.0.0.1:*", "--match", "*.example.test/team"]
    args += ["--username", "alice", "--password-file", str(password_file)]
    for api in (PROVIDER_API, "credentialprovider.kubelet.k8s.io/v1beta1"):
        result = plugin(
            STATIC,
            plugin_request("127.0.0.1:5000/private/alice:v1", api),
            *args,
            "--cache-duration",
            "5m",
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {
            "apiVersion": api,
            "kind": "CredentialProviderResponse",
            "cacheKeyType": "Registry",
            "cacheDuration": "5m",
            "auth": {"127.0.0.1:5000": {"username": "alice", "password": ALICE[1]}},
        }
        assert result.stderr == ""
    # path prefix, glob label; no duration → none in the answer; another key type
    result = plugin(
        STATIC,
        plugin_request("r.example.test/team/app@sha256:" + "0" * 64),
        *args,
        "--cache-key-type",
        "Image",
    )
    answer = json.loads(result.stdout)
    assert answer["auth"] == {"*.example.test/team": {"username": "alice", "password": ALICE[1]}}
    assert answer["cacheKeyType"] == "Image" and "cacheDuration" not in answer
    # no pattern matches (label count, other port-less host, path) → a valid, empty answer
    for image in ("example.test/team/app", "127.0.0.1/x", "r.example.test/other/app:v1"):
        result = plugin(STATIC, plugin_request(image), *args)
        assert result.returncode == 0 and json.loads(result.stdout)["auth"] == {}, image


def test_static_credentials_from_the_environment(password_file: Path, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    env = {
        **os.environ,
        "STATIC_CREDENTIALS_MATCH": "127.0.0.1:5000",
        "STATIC_CREDENTIALS_USERNAME": "alice",
        "STATIC_CREDENTIALS_PASSWORD_FILE": str(password_file),
        "STATIC_CREDENTIALS_CACHE_KEY_TYPE": "Global",
        "STATIC_CREDENTIALS_CACHE_DURATION": "0s",
        "STATIC_CREDENTIALS_LOG": str(log),
    }
    result = subprocess.run(
        [str(EXAMPLES / STATIC)],
        input=json.dumps(plugin_request("127.0.0.1:5000/a/b:v1")),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
        env=env,
    )
    answer = json.loads(result.stdout)
    assert (answer["cacheKeyType"], answer["cacheDuration"]) == ("Global", "0s")
    assert answer["auth"]["127.0.0.1:5000"]["username"] == "alice"
    assert executions(log) == 1 and ALICE[1] not in log.read_text()


@pytest.mark.parametrize(
    ("stdin", "args", "words"),
    [
        ("not json", (), "not JSON"),
        (json.dumps({"kind": "Other"}), (), "CredentialProviderRequest"),
        (json.dumps(plugin_request("x/y", "credentialprovider.kubelet.k8s.io/v2")), (), "v2"),
        (json.dumps(plugin_request("")), (), "no image"),
        (json.dumps(plugin_request("a.io/b")), ("--cache-key-type", "Pod"), "cache-key-type"),
        (json.dumps(plugin_request("a.io/b")), ("--cache-duration", "soon"), "duration"),
        (json.dumps(plugin_request("a.io/b")), ("--password-file", "/nonexistent"), "password"),
    ],
    ids=["garbage", "wrong-kind", "unknown-api", "no-image", "key-type", "duration", "no-file"],
)
def test_static_credentials_errors(
    password_file: Path, stdin: str, args: tuple[str, ...], words: str
) -> None:
    base = ["--match", "a.io", "--username", "alice", "--password-file", str(password_file)]
    result = plugin(STATIC, stdin, *base, *args)
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("static-credentials: ") and words in result.stderr
    assert_no_secrets(result.stderr)


def test_sa_token_exchange_trades_the_token(
    exchange_server: TokenServer, signing_key: SigningKey
) -> None:
    url = f"http://127.0.0.1:{exchange_server.port}/exchange"
    token = mint(signing_key.private, uid="uid-b", pod_name="builder-pod")
    request = plugin_request(
        "127.0.0.1:5000/private/alice:v1",
        serviceAccountToken=token,
        serviceAccountAnnotations={ROLE: "puller"},
    )
    result = plugin(EXCHANGE, request, "--exchange-url", url, "--cache-duration", "30s")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == {
        "apiVersion": PROVIDER_API,
        "kind": "CredentialProviderResponse",
        "cacheKeyType": "Registry",
        "cacheDuration": "30s",
        "auth": {"127.0.0.1:5000": {"username": "alice", "password": ALICE[1]}},
    }
    (seen,) = exchange_server.exchanges
    assert (seen.status, seen.namespace, seen.service_account, seen.uid, seen.pod) == (
        200,
        "team-a",
        "builder",
        "uid-b",
        "builder-pod",
    )
    assert (seen.account, seen.annotations) == ("alice", ((ROLE, "puller"),))
    # --registry names the auth key; a v1alpha1 request gets a v1alpha1 answer
    alpha = "credentialprovider.kubelet.k8s.io/v1alpha1"
    request = plugin_request("docker.io/library/x", alpha, serviceAccountToken=token)
    result = plugin(EXCHANGE, request, "--exchange-url", url, "--registry", "mirror.test:5000")
    answer = json.loads(result.stdout)
    assert answer["apiVersion"] == alpha and list(answer["auth"]) == ["mirror.test:5000"]


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("no-token", "no serviceAccountToken"),
        ("unmapped", "(403): service account team-a/intruder is not mapped"),
        ("expired", "(401): token expired"),
        ("wrong-audience", "(401): wrong audience"),
        ("wrong-issuer", "(401): wrong issuer"),
        ("wrong-key", "(401): bad signature"),
        ("unreachable", "cannot reach the exchange"),
    ],
)
def test_sa_token_exchange_refusals(
    exchange_server: TokenServer, signing_key: SigningKey, case: str, words: str
) -> None:
    url = f"http://127.0.0.1:{exchange_server.port}/exchange"
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token = {
        "no-token": "",
        "unmapped": mint(signing_key.private, name="intruder"),
        "expired": mint(signing_key.private, lifetime=-60),
        "wrong-audience": mint(signing_key.private, audience="someone-else"),
        "wrong-issuer": mint(signing_key.private, issuer="https://elsewhere"),
        "wrong-key": mint(other_key),
        "unreachable": mint(signing_key.private),
    }[case]
    if case == "unreachable":
        url = "http://127.0.0.1:9/exchange"
    fields = {"serviceAccountToken": token} if token else {}
    result = plugin(
        EXCHANGE, plugin_request("127.0.0.1:5000/x:v1", **fields), "--exchange-url", url
    )
    assert result.returncode == 1
    assert result.stdout == ""
    assert result.stderr.startswith("sa-token-exchange: ") and words in result.stderr
    assert_no_secrets(result.stderr)
    called = case not in ("no-token", "unreachable")
    assert [e.status for e in exchange_server.exchanges] == (
        [403 if case == "unmapped" else 401] if called else []
    )


def test_exchange_endpoint(exchange_server: TokenServer, signing_key: SigningKey) -> None:
    """The endpoint itself: JSON, form and Bearer bodies, claims checks, uid-pinned mappings."""
    url = f"http://127.0.0.1:{exchange_server.port}/exchange"

    def post(data: bytes, headers: dict[str, str]) -> tuple[int, dict[str, Any]]:
        request = urllib.request.Request(url, data=data, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read())

    token = mint(signing_key.private)
    good = {"username": "alice", "password": ALICE[1]}
    assert post(json.dumps({"token": token}).encode(), {"Content-Type": "application/json"}) == (
        200,
        good,
    )
    form = {"Content-Type": "application/x-www-form-urlencoded"}
    assert post(f"token={token}".encode(), form) == (200, good)
    assert post(b"", {"Authorization": f"Bearer {token}"}) == (200, good)
    assert post(b"", {}) == (400, {"error": "no service-account token"})
    assert post(b"[1]", {"Content-Type": "application/json"})[0] == 400
    # the subject must be the kubernetes.io claim's service account
    forged = mint(signing_key.private, replace={"sub": "system:serviceaccount:team-a:admin"})
    assert exchange_server.exchange(forged)[0] == 401
    no_claim = mint(signing_key.private, replace={"kubernetes.io": None})
    assert exchange_server.exchange(no_claim) == (
        401,
        {"error": "no kubernetes.io service-account claim"},
    )
    no_exp = jwt.encode(
        {"iss": ISSUER, "aud": [AUDIENCE], "sub": "system:serviceaccount:team-a:builder"},
        signing_key.private,
        algorithm="RS256",
    )
    assert exchange_server.exchange(no_exp)[0] == 401
    # a (namespace, name, uid) entry beats (namespace, name)
    exchange_server.exchange_accounts[("team-a", "builder", "uid-bob")] = BOB
    assert (
        exchange_server.exchange(mint(signing_key.private, uid="uid-bob"))[1]["username"] == "bob"
    )
    assert (
        exchange_server.exchange(mint(signing_key.private, uid="uid-x"))[1]["username"] == "alice"
    )
    statuses = [e.status for e in exchange_server.exchanges]
    assert statuses == [200, 200, 200, 400, 401, 401, 401, 200, 200]
    assert all(e.reason == "" for e in exchange_server.exchanges if e.status == 200)


def test_exchange_accepts_the_issuers_tokens(
    exchange_server: TokenServer, signing_key: SigningKey
) -> None:
    """pullwarden's own TokenIssuer and the exchange agree on the token's shape and key."""
    issuer = TokenIssuer(signing_key.path, ISSUER)
    account = service_account_from_manifest(service_account("team-a", "builder", "uid-i"))
    bound = pod_from_manifest(pod("team-a", "p", "127.0.0.1:1/x:v1", "Always", sa="builder"))
    token = issuer.token(pod=bound, service_account=account, audience=AUDIENCE)
    status, body = exchange_server.exchange(token)
    assert (status, body["username"]) == (200, "alice")
    (seen,) = exchange_server.exchanges
    assert (seen.uid, seen.pod) == ("uid-i", "p")
    elsewhere = issuer.token(pod=bound, service_account=account, audience="elsewhere")
    assert exchange_server.exchange(elsewhere) == (401, {"error": "wrong audience"})


# --------------------------------------------------------------------------------------------
# 1. a node-wide plugin


def test_node_wide_plugin_credentials_any_pod_reuses(
    seeded: Seeded, tmp_path: Path, bin_dir: Path, password_file: Path
) -> None:
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    root = tmp_path / "node"
    log = tmp_path / "static.log"
    config = write_config(
        tmp_path / "providers.yaml",
        [static_provider(registry, password_file, "--log", str(log))],
    )
    first = run(root, [pod("a", "first", image, "IfNotPresent")], config=config, bin_dir=bin_dir)
    got = first.outcomes()["first"]
    assert first.code == 0, first.stderr
    assert (got["outcome"], got["verifiedBy"], got["pulled"]) == ("Ready", "pull", True)
    assert got["credential"] == {"kind": "node", "provider": STATIC}
    assert executions(log) == 1
    creds = mapping(root, seeded, image)
    assert creds == ImagePullCredentials(node_pods_accessible=True)
    assert_no_secrets(first.stdout, first.stderr)

    mark = registry.mark()
    # a restarted node without the plugin, then with it: any pod may use the image
    bare = run(root, [pod("z", "stranger", image, "IfNotPresent")])
    again = run(root, [pod("y", "another", image, "IfNotPresent")], config=config, bin_dir=bin_dir)
    for result, name in ((bare, "stranger"), (again, "another")):
        got = result.outcomes()[name]
        assert result.code == 0, result.stderr
        assert (got["outcome"], got["verifiedBy"], got["pulled"]) == ("Ready", "nodeWide", False)
    assert registry.access_log(since=mark) == []
    # credentials are only looked up when a record cannot answer (spec §2.6): no plugin run
    assert executions(log) == 1


# --------------------------------------------------------------------------------------------
# 2. a service-account token plugin


def builder(uid: str = "uid-builder-1") -> dict[str, Any]:
    return service_account("team-a", "builder", uid, {ROLE: "puller"})


def test_sa_plugin_records_the_account_and_only_it_reuses(
    seeded: Seeded,
    tmp_path: Path,
    bin_dir: Path,
    signing_key: SigningKey,
    exchange_server: TokenServer,
) -> None:
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    root = tmp_path / "node"
    config = write_config(
        tmp_path / "providers.yaml", [exchange_provider(registry, exchange_server)]
    )
    sa_docs = [builder(), service_account("team-a", "other", "uid-other", {ROLE: "puller"})]

    first = run(
        root,
        [*sa_docs, pod("team-a", "b1", image, "IfNotPresent", sa="builder")],
        config=config,
        bin_dir=bin_dir,
        key=signing_key,
    )
    got = first.outcomes()["b1"]
    assert first.code == 0, first.stderr
    assert (got["outcome"], got["verifiedBy"], got["pulled"]) == ("Ready", "pull", True)
    assert got["credential"] == {
        "kind": "serviceAccount",
        "namespace": "team-a",
        "name": "builder",
        "provider": EXCHANGE,
    }
    creds = mapping(root, seeded, image)
    assert creds is not None and not creds.node_pods_accessible and not creds.kubernetes_secrets
    assert [(a.uid, a.namespace, a.name) for a in creds.kubernetes_service_accounts] == [
        ("uid-builder-1", "team-a", "builder")
    ]
    (seen,) = exchange_server.exchanges
    assert (seen.status, seen.namespace, seen.service_account, seen.uid, seen.pod) == (
        200,
        "team-a",
        "builder",
        "uid-builder-1",
        "b1",
    )
    assert seen.annotations == ((ROLE, "puller"),)
    assert_no_secrets(first.stdout, first.stderr)

    mark = registry.mark()
    same = run(
        root,
        [*sa_docs, pod("team-a", "b2", image, "IfNotPresent", sa="builder")],
        config=config,
        bin_dir=bin_dir,
        key=signing_key,
    )
    got = same.outcomes()["b2"]
    assert same.code == 0, same.stderr
    assert (got["outcome"], got["verifiedBy"], got["pulled"]) == ("Ready", "serviceAccount", False)
    assert registry.access_log(since=mark) == []
    assert_no_secrets(same.stdout, same.stderr)

    # another service account: the exchange refuses it, so it has no credentials → denied
    mark = registry.mark()
    exchanges = len(exchange_server.exchanges)
    other = run(
        root,
        [*sa_docs, pod("team-a", "o1", image, "IfNotPresent", sa="other")],
        config=config,
        bin_dir=bin_dir,
        key=signing_key,
    )
    got = other.outcomes()["o1"]
    assert other.code == 1
    assert (got["outcome"], got["verifiedBy"]) == ("ErrImagePull", "")
    assert manifest_requests(registry, mark, status=200) == 0
    assert manifest_requests(registry, mark, status=401) > 0  # it had to ask, anonymously
    assert [(e.status, e.service_account) for e in exchange_server.exchanges[exchanges:]] == [
        (403, "other")
    ]
    assert any(EXCHANGE in line for line in other.warnings()), other.stderr
    assert_no_secrets(other.stdout, other.stderr)
    creds = mapping(root, seeded, image)
    assert creds is not None and len(creds.kubernetes_service_accounts) == 1


def test_sa_plugin_recreated_account_must_reverify(
    seeded: Seeded,
    tmp_path: Path,
    bin_dir: Path,
    signing_key: SigningKey,
    exchange_server: TokenServer,
) -> None:
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    root = tmp_path / "node"
    config = write_config(
        tmp_path / "providers.yaml", [exchange_provider(registry, exchange_server)]
    )
    first = run(
        root,
        [builder(), pod("team-a", "b1", image, "IfNotPresent", sa="builder")],
        config=config,
        bin_dir=bin_dir,
        key=signing_key,
    )
    assert first.code == 0, first.stderr

    mark = registry.mark()
    recreated = run(
        root,
        [builder("uid-builder-2"), pod("team-a", "b3", image, "IfNotPresent", sa="builder")],
        config=config,
        bin_dir=bin_dir,
        key=signing_key,
    )
    got = recreated.outcomes()["b3"]
    assert recreated.code == 0, recreated.stderr
    assert (got["outcome"], got["verifiedBy"]) == ("Ready", "pull")
    assert manifest_requests(registry, mark, status=200) > 0  # the registry was asked again
    assert exchange_server.exchanges[-1].uid == "uid-builder-2"
    creds = mapping(root, seeded, image)
    assert creds is not None
    assert {a.uid for a in creds.kubernetes_service_accounts} == {"uid-builder-1", "uid-builder-2"}


def test_sa_plugin_skipped_without_the_required_annotation(
    seeded: Seeded,
    tmp_path: Path,
    bin_dir: Path,
    signing_key: SigningKey,
    exchange_server: TokenServer,
) -> None:
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    root = tmp_path / "node"
    log = tmp_path / "exchange.log"
    config = write_config(
        tmp_path / "providers.yaml",
        [exchange_provider(registry, exchange_server, "--log", str(log))],
    )
    # mapped by the exchange, but without the annotation the provider requires
    docs = [
        service_account("team-a", "unannotated", "uid-u", {"unrelated": "x"}),
        pod("team-a", "u1", image, "IfNotPresent", sa="unannotated"),
    ]
    mark = registry.mark()
    result = run(root, docs, config=config, bin_dir=bin_dir, key=signing_key)
    got = result.outcomes()["u1"]
    assert result.code == 1
    assert (got["outcome"], got["credential"]) == ("ErrImagePull", None)
    # it tried without credentials (anonymous), was refused, and nobody was asked for a token
    assert manifest_requests(registry, mark, status=401) > 0
    assert manifest_requests(registry, mark, status=200) == 0
    assert result.warnings() == []  # skipping is quiet, as in the kubelet
    assert exchange_server.exchanges == []
    assert executions(log) == 0
    assert mapping(root, seeded, image) is None
    assert_no_secrets(result.stdout, result.stderr)


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("no-issuer", "no service account token issuer is configured"),
        ("unknown-service-account", "service account team-a/builder not found"),
    ],
)
def test_sa_plugin_without_a_token_contributes_nothing(
    seeded: Seeded,
    tmp_path: Path,
    bin_dir: Path,
    signing_key: SigningKey,
    exchange_server: TokenServer,
    case: str,
    words: str,
) -> None:
    """No issuer flags, or a pod whose ServiceAccount is not among the manifests."""
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    root = tmp_path / "node"
    log = tmp_path / "exchange.log"
    config = write_config(
        tmp_path / "providers.yaml",
        [exchange_provider(registry, exchange_server, "--log", str(log))],
    )
    docs = [builder()] if case == "no-issuer" else []
    docs.append(pod("team-a", "b1", image, "IfNotPresent", sa="builder"))
    key = None if case == "no-issuer" else signing_key
    result = run(root, docs, config=config, bin_dir=bin_dir, key=key)
    assert result.code == 1
    assert result.outcomes()["b1"]["outcome"] == "ErrImagePull"
    (warning,) = result.warnings()
    assert EXCHANGE in warning and words in warning, warning
    assert exchange_server.exchanges == [] and executions(log) == 0
    assert mapping(root, seeded, image) is None


# --------------------------------------------------------------------------------------------
# 3. the plugin cache, through the CLI


@pytest.mark.parametrize(
    ("key_type", "duration", "default", "runs"),
    [
        ("Registry", "5m", "1m", 1),
        ("Global", "5m", "1m", 1),
        ("Image", "5m", "1m", 2),
        ("Registry", "0s", "1m", 4),
        ("Registry", None, "0s", 4),
        ("Registry", None, "5m", 1),
    ],
    ids=["registry", "global", "image", "zero", "default-zero", "default-5m"],
)
def test_plugin_cache(
    seeded: Seeded,
    tmp_path: Path,
    bin_dir: Path,
    password_file: Path,
    key_type: str,
    duration: str | None,
    default: str,
    runs: int,
) -> None:
    """Four pulls (Always) of two repositories of one registry in one run."""
    registry = seeded.registries["token"]
    log = tmp_path / "static.log"
    extra = ["--log", str(log), "--cache-key-type", key_type]
    if duration is not None:
        extra += ["--cache-duration", duration]
    config = write_config(
        tmp_path / "providers.yaml",
        [static_provider(registry, password_file, *extra, cache=default)],
    )
    images = [seeded.ref("token", i) for i in (IMAGE, OTHER_IMAGE, IMAGE, OTHER_IMAGE)]
    pods = [pod(f"ns{n}", f"p{n}", image, "Always") for n, image in enumerate(images)]
    result = run(tmp_path / "node", pods, config=config, bin_dir=bin_dir)
    assert result.code == 0, result.stderr
    assert {(c["outcome"], c["verifiedBy"]) for c in result.outcomes().values()} == {
        ("Ready", "pull")
    }
    assert executions(log) == runs


@pytest.mark.parametrize(("cache_type", "exchanges"), [("ServiceAccount", 1), ("Token", 2)])
def test_sa_plugin_cache(
    seeded: Seeded,
    tmp_path: Path,
    bin_dir: Path,
    signing_key: SigningKey,
    exchange_server: TokenServer,
    cache_type: str,
    exchanges: int,
) -> None:
    """Two pods of one SA: one exchange when cached by account, one per pod's token otherwise."""
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    config = write_config(
        tmp_path / "providers.yaml",
        [
            exchange_provider(
                registry,
                exchange_server,
                "--cache-duration",
                "5m",
                cache_type=cache_type,
            )
        ],
    )
    docs = [builder()] + [pod("team-a", f"b{n}", image, "Always", sa="builder") for n in (1, 2)]
    result = run(tmp_path / "node", docs, config=config, bin_dir=bin_dir, key=signing_key)
    assert result.code == 0, result.stderr
    assert [e.status for e in exchange_server.exchanges] == [200] * exchanges
    assert len({e.pod for e in exchange_server.exchanges}) == exchanges


# --------------------------------------------------------------------------------------------
# 4. plugins that misbehave


RESPONSE = {
    "kind": "CredentialProviderResponse",
    "cacheKeyType": "Registry",
    "cacheDuration": "5m",
}

# Python bodies of the broken plugins; HOST is replaced by the registry's host.  Each appends to
# its log first, and some carry alice's real password, which must never be used or shown.
BAD_PLUGINS = {
    "exit-1": "sys.stderr.write('cannot reach the metadata service\\n'); sys.exit(1)",
    "garbage": (
        'sys.stdout.write(\'{"kind": "CredentialProviderResponse", "auth": {"HOST": '
        '{"username": "alice", "password": "' + ALICE[1] + "\"')"
    ),
    "wrong-api-version": (
        "json.dump(dict(RESPONSE, apiVersion='credentialprovider.kubelet.k8s.io/v1beta1', "
        "auth={'HOST': {'username': 'alice', 'password': '" + ALICE[1] + "'}}), sys.stdout)"
    ),
    "bad-cache-key-type": (
        "json.dump(dict(RESPONSE, apiVersion=request['apiVersion'], cacheKeyType='Pod', "
        "auth={'HOST': {'username': 'alice', 'password': '" + ALICE[1] + "'}}), sys.stdout)"
    ),
    "echoes-the-token": (
        "sys.stderr.write(json.dumps(request)); sys.stdout.write(json.dumps(request)); sys.exit(3)"
    ),
}


def write_bad_plugin(bin_dir: Path, body: str, registry: Registry, log: Path) -> Path:
    path = bin_dir / "bad-plugin"
    path.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys, time\n"
        f"RESPONSE = {RESPONSE!r}\n"
        f"with open({str(log)!r}, 'a') as log:\n"
        "    log.write(f'{os.getpid()}\\n')\n"
        "request = json.load(sys.stdin)\n" + body.replace("HOST", registry.host) + "\n"
    )
    path.chmod(0o755)
    return path


@pytest.mark.parametrize("case", list(BAD_PLUGINS))
def test_bad_plugin_contributes_nothing(
    seeded: Seeded, tmp_path: Path, bin_dir: Path, signing_key: SigningKey, case: str
) -> None:
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    root = tmp_path / "node"
    log = tmp_path / "bad.log"
    write_bad_plugin(bin_dir, BAD_PLUGINS[case], registry, log)
    token = token_attributes(required=()) if case == "echoes-the-token" else None
    config = write_config(
        tmp_path / "providers.yaml", [provider("bad-plugin", [registry.host], token=token)]
    )
    docs = [
        service_account("a", "default", "uid-a"),
        service_account("b", "default", "uid-b"),
        secret("a", "alice-cred", registry.host, ALICE),
        pod("a", "with-secret", image, "IfNotPresent", secret_name="alice-cred"),
        pod("b", "without", image, "IfNotPresent"),
    ]
    result = run(root, docs, config=config, bin_dir=bin_dir, key=signing_key)
    got = result.outcomes()
    assert result.code == 1
    assert (got["with-secret"]["outcome"], got["with-secret"]["verifiedBy"]) == ("Ready", "pull")
    # the plugin's credentials (where it sent any) were not used for the pod without a secret
    assert got["without"]["outcome"] == "ErrImagePull"
    assert executions(log) == 2  # it was asked, once per pod
    warnings = result.warnings()
    assert len(warnings) == 2 and all("bad-plugin" in line for line in warnings), result.stderr
    assert_no_secrets(result.stdout, result.stderr)
    creds = mapping(root, seeded, image)
    assert creds is not None
    assert not creds.node_pods_accessible and not creds.kubernetes_service_accounts
    assert [s.name for s in creds.kubernetes_secrets] == ["alice-cred"]


def test_hanging_plugin_is_given_up(seeded: Seeded, tmp_path: Path, bin_dir: Path) -> None:
    registry = seeded.registries["token"]
    image = seeded.ref("token", IMAGE)
    root = tmp_path / "node"
    log = tmp_path / "bad.log"
    write_bad_plugin(bin_dir, "sys.stdout.flush(); time.sleep(3600)", registry, log)
    config = write_config(tmp_path / "providers.yaml", [provider("bad-plugin", [registry.host])])
    docs = [
        secret("a", "alice-cred", registry.host, ALICE),
        pod("a", "with-secret", image, "IfNotPresent", secret_name="alice-cred"),
    ]
    try:
        result = run(root, docs, config=config, bin_dir=bin_dir, timeout=PLUGIN_TIMEOUT + 60)
        got = result.outcomes()["with-secret"]
        assert result.code == 0, result.stderr
        assert (got["outcome"], got["verifiedBy"]) == ("Ready", "pull")
        assert result.seconds < PLUGIN_TIMEOUT + SLACK, f"took {result.seconds:.1f} s"
        assert result.seconds >= PLUGIN_TIMEOUT - 1, "the plugin was not waited for"
        assert len(result.warnings()) == 1 and "bad-plugin" in result.warnings()[0]
        creds = mapping(root, seeded, image)
        assert creds is not None and [s.name for s in creds.kubernetes_secrets] == ["alice-cred"]
        assert not creds.node_pods_accessible
        # and the plugin process did not outlive the run
        (pid,) = (int(line) for line in log.read_text().split())
        assert ends_within(pid, 5), "the hung plugin was left running"
    finally:
        for line in log.read_text().split() if log.exists() else ():
            if alive(int(line)):
                os.kill(int(line), signal.SIGKILL)


# --------------------------------------------------------------------------------------------
# 5. configurations the kubelet would refuse


def _bad_configs(host: str) -> dict[str, tuple[list[dict[str, Any]], str]]:
    good = provider(STATIC, [host])
    token = token_attributes()
    return {
        "duplicate-names": ([good, provider(STATIC, ["other.test"])], "name"),
        "no-match-images": ([{k: v for k, v in good.items() if k != "matchImages"}], "matchImages"),
        "bad-match-image": ([provider(STATIC, ["127.0.0.1:*"])], "matchImages"),
        "no-default-cache-duration": (
            [{k: v for k, v in good.items() if k != "defaultCacheDuration"}],
            "defaultCacheDuration",
        ),
        "bad-api-version": (
            [good | {"apiVersion": "credentialprovider.kubelet.k8s.io/v9"}],
            "apiVersion",
        ),
        "bad-cache-type": ([good | {"tokenAttributes": token | {"cacheType": "Pod"}}], "cacheType"),
        "no-audience": (
            [
                good
                | {
                    "tokenAttributes": {
                        k: v for k, v in token.items() if k != "serviceAccountTokenAudience"
                    }
                }
            ],
            "serviceAccountTokenAudience",
        ),
        "required-keys-without-required-sa": (
            [good | {"tokenAttributes": token | {"requireServiceAccount": False}}],
            "requiredServiceAccountAnnotationKeys",
        ),
        "key-both-required-and-optional": (
            [good | {"tokenAttributes": token | {"optionalServiceAccountAnnotationKeys": [ROLE]}}],
            ROLE,
        ),
    }


BAD_CONFIG_CASES = list(_bad_configs("127.0.0.1:5000"))


@pytest.mark.parametrize("case", BAD_CONFIG_CASES)
def test_bad_provider_config_exit_2(tmp_path: Path, bin_dir: Path, case: str) -> None:
    providers, field = _bad_configs("127.0.0.1:5000")[case]
    config = write_config(tmp_path / "providers.yaml", providers)
    root = tmp_path / "node"
    result = run(
        root, [pod("a", "p", "127.0.0.1:5000/x:v1", "IfNotPresent")], config=config, bin_dir=bin_dir
    )
    assert result.code == 2, result.stderr
    assert result.stderr.startswith("error: ")
    assert config.name in result.stderr and field in result.stderr, result.stderr
    assert not root.exists() or not any(root.rglob("*"))


def test_bad_file_in_a_config_directory_is_named(tmp_path: Path, bin_dir: Path) -> None:
    directory = tmp_path / "providers.d"
    directory.mkdir()
    write_config(directory / "10-good.yaml", [provider(STATIC, ["127.0.0.1:5000"])])
    bad = {"apiVersion": CONFIG_API, "kind": "CredentialProviderConfig", "providers": []}
    (directory / "20-bad.json").write_text(
        json.dumps(bad | {"providers": [provider(EXCHANGE, [])]})
    )
    (directory / "README.txt").write_text("not a config, ignored\n")
    root = tmp_path / "node"
    result = run(
        root,
        [pod("a", "p", "127.0.0.1:5000/x:v1", "IfNotPresent")],
        config=directory,
        bin_dir=bin_dir,
    )
    assert result.code == 2, result.stderr
    assert "20-bad.json" in result.stderr and "matchImages" in result.stderr
    assert "10-good.yaml" not in result.stderr
    assert not root.exists() or not any(root.rglob("*"))
