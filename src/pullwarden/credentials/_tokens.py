"""Service-account tokens for credential provider plugins (KEP-4412), from a configured issuer.

A kubelet asks the API server for a token bound to the pod (``TokenRequest`` with the provider's
audience and a ``boundObjectRef`` to the pod) and hands it to the plugin.  pullwarden has no API
server, so :class:`TokenIssuer` plays that part: it signs the same token the API server would,
with a key the operator configures, and a plugin or token server verifies it with the public key
(:meth:`TokenIssuer.public_key_pem`, or :func:`verify_token`).

**The token** is a compact JWS (a JWT), as kube-apiserver issues it (``pkg/serviceaccount``:
``claims.go`` builds the claims, ``jwt.go`` signs them; the page "Managing Service Accounts",
section "Schema for service account private claims", shows a decoded one)::

    header   {"alg": "RS256" | "ES256" | "ES384" | "ES512", "kid": <key id>}   (no "typ")
    payload  {"aud": [<audience>],                      a list, here of one element
              "exp": <iat + lifetime>, "iat": <now>, "nbf": <now>,   whole seconds
              "iss": <issuer>,
              "jti": <a random UUID>,                   (GA since Kubernetes 1.32)
              "kubernetes.io": {"namespace": <ns>,
                                "node": {"name", "uid"},         only when configured
                                "pod": {"name", "uid"},
                                "serviceaccount": {"name", "uid"}},
              "sub": "system:serviceaccount:<ns>:<name>"}

**The key id** is kube-apiserver's ``keyIDFromPublicKey``: the SHA-256 of the DER
SubjectPublicKeyInfo of the public key, base64url without padding (43 characters).

**The algorithm** follows the key, never a setting (``signerFromRSAPrivateKey`` /
``signerFromECDSAPrivateKey``): RS256 for RSA, ES256/ES384/ES512 for EC keys on P-256/P-384/P-521;
any other key type or curve is refused, as the API server refuses it.  RSA keys under 2048 bits
are refused too: that floor is pullwarden's own.

**The signing key file** is read as the API server reads ``--service-account-signing-key-file``
(client-go ``keyutil.ParsePrivateKeyPEM``): the first PEM block labelled ``RSA PRIVATE KEY``
(PKCS#1), ``EC PRIVATE KEY`` (SEC1) or ``PRIVATE KEY`` (unencrypted PKCS#8) that parses is the
key; other blocks (``EC PARAMETERS`` from ``openssl ecparam -genkey``) are skipped.  Encrypted
keys are refused.

**The lifetime** defaults to one hour: the kubelet requests plugin tokens without
``expirationSeconds`` (``pkg/credentialprovider/plugin``), which the API server defaults to
3600 s (``SetDefaultsTokenRequestSpec``); it validates at least 10 minutes and at most 2^32 s
(``ValidateTokenRequest``, ``MinTokenAgeSec``).

**Binding.**  As the API server's TokenRequest does, a token is only issued for a pod of the
service account's namespace running as that service account.

Nothing here puts key material or a token into a message or a repr.  PyJWT and cryptography are
imported only when an issuer is built or a token verified, so importing the package needs neither.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from pullwarden.errors import ConfigError, CredentialError

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ec import (
        EllipticCurvePrivateKey,
        EllipticCurvePublicKey,
    )
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey

    from pullwarden.objects import Pod, ServiceAccount

__all__ = [
    "DEFAULT_TOKEN_LIFETIME",
    "MAX_TOKEN_LIFETIME",
    "MIN_TOKEN_LIFETIME",
    "TokenIssuer",
    "TokenVerificationError",
    "verify_token",
]

DEFAULT_TOKEN_LIFETIME: Final = 3600.0
"""Seconds a token is valid by default: the API server's default ``expirationSeconds``."""

MIN_TOKEN_LIFETIME: Final = 600.0
"""The shortest lifetime the API server accepts in a TokenRequest (10 minutes)."""

