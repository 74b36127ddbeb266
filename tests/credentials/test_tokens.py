"""The service-account token issuer (KEP-4412 tokens without an API server) and its verifier.

Every claim is read back with PyJWT directly, and the key id is recomputed here from the key the
test generated, so the issuer is checked against the format rather than against itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

import pullwarden
from pullwarden.credentials._tokens import (
    DEFAULT_TOKEN_LIFETIME,
    MIN_TOKEN_LIFETIME,
    TokenIssuer,
    TokenVerificationError,
    verify_token,
)
from pullwarden.errors import ConfigError, CredentialError
from pullwarden.objects import Pod, ServiceAccount

ISSUER = "https://issuer.pullwarden.test"
AUDIENCE = "registry.example.test"
NOW = 1_750_000_000.25  # a fixed instant; tokens carry whole seconds
POD = Pod(uid="pod-uid-1", namespace="team-a", name="builder-0", service_account_name="builder")
SA = ServiceAccount(uid="sa-uid-1", namespace="team-a", name="builder")

NO_ENCRYPTION = serialization.NoEncryption()
PEM = serialization.Encoding.PEM
PKCS1 = serialization.PrivateFormat.TraditionalOpenSSL  # PKCS#1 for RSA, SEC1 for EC
PKCS8 = serialization.PrivateFormat.PKCS8

# Independent of the code under test: no PyJWT verification options that depend on wall time.
NO_TIME_CHECKS: Any = {"verify_exp": False, "verify_nbf": False, "verify_iat": False}


@dataclass(frozen=True)
class Key:
    name: str
    private: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey
    pem: bytes
    alg: str

    @property
    def public_pem(self) -> bytes:
        return self.private.public_key().public_bytes(
            PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, fmt: Any) -> bytes:
    return key.private_bytes(PEM, fmt, NO_ENCRYPTION)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def keys(rsa_key: rsa.RSAPrivateKey) -> dict[str, Key]:
    p256 = ec.generate_private_key(ec.SECP256R1())
    p384 = ec.generate_private_key(ec.SECP384R1())
    p521 = ec.generate_private_key(ec.SECP521R1())
    # `openssl ecparam -genkey` writes an EC PARAMETERS block before the key: it is skipped.
    params = b"-----BEGIN EC PARAMETERS-----\nBgUrgQQAIw==\n-----END EC PARAMETERS-----\n"
    found = [
        Key("rsa-pkcs1", rsa_key, _pem(rsa_key, PKCS1), "RS256"),
        Key("rsa-pkcs8", rsa_key, _pem(rsa_key, PKCS8), "RS256"),
        Key("p256-sec1", p256, _pem(p256, PKCS1), "ES256"),
        Key("p256-pkcs8", p256, _pem(p256, PKCS8), "ES256"),
        Key("p384-sec1", p384, _pem(p384, PKCS1), "ES384"),
        Key("p384-pkcs8", p384, _pem(p384, PKCS8), "ES384"),
        Key("p521-sec1-params", p521, params + _pem(p521, PKCS1), "ES512"),
    ]
    return {k.name: k for k in found}


KEY_NAMES = [
    "rsa-pkcs1",
    "rsa-pkcs8",
    "p256-sec1",
    "p256-pkcs8",
    "p384-sec1",
    "p384-pkcs8",
    "p521-sec1-params",
]


def _write(tmp_path: Path, data: bytes, name: str = "sa.key") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def _issuer(tmp_path: Path, key: Key, now: float = NOW, **kwargs: Any) -> TokenIssuer:
    return TokenIssuer(_write(tmp_path, key.pem), ISSUER, clock=lambda: now, **kwargs)


def _expected_kid(key: Key) -> str:
    der = key.private.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).decode().rstrip("=")


def _segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    def part(s: str) -> dict[str, Any]:
        return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))

    header, payload, _ = token.split(".")
    return part(header), part(payload)


# --- issuing --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", KEY_NAMES)
def test_token_has_the_api_servers_header_and_claims(
    tmp_path: Path, keys: dict[str, Key], name: str
) -> None:
    key = keys[name]
    issuer = _issuer(tmp_path, key)
    token = issuer.token(pod=POD, service_account=SA, audience=AUDIENCE)

    header, _ = _segments(token)
    kid = _expected_kid(key)
    assert header == {"alg": key.alg, "kid": kid}  # as kube-apiserver: no "typ"
    assert len(kid) == 43 and "=" not in kid
    assert issuer.algorithm == key.alg
    assert issuer.key_id == kid
    assert (issuer.issuer, issuer.signing_key_file) == (ISSUER, tmp_path / "sa.key")

    claims = jwt.decode(
        token,
        key.private.public_key(),
        algorithms=[key.alg],
        audience=AUDIENCE,
        issuer=ISSUER,
        options=NO_TIME_CHECKS,
    )
    jti = claims.pop("jti")
    assert uuid.UUID(jti).version == 4
    assert claims == {
        "aud": [AUDIENCE],
        "exp": 1_750_003_600,
        "iat": 1_750_000_000,
        "iss": ISSUER,
        "kubernetes.io": {
            "namespace": "team-a",
            "pod": {"name": "builder-0", "uid": "pod-uid-1"},
            "serviceaccount": {"name": "builder", "uid": "sa-uid-1"},
        },
        "nbf": 1_750_000_000,
        "sub": "system:serviceaccount:team-a:builder",
    }


def test_public_key_pem_verifies_the_tokens(tmp_path: Path, keys: dict[str, Key]) -> None:
    for name in ("rsa-pkcs8", "p384-sec1"):
        key = keys[name]
        issuer = _issuer(tmp_path, key)
        assert issuer.public_key_pem() == key.public_pem
        token = issuer.token(pod=POD, service_account=SA, audience=AUDIENCE)
        loaded = serialization.load_pem_public_key(issuer.public_key_pem())
        assert isinstance(loaded, rsa.RSAPublicKey | ec.EllipticCurvePublicKey)
        jwt.decode(token, loaded, algorithms=[key.alg], audience=AUDIENCE, options=NO_TIME_CHECKS)


def test_every_pod_gets_its_own_token_and_jti(tmp_path: Path, keys: dict[str, Key]) -> None:
    issuer = _issuer(tmp_path, keys["p256-sec1"])
    pods = [replace(POD, uid=f"pod-uid-{i}", name=f"builder-{i}") for i in range(20)]
    tokens = [issuer.token(pod=p, service_account=SA, audience=AUDIENCE) for p in pods]
    assert len({_segments(t)[1]["jti"] for t in tokens}) == 20
    other = issuer.token(pod=POD, service_account=SA, audience="another.audience")
    assert other not in tokens


def test_a_token_is_reused_until_80_percent_of_its_life(
    tmp_path: Path, keys: dict[str, Key]
) -> None:
    """As the kubelet's token manager does: a plugin cache keyed by the token can then hit."""
    now = [1000.0]
    issuer = TokenIssuer(
        _write(tmp_path, keys["p256-sec1"].pem), ISSUER, clock=lambda: now[0], lifetime=1000
    )
    first = issuer.token(pod=POD, service_account=SA, audience=AUDIENCE)
    now[0] = 1799.0
    assert issuer.token(pod=POD, service_account=SA, audience=AUDIENCE) == first
    now[0] = 1800.0
    renewed = issuer.token(pod=POD, service_account=SA, audience=AUDIENCE)
    assert renewed != first and _segments(renewed)[1]["iat"] == 1800
    recreated = replace(SA, uid="sa-uid-2")  # a re-created service account: a new token
    assert issuer.token(pod=POD, service_account=recreated, audience=AUDIENCE) != renewed