MAX_TOKEN_LIFETIME: Final = float(1 << 32)
"""The longest lifetime the API server accepts in a TokenRequest (2^32 seconds)."""

MIN_RSA_BITS: Final = 2048

SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"

# The PEM labels kube-apiserver takes a signing key from, in the words of the message.
_KEY_LABELS: Final = {
    b"RSA PRIVATE KEY": "PKCS#1 RSA",
    b"EC PRIVATE KEY": "SEC1 EC",
    b"PRIVATE KEY": "PKCS#8",
}
_EC_ALGORITHMS: Final = {"secp256r1": "ES256", "secp384r1": "ES384", "secp521r1": "ES512"}
_PEM_BLOCK: Final = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----\r?\n.*?-----END \1-----", re.DOTALL)
_MAX_KEY_FILE: Final = 1 << 20  # far above any PEM key; stops a wrong path from reading a disk


class TokenVerificationError(CredentialError, ValueError):
    """A service-account token failed verification; the message says which check failed.

    The message never contains the token or any key material.
    """


def _key_id(public_key: RSAPublicKey | EllipticCurvePublicKey) -> str:
    """kube-apiserver's key id: base64url(SHA-256(DER SubjectPublicKeyInfo)), no padding."""
    from cryptography.hazmat.primitives import serialization

    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return base64.urlsafe_b64encode(hashlib.sha256(der).digest()).rstrip(b"=").decode("ascii")


def _algorithm(key: object) -> str:
    """The JWS algorithm for a key, or ``""`` when the API server would not sign with it."""
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return _EC_ALGORITHMS.get(key.curve.name, "")
    return ""


def _key_kind(key: object) -> str:
    """A key's type for a message (``DSA``, ``Ed25519``, ``EC secp256k1``), never its value."""
    from cryptography.hazmat.primitives.asymmetric import ec

    if isinstance(key, ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey):
        return f"EC {key.curve.name}"
    name = type(key).__name__.removesuffix("PrivateKey").removesuffix("PublicKey").lstrip("_")
    return name or "unknown"


def _verification_key(public_key_pem: bytes) -> RSAPublicKey | EllipticCurvePublicKey:
    """The public key a token must verify with; :class:`TokenVerificationError` otherwise."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    try:
        key = serialization.load_pem_public_key(public_key_pem)
    except (ValueError, TypeError, UnsupportedAlgorithm):
        raise TokenVerificationError("the verification key is not a PEM public key") from None
    if isinstance(key, rsa.RSAPublicKey | ec.EllipticCurvePublicKey) and _algorithm(key):
        return key
    raise TokenVerificationError(
        f"the verification key is not an RSA or EC P-256/P-384/P-521 key ({_key_kind(key)})"
    )


def _read_key_file(path: Path) -> bytes:
    source = str(path)
    try:
        with path.open("rb") as f:
            data = f.read(_MAX_KEY_FILE + 1)
    except IsADirectoryError:
        raise ConfigError(
            problems=["service account signing key file: is a directory"], source=source
        ) from None
    except OSError as e:
        reason = e.strerror or type(e).__name__
        raise ConfigError(
            problems=[f"service account signing key file: cannot be read: {reason}"],
            source=source,
        ) from None
    if len(data) > _MAX_KEY_FILE:
        raise ConfigError(
            problems=[
                f"service account signing key file: larger than {_MAX_KEY_FILE} bytes, "
                "not a PEM private key"
            ],
            source=source,
        )
    return data


def _load_signing_key(path: Path) -> RSAPrivateKey | EllipticCurvePrivateKey:
    """The private key in ``path``, checked; :class:`ConfigError` naming the file otherwise."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    source = str(path)

    def fail(problem: str) -> ConfigError:
        return ConfigError(problems=[f"service account signing key file: {problem}"], source=source)

    data = _read_key_file(path)
    labels: list[str] = []
    encrypted = False
    for match in _PEM_BLOCK.finditer(data):
        label = match.group(1)
        labels.append(label.decode("ascii"))
        if label == b"ENCRYPTED PRIVATE KEY":
            encrypted = True
        if label not in _KEY_LABELS:
            continue
        try:
            key = serialization.load_pem_private_key(match.group(0), password=None)
        except TypeError:  # a legacy PEM block with Proc-Type: 4,ENCRYPTED
            encrypted = True
            continue
        except (ValueError, UnsupportedAlgorithm):
            continue  # the API server also goes on to the next block
        if isinstance(key, rsa.RSAPrivateKey):
            if key.key_size < MIN_RSA_BITS:
                raise fail(f"the RSA key has {key.key_size} bits; at least {MIN_RSA_BITS} needed")
            return key
        if isinstance(key, ec.EllipticCurvePrivateKey) and _algorithm(key):
            return key
        raise fail(
            f"holds an unsupported key ({_key_kind(key)}); service account tokens are signed "
            "with RSA (RS256) or EC P-256/P-384/P-521 keys (ES256/ES384/ES512)"
        )
    if encrypted:
        raise fail("the private key is encrypted; an unencrypted PEM private key is needed")
    wanted = ", ".join(f"{label.decode()} ({kind})" for label, kind in _KEY_LABELS.items())
    if not labels:
        raise fail(f"not a PEM private key (no PEM block; expected one of {wanted})")
    found = ", ".join(dict.fromkeys(labels))
    raise fail(f"no usable private key: found PEM blocks {found}; expected one of {wanted}")


_REFRESH_FRACTION: Final = 0.8  # the kubelet's token manager renews a token 80 % through its life
_REFRESH_AGE: Final = 24 * 3600.0  # ... or once it is a day old
_MAX_CACHED_TOKENS: Final = 4096


class TokenIssuer:
    """Signs bound service-account tokens as kube-apiserver would, with a configured key.

    ``signing_key_file`` is a PEM private key, like the API server's
    ``--service-account-signing-key-file``; ``issuer`` is the ``iss`` claim, like its
    ``--service-account-issuer``.  Both are checked here: any problem raises
    :class:`~pullwarden.errors.ConfigError` naming the file.  ``lifetime`` is the seconds a token
    is valid (the API server's default, one hour; 10 minutes to 2^32 s).  ``node_name`` and
    ``node_uid``, when given, add the ``kubernetes.io.node`` claim the API server adds for a pod
    scheduled to a node.  ``clock`` gives the current time in seconds since the epoch.

    Tokens are reused as the kubelet's token manager reuses them: the same pod, service account
    and audience get the same token until it is 80 % through its lifetime (or 24 hours old),
    so a plugin cache keyed by the token (``cacheType: Token``) can hit.  Thread-safe.
    """

    __slots__ = (
        "_algorithm",
        "_cache",
        "_clock",
        "_issuer",
        "_key",
        "_key_id",
        "_lifetime",
        "_lock",
        "_node",
        "_public_pem",
        "_signing_key_file",
    )

    def __init__(
        self,
        signing_key_file: Path,
        issuer: str,
        *,
        lifetime: float = DEFAULT_TOKEN_LIFETIME,
        node_name: str = "",
        node_uid: str = "",
        clock: Callable[[], float] = time.time,
    ) -> None:
        from cryptography.hazmat.primitives import serialization

        path = Path(signing_key_file)
        if not issuer:
            raise ConfigError(problems=["service account issuer: required with a signing key"])
        if not MIN_TOKEN_LIFETIME <= lifetime <= MAX_TOKEN_LIFETIME:  # also refuses NaN
            raise ConfigError(
                problems=[
                    f"service account token lifetime: {lifetime!r} seconds is outside "
                    f"{MIN_TOKEN_LIFETIME:.0f} (10 minutes) to {MAX_TOKEN_LIFETIME:.0f} (2^32)"
                ]
            )
        if node_uid and not node_name:
            raise ConfigError(problems=["service account token node: a uid needs a node name"])
        key = _load_signing_key(path)
        public = key.public_key()
        self._signing_key_file = path
        self._issuer = issuer
        self._lifetime = float(lifetime)
        self._clock = clock
        self._key = key
        self._algorithm = _algorithm(key)
        self._key_id = _key_id(public)
        self._public_pem = public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        node: dict[str, str] = {}
        if node_name:
            node["name"] = node_name
            if node_uid:
                node["uid"] = node_uid
        self._node = node
        self._lock = threading.Lock()
        self._cache: dict[tuple[str, ...], tuple[float, str]] = {}  # key → (refresh at, token)

    @property
    def signing_key_file(self) -> Path:
        return self._signing_key_file

    @property
    def issuer(self) -> str:
        return self._issuer

    @property
    def lifetime(self) -> float:
        return self._lifetime

    @property
    def algorithm(self) -> str:
        """The JWS ``alg`` of every token: RS256, ES256, ES384 or ES512, from the key."""
        return self._algorithm

    @property
    def key_id(self) -> str:
        """The ``kid`` header of every token, derived from the public key as the API server does."""
        return self._key_id

    def public_key_pem(self) -> bytes:
        """The public key (PEM SubjectPublicKeyInfo) that verifies this issuer's tokens."""
        return self._public_pem

    def __repr__(self) -> str:
        return (
            f"TokenIssuer(signing_key_file={str(self._signing_key_file)!r}, "
            f"issuer={self._issuer!r}, algorithm={self._algorithm!r}, key_id={self._key_id!r})"
        )

    def token(self, *, pod: Pod, service_account: ServiceAccount, audience: str) -> str:
        """A token for ``service_account`` bound to ``pod``, for ``audience`` only.

        Raises :class:`ValueError` (as the API server answers BadRequest) when the audience is
        empty, a name or UID is missing, or the pod does not run as this service account.
        """
        if not audience:
            raise ValueError("a service account token needs an audience")
        namespace, name = service_account.namespace, service_account.name
        if not (namespace and name and service_account.uid):
            raise ValueError("a service account token needs the namespace, name and uid of its SA")
        if not (pod.name and pod.uid):
            raise ValueError(f"a service account token for {namespace}/{name} needs a pod uid")
        running_as = pod.service_account_name or "default"
        if pod.namespace != namespace or running_as != name:
            raise ValueError(
                f"cannot bind a token for service account {namespace}/{name} to pod "
                f"{pod.namespace}/{pod.name}, which runs as {pod.namespace}/{running_as}"
            )
        now = self._clock()
        key = (pod.namespace, pod.name, pod.uid, name, service_account.uid, audience)
        with self._lock:
            cached = self._cache.get(key)
            if cached is not None and now < cached[0]:
                return cached[1]
            token = self._sign(pod, service_account, audience, now)
            if len(self._cache) >= _MAX_CACHED_TOKENS:
                self._cache = {k: v for k, v in self._cache.items() if now < v[0]}
            refresh = now + min(_REFRESH_FRACTION * self._lifetime, _REFRESH_AGE)
            self._cache[key] = (refresh, token)
            return token

    def _sign(self, pod: Pod, service_account: ServiceAccount, audience: str, now: float) -> str:
        import jwt

        namespace, name = service_account.namespace, service_account.name
        issued = math.floor(now)
        kubernetes: dict[str, Any] = {"namespace": namespace}
        if self._node:
            kubernetes["node"] = dict(self._node)
        kubernetes["pod"] = {"name": pod.name, "uid": pod.uid}
        kubernetes["serviceaccount"] = {"name": name, "uid": service_account.uid}
        claims: dict[str, Any] = {
            "aud": [audience],
            "exp": math.floor(now + self._lifetime),
            "iat": issued,
            "iss": self._issuer,
            "jti": str(uuid.uuid4()),
            "kubernetes.io": kubernetes,
            "nbf": issued,
            "sub": f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}",
        }
        return jwt.encode(
            claims,
            self._key,
            algorithm=self._algorithm,
            headers={"kid": self._key_id, "typ": None},
        )