def test_lifetime_and_clock(tmp_path: Path, keys: dict[str, Key]) -> None:
    issuer = _issuer(tmp_path, keys["p256-sec1"], now=1000.7, lifetime=MIN_TOKEN_LIFETIME)
    _, claims = _segments(issuer.token(pod=POD, service_account=SA, audience=AUDIENCE))
    assert (claims["iat"], claims["nbf"], claims["exp"]) == (1000, 1000, 1600)
    assert DEFAULT_TOKEN_LIFETIME == 3600
    assert issuer.lifetime == 600


def test_node_claim_when_configured(tmp_path: Path, keys: dict[str, Key]) -> None:
    key = keys["p256-sec1"]
    with_uid = _issuer(tmp_path, key, node_name="node-1", node_uid="node-uid-1")
    name_only = _issuer(tmp_path, key, node_name="node-1")
    for issuer, node in (
        (with_uid, {"name": "node-1", "uid": "node-uid-1"}),
        (name_only, {"name": "node-1"}),
    ):
        _, claims = _segments(issuer.token(pod=POD, service_account=SA, audience=AUDIENCE))
        assert claims["kubernetes.io"]["node"] == node
    with pytest.raises(ConfigError, match="node"):
        _issuer(tmp_path, key, node_uid="node-uid-1")