def _numeric(claims: Mapping[str, Any], name: str) -> float:
    value = claims.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise TokenVerificationError(f"service account token: the {name!r} claim is missing")
    return float(value)


def _kubernetes_claim(claims: Mapping[str, Any]) -> None:
    """The ``kubernetes.io`` claim names a service account, and ``sub`` is the same one."""
    private = claims.get("kubernetes.io")
    account = private.get("serviceaccount") if isinstance(private, Mapping) else None
    if not isinstance(private, Mapping) or not isinstance(account, Mapping):
        raise TokenVerificationError(
            "service account token: no kubernetes.io claim naming a service account"
        )
    namespace, name, uid = private.get("namespace"), account.get("name"), account.get("uid")
    if not all(isinstance(v, str) and v for v in (namespace, name, uid)):
        raise TokenVerificationError(
            "service account token: the kubernetes.io claim lacks the namespace, or the "
            "service account's name or uid"
        )
    if claims.get("sub") != f"{SERVICE_ACCOUNT_PREFIX}{namespace}:{name}":
        raise TokenVerificationError(
            f"service account token: the subject is not service account {namespace}/{name} "
            "of the kubernetes.io claim"
        )


def verify_token(
    token: str,
    public_key_pem: bytes,
    *,
    audience: str,
    issuer: str,
    clock: Callable[[], float] = time.time,
    leeway: float = 0.0,
) -> dict[str, Any]:
    """The claims of ``token`` once it is verified; :class:`TokenVerificationError` otherwise.

    Checks, in order: the public key is an RSA or EC P-256/P-384/P-521 public key (PEM); the
    token's ``alg`` is the one that key signs with (never taken from the token) and its ``kid``,
    when present, is the key's; the signature; ``iss`` is ``issuer``; ``aud`` contains
    ``audience``; ``nbf <= now < exp`` and ``iat`` not in the future, each with ``leeway``
    seconds (kube-apiserver allows 60); ``sub`` is the service account the ``kubernetes.io``
    claim names.
    """
    import jwt

    public_key = _verification_key(public_key_pem)
    expected_alg = _algorithm(public_key)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise TokenVerificationError("service account token: not a compact JWS") from None
    alg = header.get("alg")
    if alg != expected_alg:
        shown = alg if isinstance(alg, str) and len(alg) <= 16 else "?"
        raise TokenVerificationError(
            f"service account token: signed with {shown!r}; this key verifies {expected_alg}"
        )
    kid = header.get("kid")
    if kid is not None and kid != _key_id(public_key):
        raise TokenVerificationError("service account token: its kid names a different key")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            public_key,
            algorithms=[expected_alg],
            options={
                "verify_signature": True,
                "verify_exp": False,  # checked below, against the injected clock
                "verify_nbf": False,
                "verify_iat": False,
                "verify_aud": False,
                "verify_iss": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise TokenVerificationError(
            "service account token: the signature does not verify"
        ) from None
    except jwt.PyJWTError:
        raise TokenVerificationError("service account token: cannot be decoded") from None
    if claims.get("iss") != issuer:
        raise TokenVerificationError(f"service account token: not issued by {issuer!r}")
    aud = claims.get("aud")
    audiences = [aud] if isinstance(aud, str) else aud if isinstance(aud, list) else []
    if audience not in audiences:
        raise TokenVerificationError(f"service account token: not for audience {audience!r}")
    now = clock()
    expires, not_before, issued = (_numeric(claims, n) for n in ("exp", "nbf", "iat"))
    if now >= expires + leeway:
        raise TokenVerificationError("service account token: expired")
    if now < not_before - leeway:
        raise TokenVerificationError("service account token: not valid yet (nbf)")
    if now < issued - leeway:
        raise TokenVerificationError("service account token: issued in the future (iat)")
    _kubernetes_claim(claims)
    return claims