def test_the_audience_is_the_one_asked_for(tmp_path: Path, keys: dict[str, Key]) -> None:
    issuer = _issuer(tmp_path, keys["p256-sec1"])
    token = issuer.token(pod=POD, service_account=SA, audience="other.example")
    assert _segments(token)[1]["aud"] == ["other.example"]


def test_binding_rules(tmp_path: Path, keys: dict[str, Key]) -> None:
    issuer = _issuer(tmp_path, keys["p256-sec1"])
    other_ns = Pod(uid="u", namespace="team-b", name="p", service_account_name="builder")
    other_sa = Pod(uid="u", namespace="team-a", name="p", service_account_name="deployer")
    for pod in (other_ns, other_sa):
        with pytest.raises(ValueError, match="cannot bind"):
            issuer.token(pod=pod, service_account=SA, audience=AUDIENCE)
    with pytest.raises(ValueError, match="audience"):
        issuer.token(pod=POD, service_account=SA, audience="")
    with pytest.raises(ValueError, match="uid"):
        issuer.token(pod=POD, service_account=ServiceAccount("", "team-a", "builder"), audience="a")
    with pytest.raises(ValueError, match="uid"):
        issuer.token(
            pod=Pod("", "team-a", "p", service_account_name="builder"),
            service_account=SA,
            audience="a",
        )
    # A pod without a service account name runs as "default", as the API server defaults it.
    default = ServiceAccount(uid="d", namespace="team-a", name="default")
    token = issuer.token(pod=Pod("u", "team-a", "p"), service_account=default, audience="a")
    assert _segments(token)[1]["sub"] == "system:serviceaccount:team-a:default"


def test_repr_shows_no_key_material(tmp_path: Path, keys: dict[str, Key]) -> None:
    key = keys["rsa-pkcs1"]
    issuer = _issuer(tmp_path, key)
    text = repr(issuer)
    assert ISSUER in text and issuer.key_id in text and "RS256" in text
    assert "PRIVATE" not in text and "PUBLIC" not in text
    for line in key.pem.splitlines()[1:-1]:
        assert line.decode() not in text
    assert not hasattr(issuer, "__dict__")


# --- verifying ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["rsa-pkcs1", "p256-pkcs8", "p384-sec1", "p521-sec1-params"])
def test_verify_token_round_trip_and_expiry(
    tmp_path: Path, keys: dict[str, Key], name: str
) -> None:
    key = keys[name]
    issuer = _issuer(tmp_path, key)
    token = issuer.token(pod=POD, service_account=SA, audience=AUDIENCE)
    pem = issuer.public_key_pem()

    def at(t: float) -> dict[str, Any]:
        return verify_token(token, pem, audience=AUDIENCE, issuer=ISSUER, clock=lambda: t)

    iat, exp = 1_750_000_000, 1_750_003_600
    assert at(iat)["sub"] == "system:serviceaccount:team-a:builder"
    assert at(exp - 0.001)["kubernetes.io"]["pod"]["uid"] == "pod-uid-1"
    with pytest.raises(TokenVerificationError, match="expired"):
        at(exp)
    with pytest.raises(TokenVerificationError, match="not valid yet"):
        at(iat - 1)
    # With leeway (kube-apiserver allows a minute) both edges move.
    verify_token(token, pem, audience=AUDIENCE, issuer=ISSUER, clock=lambda: exp + 59, leeway=60)
    verify_token(token, pem, audience=AUDIENCE, issuer=ISSUER, clock=lambda: iat - 59, leeway=60)


def test_verify_rejects_wrong_audience_issuer_and_key(tmp_path: Path, keys: dict[str, Key]) -> None:
    key = keys["p256-sec1"]
    issuer = _issuer(tmp_path, key)
    token = issuer.token(pod=POD, service_account=SA, audience=AUDIENCE)
    pem = issuer.public_key_pem()
    clock = lambda: NOW  # noqa: E731

    with pytest.raises(TokenVerificationError, match="audience"):
        verify_token(token, pem, audience="someone-else", issuer=ISSUER, clock=clock)
    with pytest.raises(TokenVerificationError, match="issued by"):
        verify_token(token, pem, audience=AUDIENCE, issuer="https://other", clock=clock)
    # Another key of the same kind: the kid says it is not that key.
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    other_pem = other.public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(TokenVerificationError, match="different key"):
        verify_token(token, other_pem, audience=AUDIENCE, issuer=ISSUER, clock=clock)
    # A key of another kind verifies another algorithm: refused before any signature check.
    with pytest.raises(TokenVerificationError, match="ES256"):
        verify_token(
            token, keys["rsa-pkcs1"].public_pem, audience=AUDIENCE, issuer=ISSUER, clock=clock
        )
    with pytest.raises(TokenVerificationError, match="not a PEM public key"):
        verify_token(token, b"not a key", audience=AUDIENCE, issuer=ISSUER, clock=clock)
    ed = ed25519.Ed25519PrivateKey.generate().public_key()
    ed_pem = ed.public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(TokenVerificationError, match=r"not an RSA or EC .*\(Ed25519\)"):
        verify_token(token, ed_pem, audience=AUDIENCE, issuer=ISSUER, clock=clock)


def _claims(**overrides: Any) -> dict[str, Any]:
    claims: dict[str, Any] = {
        "aud": [AUDIENCE],
        "exp": 1_750_003_600,
        "iat": 1_750_000_000,
        "nbf": 1_750_000_000,
        "iss": ISSUER,
        "jti": str(uuid.uuid4()),
        "kubernetes.io": {
            "namespace": "team-a",
            "pod": {"name": "builder-0", "uid": "pod-uid-1"},
            "serviceaccount": {"name": "builder", "uid": "sa-uid-1"},
        },
        "sub": "system:serviceaccount:team-a:builder",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def test_verify_rejects_tampered_and_forged_tokens(tmp_path: Path, keys: dict[str, Key]) -> None:
    key = keys["rsa-pkcs8"]
    issuer = _issuer(tmp_path, key)
    token = issuer.token(pod=POD, service_account=SA, audience=AUDIENCE)
    pem = issuer.public_key_pem()

    def check(forged: str, match: str) -> None:
        with pytest.raises(TokenVerificationError, match=match) as caught:
            verify_token(forged, pem, audience=AUDIENCE, issuer=ISSUER, clock=lambda: NOW)
        assert forged not in str(caught.value) and token not in str(caught.value)
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, CredentialError)

    header, payload, signature = token.split(".")
    # Another service account's claims under the original signature.
    claims = _segments(token)[1]
    claims["sub"] = "system:serviceaccount:team-a:admin"
    claims["kubernetes.io"]["serviceaccount"]["name"] = "admin"
    swapped = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    check(f"{header}.{swapped}.{signature}", "signature")
    flipped = signature[:10] + ("A" if signature[10] != "A" else "B") + signature[11:]
    check(f"{header}.{payload}.{flipped}", "signature")
    # alg=none, and HS256 (the classic confusion: an HMAC keyed with the public key's text).
    check(jwt.encode(_claims(), "", algorithm="none"), "'none'")
    hs = jwt.api_jws.PyJWS()
    hs_token = hs.encode(json.dumps(_claims()).encode(), b"x" * 32, algorithm="HS256")
    check(hs_token, "HS256")
    # Signed by another key without a kid: only the signature can tell.
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    check(jwt.encode(_claims(), other, algorithm="RS256"), "signature")
    check("garbage", "compact JWS")
    check(f"{header}.bm90IGpzb24.{signature}", "signature")
    check(hs.encode(b"not json", key.private, algorithm="RS256"), "decoded")
    check(f"{header}.{payload}", "compact JWS|decoded")


def test_verify_checks_the_service_account_claims(tmp_path: Path, keys: dict[str, Key]) -> None:
    key = keys["p256-sec1"]

    def verify(claims: dict[str, Any]) -> dict[str, Any]:
        token = jwt.encode(claims, key.private, algorithm="ES256")
        return verify_token(
            token, key.public_pem, audience=AUDIENCE, issuer=ISSUER, clock=lambda: NOW
        )

    assert verify(_claims(aud=AUDIENCE))["aud"] == AUDIENCE  # RFC 7519 allows a single string
    with pytest.raises(TokenVerificationError, match="subject"):
        verify(_claims(sub="system:serviceaccount:team-a:admin"))
    with pytest.raises(TokenVerificationError, match=r"kubernetes\.io"):
        verify(_claims(**{"kubernetes.io": None}))
    with pytest.raises(TokenVerificationError, match="uid"):
        verify(
            _claims(
                **{"kubernetes.io": {"namespace": "team-a", "serviceaccount": {"name": "builder"}}}
            )
        )
    for name in ("exp", "nbf", "iat"):
        with pytest.raises(TokenVerificationError, match=name):
            verify(_claims(**{name: None}))
    with pytest.raises(TokenVerificationError, match="future"):
        verify(_claims(iat=NOW + 100, nbf=NOW - 100))


# --- bad configuration ----------------------------------------------------------------------


def _assert_names_file(err: ConfigError, path: Path, secret: bytes = b"") -> None:
    message = str(err)
    assert str(path) in message and err.source == str(path)
    for line in secret.splitlines():
        if len(line) >= 16 and not line.startswith(b"-----"):
            assert line.decode() not in message
    assert "MII" not in message  # the start of any DER key in base64


def _bad_key_files(tmp_path: Path) -> list[tuple[str, bytes, str]]:
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    k1 = ec.generate_private_key(ec.SECP256K1())
    ed = ed25519.Ed25519PrivateKey.generate()
    p256 = ec.generate_private_key(ec.SECP256R1())
    encrypted = serialization.BestAvailableEncryption(b"pw")
    public = p256.public_key().public_bytes(PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    broken = _pem(p256, PKCS8).replace(b"M", b"N", 3)
    return [
        ("empty", b"", "not a PEM private key"),
        ("text", b"this is not a key\n", "not a PEM private key"),
        ("public key only", public, "found PEM blocks PUBLIC KEY"),
        ("corrupt", broken, "no usable private key"),
        ("small rsa", _pem(small, PKCS1), "1024 bits; at least 2048"),
        ("small rsa pkcs8", _pem(small, PKCS8), "1024 bits"),
        ("secp256k1", _pem(k1, PKCS8), r"unsupported key \(EC secp256k1\)"),
        ("secp256k1 sec1", _pem(k1, PKCS1), "EC secp256k1"),
        ("ed25519", ed.private_bytes(PEM, PKCS8, NO_ENCRYPTION), r"unsupported key \(Ed25519\)"),
        ("encrypted pkcs8", p256.private_bytes(PEM, PKCS8, encrypted), "encrypted"),
        ("encrypted pkcs1", small.private_bytes(PEM, PKCS1, encrypted), "encrypted"),
    ]


def test_bad_key_files_name_the_file_and_no_key_bytes(tmp_path: Path) -> None:
    for i, (label, data, match) in enumerate(_bad_key_files(tmp_path)):
        path = _write(tmp_path, data, f"key-{i}.pem")
        with pytest.raises(ConfigError, match=match) as caught:
            TokenIssuer(path, ISSUER)
        _assert_names_file(caught.value, path, data)
        assert isinstance(caught.value, ValueError), label


def test_missing_directory_and_unreadable_key_files(tmp_path: Path, keys: dict[str, Key]) -> None:
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigError, match="cannot be read: No such file") as caught:
        TokenIssuer(missing, ISSUER)
    _assert_names_file(caught.value, missing)
    huge = _write(tmp_path, b"#" * ((1 << 20) + 1), "huge.pem")
    with pytest.raises(ConfigError, match="larger than") as caught:
        TokenIssuer(huge, ISSUER)
    _assert_names_file(caught.value, huge)
    with pytest.raises(ConfigError, match="is a directory") as caught:
        TokenIssuer(tmp_path, ISSUER)
    _assert_names_file(caught.value, tmp_path)
    if os.geteuid() != 0:  # root reads any file
        path = _write(tmp_path, keys["p256-sec1"].pem, "locked.pem")
        path.chmod(0)
        with pytest.raises(ConfigError, match="Permission denied") as caught:
            TokenIssuer(path, ISSUER)
        _assert_names_file(caught.value, path, keys["p256-sec1"].pem)


def test_issuer_and_lifetime_are_checked(tmp_path: Path, keys: dict[str, Key]) -> None:
    path = _write(tmp_path, keys["p256-sec1"].pem)
    with pytest.raises(ConfigError, match="issuer"):
        TokenIssuer(path, "")
    for lifetime in (599.0, float(1 << 32) + 1, math.nan, math.inf):
        with pytest.raises(ConfigError, match="lifetime"):
            TokenIssuer(path, ISSUER, lifetime=lifetime)
    assert TokenIssuer(path, ISSUER, lifetime=float(1 << 32)).lifetime == float(1 << 32)


# --- lazy imports ---------------------------------------------------------------------------


def test_importing_the_package_imports_neither_pyjwt_nor_cryptography() -> None:
    src = str(Path(pullwarden.__file__).resolve().parent.parent)
    code = (
        "import sys, pullwarden, pullwarden.credentials, pullwarden.credentials._tokens\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('jwt', 'cryptography'))\n"
        "assert not heavy, heavy\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
