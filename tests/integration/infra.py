"""Real components for the integration tests: a PKI, a token server, docker-registry, skopeo.

Everything listens on 127.0.0.1 only and lives in directories the caller hands in. Each process
started here is registered so that an ``atexit`` hook can still kill it if a fixture's own
teardown never ran. See ``shared/infra/real-components.md`` for how the real pieces behave.
"""

from __future__ import annotations

import atexit
import base64
import binascii
import contextlib
import datetime as dt
import fnmatch
import hashlib
import http.client
import ipaddress
import json
import os
import re
import secrets
import shutil
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, Literal
from urllib.parse import parse_qs, urlsplit

import bcrypt
import jwt
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pullwarden.runtime._base import Platform
from pullwarden.runtime._layout import (
    BuiltImage,
    build_image,
    build_index,
    make_tar,
    read_blob,
    read_layout,
)
from pullwarden.runtime._oci import DOCKER_LIST, DOCKER_MANIFEST, OCI_INDEX

LOOPBACK = "127.0.0.1"
SERVICE = "test-registry"
ISSUER = "test-issuer"

# The test accounts. These two lines are the only place the passwords are spelled out.
ALICE = ("alice", "alicepw")
BOB = ("bob", "bobpw")
USERS: Mapping[str, str] = dict((ALICE, BOB))

AuthMode = Literal["none", "basic", "token"]

REGISTRY_BINARY = "docker-registry"
SKOPEO_BINARY = "skopeo"
_START_TIMEOUT = 15.0
_COMMAND_TIMEOUT = 120.0


# --------------------------------------------------------------------------------------------
# process bookkeeping


_LIVE: set[subprocess.Popen[bytes]] = set()
_SERVERS: set[TokenServer] = set()
_LIVE_LOCK = threading.Lock()


def _kill_everything() -> None:
    """Backstop run at interpreter exit: nothing started here may outlive the test session."""
    with _LIVE_LOCK:
        processes = list(_LIVE)
        servers = list(_SERVERS)
    for process in processes:
        _terminate(process)
    for server in servers:
        server.stop()


atexit.register(_kill_everything)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, a short grace period, then SIGKILL."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
    with _LIVE_LOCK:
        _LIVE.discard(process)


_SETPRIV = shutil.which("setpriv")  # util-linux, essential on Debian


def dying_with_parent(argv: Sequence[str]) -> list[str]:
    """``argv`` started so that it gets SIGTERM should the test process die without cleanup.

    ``setpriv --pdeathsig`` sets the death signal and then execs ``argv``.  It is not a
    ``preexec_fn``: one makes :mod:`subprocess` fork instead of vfork, which runs grpcio's
    fork handlers in the child, and since grpcio 1.80 those can abort the child before it
    execs (SIGABRT, "epoll_wait error: Bad file descriptor", grpc/grpc#43055) once a CRI test
    has used gRPC in this process.  The death signal follows the forking *thread*, so it is
    asked for only from the main one.
    """
    on_main = threading.current_thread() is threading.main_thread()
    if _SETPRIV is None or not on_main:
        return list(argv)
    return [_SETPRIV, "--pdeathsig", "TERM", "--", *argv]


def missing_tools() -> list[str]:
    """The real-component binaries that are not on PATH."""
    return [tool for tool in (REGISTRY_BINARY, SKOPEO_BINARY) if shutil.which(tool) is None]


# --------------------------------------------------------------------------------------------
# PKI


@dataclass(frozen=True)
class Pki:
    """A test CA with a loopback server certificate, and an RSA key that signs tokens.

    ``cert_dir`` holds ``ca.crt`` (the layout skopeo's ``--cert-dir`` expects); ``bundle_file``
    is the token signing certificate the registry trusts (``rootcertbundle``).
    """

    directory: Path
    ca_file: Path
    cert_dir: Path
    server_cert: Path
    server_key: Path
    token_cert: Path
    bundle_file: Path
    token_key: rsa.RSAPrivateKey
    kid: str

    def ssl_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


def libtrust_kid(public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey) -> str:
    """docker/libtrust key id: base32 of the first 240 bits of sha256(SPKI DER), in groups of 4."""
    der = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    text = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(text[i : i + 4] for i in range(0, len(text), 4))


def make_pki(directory: Path) -> Pki:
    """Generate the CA, the server certificate (127.0.0.1 and localhost) and the token key."""
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pullwarden test CA")])
    ca_cert = (
        _certificate_builder(ca_name, ca_name, ca_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )

    server_key = ec.generate_private_key(ec.SECP256R1())
    server_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    server_cert = (
        _certificate_builder(server_name, ca_name, server_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(LOOPBACK)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    token_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    token_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pullwarden test tokens")])
    token_cert = (
        _certificate_builder(token_name, token_name, token_key.public_key(), now)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(token_key, hashes.SHA256())
    )

    cert_dir = directory / "certs.d"
    cert_dir.mkdir(exist_ok=True)
    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    (directory / "ca.pem").write_bytes(ca_pem)
    (cert_dir / "ca.crt").write_bytes(ca_pem)
    (directory / "server.pem").write_bytes(server_cert.public_bytes(serialization.Encoding.PEM))
    _write_private(directory / "server-key.pem", _private_pem(server_key))
    token_pem = token_cert.public_bytes(serialization.Encoding.PEM)
    (directory / "token.pem").write_bytes(token_pem)
    _write_private(directory / "token-key.pem", _private_pem(token_key))
    (directory / "bundle.pem").write_bytes(token_pem)
    return Pki(
        directory=directory,
        ca_file=directory / "ca.pem",
        cert_dir=cert_dir,
        server_cert=directory / "server.pem",
        server_key=directory / "server-key.pem",
        token_cert=directory / "token.pem",
        bundle_file=directory / "bundle.pem",
        token_key=token_key,
        kid=libtrust_kid(token_key.public_key()),
    )


def _certificate_builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: rsa.RSAPublicKey | ec.EllipticCurvePublicKey,
    now: dt.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=30))
    )


def _private_pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)


# --------------------------------------------------------------------------------------------
# token server

ANYONE = "*"  # a rule for every caller, anonymous or not
ANONYMOUS = ""  # a rule for callers without credentials only


@dataclass(frozen=True)
class AccessRule:
    """``principal`` may do ``actions`` on repositories matching ``pattern`` (fnmatch)."""

    principal: str
    pattern: str
    actions: frozenset[str]


def default_rules(seeder: str) -> tuple[AccessRule, ...]:
    """The ACL the tests rely on.

    alice: pull+push on private/alice and ns/*; bob: pull on ns/*; everyone, anonymous or not:
    pull on public/*. ``seeder`` (random password) is the fixtures' own account for pushing.
    """
    pull, pull_push = frozenset({"pull"}), frozenset({"pull", "push"})
    return (
        AccessRule("alice", "private/alice", pull_push),
        AccessRule("alice", "ns/*", pull_push),
        AccessRule("bob", "ns/*", pull),
        AccessRule(ANYONE, "public/*", pull),
        AccessRule(seeder, "*", frozenset({"pull", "push", "delete"})),
    )


@dataclass(frozen=True)
class TokenRequest:
    """One request the token server answered (never the password)."""

    method: str
    account: str | None
    scopes: tuple[str, ...]
    status: int
    grant_type: str = ""
    granted: tuple[tuple[str, tuple[str, ...]], ...] = ()


@dataclass(frozen=True)
class Exchange:
    """One ``POST /exchange`` the token server answered (never the token, never a password).

    ``account`` is the registry user handed out (200 only); ``reason`` says why it was refused.
    """

    status: int
    reason: str = ""
    namespace: str = ""
    service_account: str = ""
    uid: str = ""
    pod: str = ""
    account: str | None = None
    annotations: tuple[tuple[str, str], ...] = ()


class TokenServer:
    """A docker token-auth server (GET with Basic or anonymous, and containerd's POST form).

    Tokens are RS256 JWTs whose ``kid`` is the libtrust id of the PKI's token key. Unknown users
    and wrong passwords get 401; scopes outside the rules are silently left out of ``access``.
    Tests may change ``expires_in`` and inspect ``requests``.

    ``POST /exchange`` trades a Kubernetes service-account token (KEP-4412) for registry
    credentials, as a cloud's workload-identity endpoint does: see :meth:`configure_exchange`,
    :attr:`exchange_accounts` and :attr:`exchanges`.
    """

    def __init__(
        self,
        pki: Pki,
        *,
        users: Mapping[str, str] = USERS,
        rules: Sequence[AccessRule] | None = None,
        service: str = SERVICE,
        issuer: str = ISSUER,
    ) -> None:
        self.seeder = ("seeder", secrets.token_urlsafe(16))
        self.users = {**users, self.seeder[0]: self.seeder[1]}
        self.rules = tuple(rules) if rules is not None else default_rules(self.seeder[0])
        self.service = service
        self.issuer = issuer
        self.expires_in = 300
        self._pki = pki
        self._lock = threading.Lock()
        self._requests: list[TokenRequest] = []
        # token exchange: off (every exchange refused) until configure_exchange is called
        self.exchange_key: bytes | None = None
        self.exchange_issuer = ""
        self.exchange_audience = ""
        # (namespace, name) or (namespace, name, uid) → the registry account handed out
        self.exchange_accounts: dict[tuple[str, ...], tuple[str, str]] = {}
        self._exchanges: list[Exchange] = []
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> None:
        handler = _token_handler(self)
        self._httpd = ThreadingHTTPServer((LOOPBACK, 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, name="token-server", daemon=True
        )
        self._thread.start()
        with _LIVE_LOCK:
            _SERVERS.add(self)

    def stop(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with _LIVE_LOCK:
            _SERVERS.discard(self)

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("token server is not running")
        return int(self._httpd.server_address[1])

    @property
    def realm(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/token"

    # request log

    @property
    def requests(self) -> list[TokenRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def count(self) -> int:
        with self._lock:
            return len(self._requests)

    def requests_since(self, mark: int) -> list[TokenRequest]:
        """Requests after ``mark`` (a value of ``count`` taken earlier)."""
        with self._lock:
            return list(self._requests[mark:])

    def reset(self) -> None:
        with self._lock:
            self._requests.clear()

    def _record(self, request: TokenRequest) -> None:
        with self._lock:
            self._requests.append(request)

    # policy

    def grant(self, account: str | None, scopes: Sequence[str]) -> list[dict[str, Any]]:
        """The ``access`` claim for ``account`` (None = anonymous) asking for ``scopes``."""
        access: list[dict[str, Any]] = []
        for scope in scopes:
            parsed = _parse_scope(scope)
            if parsed is None or parsed[0] != "repository":
                continue
            _, name, wanted = parsed
            allowed: set[str] = set()
            for rule in self.rules:
                if self._applies(rule, account) and fnmatch.fnmatchcase(name, rule.pattern):
                    allowed |= rule.actions
            granted = sorted(wanted & allowed)
            if granted:
                access.append({"type": "repository", "name": name, "actions": granted})
        return access

    @staticmethod
    def _applies(rule: AccessRule, account: str | None) -> bool:
        if rule.principal == ANYONE:
            return True
        if rule.principal == ANONYMOUS:
            return account is None
        return rule.principal == account

    def issue(self, account: str | None, access: list[dict[str, Any]]) -> dict[str, Any]:
        """A token reply body for ``account`` with ``access``."""
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": account or "",
            "aud": self.service,
            "exp": now + self.expires_in,
            "nbf": now - 1,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        token = jwt.encode(
            claims, self._pki.token_key, algorithm="RS256", headers={"kid": self._pki.kid}
        )
        issued_at = dt.datetime.fromtimestamp(now, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": issued_at,
        }

    # token exchange

    def configure_exchange(self, public_key_pem: bytes, *, issuer: str, audience: str) -> None:
        """Accept service-account tokens signed by ``public_key_pem`` for issuer and audience."""
        self.exchange_key = public_key_pem
        self.exchange_issuer = issuer
        self.exchange_audience = audience

    @property
    def exchanges(self) -> list[Exchange]:
        with self._lock:
            return list(self._exchanges)

    def exchange(
        self, token: str, annotations: Mapping[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Verify a service-account token and answer (status, body); each answer is logged.

        200 ``{"username", "password"}`` for a mapped service account; 400 without a token;
        401 for a token that does not verify (signature, issuer, audience, expiry, claims);
        403 for a valid token of a service account the table does not map.
        """
        annotated = tuple(sorted((annotations or {}).items()))
        status, reason, who, account = self._check_token(token)
        namespace, name, uid, pod = who
        with self._lock:
            self._exchanges.append(
                Exchange(status, reason, namespace, name, uid, pod, account, annotated)
            )
        if status != 200 or account is None:
            return status, {"error": reason}
        return 200, {"username": account, "password": self.users[account]}

    def _check_token(self, token: str) -> tuple[int, str, tuple[str, str, str, str], str | None]:
        nobody = ("", "", "", "")
        if not token:
            return 400, "no service-account token", nobody, None
        if self.exchange_key is None:
            return 401, "token exchange is not configured", nobody, None
        try:
            claims = jwt.decode(
                token,
                self.exchange_key,
                algorithms=["RS256", "ES256", "ES384", "ES512"],
                audience=self.exchange_audience,
                issuer=self.exchange_issuer,
                options={"require": ["iss", "sub", "aud", "exp", "iat", "nbf"]},
            )
        except jwt.ExpiredSignatureError:
            return 401, "token expired", nobody, None
        except jwt.InvalidAudienceError:
            return 401, "wrong audience", nobody, None
        except jwt.InvalidIssuerError:
            return 401, "wrong issuer", nobody, None
        except jwt.InvalidSignatureError:
            return 401, "bad signature", nobody, None
        except jwt.PyJWTError as err:
            return 401, f"invalid token ({type(err).__name__})", nobody, None
        k8s = claims.get("kubernetes.io")
        sa = k8s.get("serviceaccount") if isinstance(k8s, dict) else None
        pod = k8s.get("pod") if isinstance(k8s, dict) else None
        if not isinstance(k8s, dict) or not isinstance(sa, dict):
            return 401, "no kubernetes.io service-account claim", nobody, None
        who = (
            str(k8s.get("namespace", "")),
            str(sa.get("name", "")),
            str(sa.get("uid", "")),
            str(pod.get("name", "")) if isinstance(pod, dict) else "",
        )
        if claims["sub"] != f"system:serviceaccount:{who[0]}:{who[1]}":
            return 401, "subject does not match the kubernetes.io claim", who, None
        mapped = self.exchange_accounts.get(who[:3]) or self.exchange_accounts.get(who[:2])
        if mapped is None:
            return 403, f"service account {who[0]}/{who[1]} is not mapped", who, None
        return 200, "", who, mapped[0]

    def check_password(self, username: str, password: str) -> bool:
        expected = self.users.get(username)
        return expected is not None and secrets.compare_digest(expected.encode(), password.encode())


def _parse_scope(scope: str) -> tuple[str, str, set[str]] | None:
    """``repository:ns/x:pull,push`` → ("repository", "ns/x", {"pull", "push"})."""
    parts = scope.split(":")
    if len(parts) < 3:
        return None
    return parts[0], ":".join(parts[1:-1]), {a for a in parts[-1].split(",") if a}


def _token_handler(server: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Each answer leaves in one write (``_reply``), and without Nagle's algorithm: on a
        # kept-alive connection an answer split in two small writes waited for the client's
        # delayed ACK before its second part went out (about 40 ms per token request).
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            """Silent: the request log lives in ``TokenServer.requests``."""

        def do_GET(self) -> None:
            url = urlsplit(self.path)
            if url.path != "/token":
                self._reply(404, {"error": "not_found"})
                return
            query = parse_qs(url.query, keep_blank_values=True)
            scopes = _split_scopes(query.get("scope", []))
            service = query.get("service", [server.service])[0]
            credentials = self._basic_credentials()
            self._answer("GET", credentials, scopes, service, "")

        def do_POST(self) -> None:
            url = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length).decode("utf-8", "replace")
            if url.path == "/exchange":
                self._exchange(body)
                return
            if url.path != "/token":
                self._reply(404, {"error": "not_found"})
                return
            form = parse_qs(body, keep_blank_values=True)
            grant_type = form.get("grant_type", [""])[0]
            scopes = _split_scopes(form.get("scope", []))
            service = form.get("service", [server.service])[0]
            if grant_type != "password":
                server._record(TokenRequest("POST", None, tuple(scopes), 400, grant_type))
                self._reply(400, {"error": "unsupported_grant_type"})
                return
            username = form.get("username", [""])[0]
            password = form.get("password", [""])[0]
            credentials: tuple[str, str] | Literal[False] | None = (username, password)
            if not username:
                credentials = self._basic_credentials()
            self._answer("POST", credentials, scopes, service, grant_type)

        def _exchange(self, body: str) -> None:
            """The token from a JSON body ``{"token", "annotations"}``, a form or a Bearer."""
            token: str = ""
            annotations: dict[str, str] = {}
            if self.headers.get("Content-Type", "").startswith("application/json"):
                try:
                    document = json.loads(body or "{}")
                except ValueError:
                    document = None
                if not isinstance(document, dict):
                    self._reply(400, {"error": "body is not a JSON object"})
                    return
                value = document.get("token")
                token = value if isinstance(value, str) else ""
                raw = document.get("annotations")
                if isinstance(raw, dict):
                    annotations = {str(k): str(v) for k, v in raw.items()}
            else:
                token = parse_qs(body, keep_blank_values=True).get("token", [""])[0]
            kind, _, bearer = self.headers.get("Authorization", "").partition(" ")
            if not token and kind.lower() == "bearer":
                token = bearer.strip()
            status, answer = server.exchange(token, annotations)
            self._reply(status, answer)

        def _basic_credentials(self) -> tuple[str, str] | Literal[False] | None:
            header = self.headers.get("Authorization")
            if not header:
                return None
            kind, _, value = header.partition(" ")
            if kind.lower() != "basic":
                return False
            try:
                decoded = base64.b64decode(value.strip(), validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                return False
            username, sep, password = decoded.partition(":")
            return (username, password) if sep else False

        def _answer(
            self,
            method: str,
            credentials: tuple[str, str] | Literal[False] | None,
            scopes: list[str],
            service: str,
            grant_type: str,
        ) -> None:
            account = credentials[0] if credentials else None
            if service != server.service:
                server._record(TokenRequest(method, account, tuple(scopes), 400, grant_type))
                self._reply(400, {"error": "invalid_request", "detail": "unknown service"})
                return
            if credentials is False or (
                credentials is not None and not server.check_password(*credentials)
            ):
                server._record(TokenRequest(method, account, tuple(scopes), 401, grant_type))
                self._reply(
                    401,
                    {"errors": [{"code": "UNAUTHORIZED", "message": "invalid credentials"}]},
                    {"WWW-Authenticate": 'Basic realm="pullwarden test token server"'},
                )
                return
            access = server.grant(account, scopes)
            granted = tuple((a["name"], tuple(a["actions"])) for a in access)
            server._record(TokenRequest(method, account, tuple(scopes), 200, grant_type, granted))
            self._reply(200, server.issue(account, access))

        def _reply(
            self, status: int, body: Mapping[str, Any], headers: Mapping[str, str] | None = None
        ) -> None:
            """The whole answer, head and body, in one write."""
            data = json.dumps(body).encode()
            fields = {
                "Server": self.version_string(),
                "Date": self.date_time_string(),
                "Content-Type": "application/json",
                "Content-Length": str(len(data)),
                **(headers or {}),
            }
            lines = [f"{self.protocol_version} {status} {self.responses[status][0]}"]
            lines += [f"{name}: {value}" for name, value in fields.items()]
            self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + data)

    return Handler


def _split_scopes(values: Sequence[str]) -> list[str]:
    """Scopes arrive as repeated parameters (GET) or space-separated in one field (POST)."""
    return [scope for value in values for scope in value.split() if scope]


# --------------------------------------------------------------------------------------------
# docker-registry


_INFRA_MARK = "pullwarden-infra"  # query parameter of the fixtures' own requests
_LISTENING = re.compile(rb"listening on 127\.0\.0\.1:(\d+)")
_ACCESS_LINE = re.compile(
    r'^(?P<remote>\S+) \S+ (?P<user>\S+) \[[^\]]+\] "(?P<method>[A-Z]+) (?P<uri>\S+) [^"]*" '
    r"(?P<status>\d{3}) (?P<size>\d+|-)"
)


@dataclass(frozen=True)
class AccessEntry:
    """One line of the registry's access log (Apache combined format)."""

    method: str
    path: str
    status: int
    size: int
    user: str


class Registry:
    """One ``docker-registry serve`` process on 127.0.0.1 with its own config, data and log.

    ``start`` binds a random port the first time and the same port after a ``stop``, so a test
    can take the registry away and bring it back. The access log (stdout) and the application
    log (stderr) both go to ``log_path``; :meth:`count_requests` reads the former.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        auth: AuthMode = "none",
        tls: bool = False,
        pki: Pki | None = None,
        token_server: TokenServer | None = None,
        users: Mapping[str, str] = USERS,
    ) -> None:
        if tls and pki is None:
            raise ValueError("a TLS registry needs the PKI")
        if auth == "token" and (pki is None or token_server is None):
            raise ValueError("a token-auth registry needs the PKI and the token server")
        self.workdir = workdir
        self.auth = auth
        self.tls = tls
        self.pki = pki
        self.token_server = token_server
        self.log_path = workdir / "registry.log"
        self.config_path = workdir / "config.yml"
        self._users = users
        self._port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)
        self._write_config()

    def __repr__(self) -> str:
        state = "running" if self.running else "stopped"
        return f"Registry({self.mode}, {self._port or '-'}, {state})"

    # identity

    @property
    def mode(self) -> str:
        return f"{self.auth}{'+tls' if self.tls else ''}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("registry has never been started")
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT``, the registry part of an image reference."""
        return f"{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    @property
    def ca_file(self) -> Path | None:
        return self.pki.ca_file if self.tls and self.pki is not None else None

    @property
    def cert_dir(self) -> Path | None:
        return self.pki.cert_dir if self.tls and self.pki is not None else None

    def verify(self) -> ssl.SSLContext | bool:
        """What httpx needs as ``verify=`` to talk to this registry."""
        return self.pki.ssl_context() if self.tls and self.pki is not None else True

    def ref(self, repository_and_tag: str) -> str:
        """A full reference into this registry: ``127.0.0.1:PORT/<repository_and_tag>``."""
        return f"{self.host}/{repository_and_tag}"

    # lifecycle

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the process (same port as before, if it ran before) and wait until it answers."""
        if self.running:
            return
        env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
        env["REGISTRY_HTTP_ADDR"] = f"{LOOPBACK}:{self._port or 0}"
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                dying_with_parent([REGISTRY_BINARY, "serve", str(self.config_path)]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                env=env,
            )
        with _LIVE_LOCK:
            _LIVE.add(process)
        self._process = process
        try:
            self._port = self._wait_for_port(process, offset)
            self._wait_until_answering()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) the process; the data directory and port are kept."""
        process, self._process = self._process, None
        if process is not None:
            _terminate(process)

    def _wait_for_port(self, process: subprocess.Popen[bytes], offset: int) -> int:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                match = _LISTENING.search(log.read())
            if match:
                return int(match.group(1))
            if process.poll() is not None:
                raise RuntimeError(
                    f"docker-registry ({self.mode}) exited with {process.returncode}:\n"
                    + self._log_tail()
                )
            time.sleep(0.005)
        raise RuntimeError(f"docker-registry ({self.mode}) did not start:\n" + self._log_tail())

    def _wait_until_answering(self) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while self._probe("start") not in (200, 401):
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry ({self.mode}) does not answer /v2/")
            time.sleep(0.005)

    def _probe(self, tag: str) -> int | None:
        """GET /v2/ marked as ours (left out of :meth:`access_log`); the status, or None."""
        connection = (
            http.client.HTTPSConnection(LOOPBACK, self.port, timeout=2, context=self._tls())
            if self.tls
            else http.client.HTTPConnection(LOOPBACK, self.port, timeout=2)
        )
        try:
            connection.request("GET", f"/v2/?{_INFRA_MARK}={tag}")
            return connection.getresponse().status
        except OSError:
            return None
        finally:
            connection.close()

    def _tls(self) -> ssl.SSLContext:
        assert self.pki is not None
        return self.pki.ssl_context()

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # configuration

    def _write_config(self) -> None:
        config: dict[str, Any] = {
            "version": 0.1,
            "log": {"level": "info", "formatter": "text", "accesslog": {"disabled": False}},
            "storage": {
                "filesystem": {"rootdirectory": str(self.workdir / "data")},
                "delete": {"enabled": True},
                "cache": {"blobdescriptor": "inmemory"},
                "maintenance": {"uploadpurging": {"enabled": False}},
            },
            "http": {"addr": f"{LOOPBACK}:0", "secret": secrets.token_hex(16)},
        }
        if self.tls:
            assert self.pki is not None
            config["http"]["tls"] = {
                "certificate": str(self.pki.server_cert),
                "key": str(self.pki.server_key),
            }
        if self.auth == "basic":
            htpasswd = self.workdir / "htpasswd"
            write_htpasswd(htpasswd, self._users)
            config["auth"] = {"htpasswd": {"realm": "test-basic-realm", "path": str(htpasswd)}}
        elif self.auth == "token":
            assert self.pki is not None and self.token_server is not None
            config["auth"] = {
                "token": {
                    "realm": self.token_server.realm,
                    "service": self.token_server.service,
                    "issuer": self.token_server.issuer,
                    "rootcertbundle": str(self.pki.bundle_file),
                }
            }
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))

    # access log

    def mark(self) -> int:
        """A position in the log; pass it as ``since`` to count only what happens afterwards."""
        self.sync()
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def sync(self) -> None:
        """Wait until the access log holds every request whose response a client has read.

        The registry writes an access-log line just *after* the response went out (blob bodies
        leave by sendfile), so a test reading the log right away can miss the last line. A
        marked request sent now, once logged, means the earlier lines are there too.
        """
        if not self.running:
            return
        tag = uuid.uuid4().hex
        self._probe(tag)
        needle = f"{_INFRA_MARK}={tag}".encode()
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 65536))
                if needle in log.read():
                    return
            time.sleep(0.001)
        raise RuntimeError(f"docker-registry ({self.mode}) did not log a request in 5 s")

    def access_log(self, since: int = 0) -> list[AccessEntry]:
        """The access-log entries from position ``since`` on (after a :meth:`sync`)."""
        self.sync()
        with open(self.log_path, "rb") as log:
            log.seek(since)
            text = log.read().decode("utf-8", "replace")
        entries = []
        for line in text.splitlines():
            match = _ACCESS_LINE.match(line)
            if match is None or _INFRA_MARK in match.group("uri"):
                continue
            size = match.group("size")
            entries.append(
                AccessEntry(
                    method=match.group("method"),
                    path=match.group("uri"),
                    status=int(match.group("status")),
                    size=0 if size == "-" else int(size),
                    user=match.group("user"),
                )
            )
        return entries

    def count_requests(
        self, method: str, path_substring: str, *, since: int = 0, status: int | None = None
    ) -> int:
        """How many ``method`` requests whose path contains ``path_substring`` were served."""
        return sum(
            1
            for entry in self.access_log(since)
            if entry.method == method.upper()
            and path_substring in entry.path
            and (status is None or entry.status == status)
        )

    def blob_bytes_served(self, *, since: int = 0) -> int:
        """Body bytes of successful blob GETs (what a puller actually downloaded)."""
        return sum(
            entry.size
            for entry in self.access_log(since)
            if entry.method == "GET" and "/blobs/sha256:" in entry.path and entry.status == 200
        )


def write_htpasswd(path: Path, users: Mapping[str, str], rounds: int = 4) -> None:
    """An htpasswd file with bcrypt hashes (the only kind docker-registry accepts)."""
    lines = [
        f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=rounds)).decode()}"
        for user, password in users.items()
    ]
    path.write_text("\n".join(lines) + "\n")


@contextlib.contextmanager
def running(registry: Registry) -> Iterator[Registry]:
    """Start ``registry`` and stop it on the way out, whatever happens."""
    try:
        registry.start()
        yield registry
    finally:
        registry.stop()


# --------------------------------------------------------------------------------------------
# skopeo


class SkopeoError(RuntimeError):
    """skopeo failed; carries its stderr (credentials go through an auth file, never argv)."""


class Skopeo:
    """Runs skopeo with a private policy, registries.conf and auth file under ``workdir``."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self._policy = workdir / "policy.json"
        self._policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
        self._registries_conf = workdir / "registries.conf"
        self._registries_conf.write_text("")

    def copy(
        self,
        source: str,
        registry: Registry,
        repository_and_tag: str,
        *,
        creds: tuple[str, str] | None = None,
        all_images: bool = False,
    ) -> None:
        """``skopeo copy SOURCE docker://<registry>/<repository_and_tag>``."""
        tls = (
            ["--dest-cert-dir", str(registry.cert_dir)]
            if registry.tls
            else ["--dest-tls-verify=false"]
        )
        extra = ["--all"] if all_images else []
        destination = f"docker://{registry.ref(repository_and_tag)}"
        self._run(["copy", "-q", *tls, *extra, source, destination], registry, creds)

    def copy_from(
        self,
        registry: Registry,
        repository_and_tag: str,
        destination: str,
        *,
        creds: tuple[str, str] | None = None,
    ) -> None:
        """``skopeo copy docker://<registry>/<repository_and_tag> DESTINATION`` (a pull)."""
        tls = (
            ["--src-cert-dir", str(registry.cert_dir)]
            if registry.tls
            else ["--src-tls-verify=false"]
        )
        source = f"docker://{registry.ref(repository_and_tag)}"
        self._run(["copy", "-q", *tls, source, destination], registry, creds)

    def inspect_raw(
        self,
        registry: Registry,
        repository_and_tag: str,
        *,
        creds: tuple[str, str] | None = None,
    ) -> bytes:
        """The manifest (or index) bytes exactly as the registry serves them."""
        return self._run(
            [
                "inspect",
                "--raw",
                *self._tls(registry),
                f"docker://{registry.ref(repository_and_tag)}",
            ],
            registry,
            creds,
        )

    def inspect(
        self,
        registry: Registry,
        repository_and_tag: str,
        *,
        creds: tuple[str, str] | None = None,
    ) -> dict[str, Any]:
        """``skopeo inspect`` output (for an index: the host platform's image)."""
        out = self._run(
            ["inspect", *self._tls(registry), f"docker://{registry.ref(repository_and_tag)}"],
            registry,
            creds,
        )
        result: dict[str, Any] = json.loads(out)
        return result

    @staticmethod
    def _tls(registry: Registry) -> list[str]:
        return ["--cert-dir", str(registry.cert_dir)] if registry.tls else ["--tls-verify=false"]

    def _run(self, args: list[str], registry: Registry, creds: tuple[str, str] | None) -> bytes:
        authfile = self.workdir / f"auth-{uuid.uuid4().hex}.json"
        auths = {}
        if creds is not None:
            token = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
            auths[registry.host] = {"auth": token}
        _write_private(authfile, json.dumps({"auths": auths}).encode())
        command = [
            SKOPEO_BINARY,
            "--policy",
            str(self._policy),
            "--registries-conf",
            str(self._registries_conf),
            args[0],
            "--authfile",
            str(authfile),
            *args[1:],
        ]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=_COMMAND_TIMEOUT,
                check=False,
            )
        finally:
            authfile.unlink(missing_ok=True)
        if result.returncode != 0:
            raise SkopeoError(
                f"skopeo {' '.join(args)} failed ({result.returncode}): "
                + result.stderr.decode(errors="replace").strip()
            )
        return result.stdout


def export_dir(layout_dir: Path, ref_name: str, destination: Path) -> Path:
    """Copy one image of an OCI layout into skopeo's ``dir:`` format, bytes unchanged.

    skopeo 1.9's ``oci:`` transport only finds OCI media types in index.json, so a Docker
    schema2 manifest has to travel through ``dir:`` to reach a registry with its digest intact.
    """
    descriptor = read_layout(layout_dir)[ref_name]
    manifest = read_blob(layout_dir, descriptor.digest)
    destination.mkdir(parents=True, exist_ok=True)
    document = json.loads(manifest)
    for blob in (document["config"], *document["layers"]):
        digest = blob["digest"]
        (destination / digest.split(":", 1)[1]).write_bytes(read_blob(layout_dir, digest))
    (destination / "manifest.json").write_bytes(manifest)
    (destination / "version").write_text("Directory Transport Version: 1.1\n")
    return destination


# --------------------------------------------------------------------------------------------
# seeded images


@dataclass(frozen=True)
class TestImages:
    """The images built for the session, all in one OCI layout."""

    __test__ = False  # not a pytest test class

    layout_dir: Path
    hello: BuiltImage  # OCI, linux/amd64, two layers
    alice: BuiltImage  # OCI, linux/amd64, alice's private image
    docker: BuiltImage  # Docker schema2, linux/amd64
    multi_amd64: BuiltImage
    multi_arm64: BuiltImage  # linux/arm64/v8
    multi_index: str  # OCI index over the two above


def build_test_images(layout_dir: Path) -> TestImages:
    """Build the seed images (instant: a few tiny deterministic blobs)."""
    hello = build_image(
        layout_dir,
        "hello",
        [
            make_tar({"etc/motd": b"pullwarden integration tests\n"}),
            make_tar({"hello.txt": b"hello from pullwarden\n"}),
        ],
    )
    alice = build_image(layout_dir, "alice", files={"alice.txt": b"alice's private image\n"})
    docker = build_image(
        layout_dir, "docker", files={"docker.txt": b"a docker schema2 image\n"}, docker=True
    )
    amd64 = build_image(layout_dir, "multi-amd64", files={"arch.txt": b"amd64\n"})
    arm64 = build_image(
        layout_dir,
        "multi-arm64",
        files={"arch.txt": b"arm64\n"},
        platform=Platform("linux", "arm64", "v8"),
    )
    index = build_index(layout_dir, "multi", [amd64, arm64])
    return TestImages(layout_dir, hello, alice, docker, amd64, arm64, index)


@dataclass(frozen=True)
class SeedEntry:
    """``layout_ref`` is pushed to ``repository_and_tag`` in the registry of mode ``registry``."""

    registry: str
    repository_and_tag: str
    layout_ref: str


SEED_PLAN: tuple[SeedEntry, ...] = (
    SeedEntry("noauth", "ns/hello:v1", "hello"),
    SeedEntry("noauth", "ns/docker:v1", "docker"),
    SeedEntry("noauth", "ns/multi:v1", "multi"),
    SeedEntry("token", "private/alice:v1", "alice"),
    SeedEntry("token", "ns/hello:v1", "hello"),
    SeedEntry("token", "public/hello:v1", "hello"),
    SeedEntry("basic", "ns/hello:v1", "hello"),
    SeedEntry("tls", "ns/hello:v1", "hello"),
)


@dataclass(frozen=True)
class Seeded:
    """The seeded registries and what each holds.

    ``digest("token", "private/alice:v1")`` is the digest a registry must report for a tag;
    ``ref("token", "private/alice:v1")`` the full reference to pull.
    """

    images: TestImages
    registries: Mapping[str, Registry]
    plan: tuple[SeedEntry, ...] = field(default=SEED_PLAN)

    def ref(self, registry: str, repository_and_tag: str) -> str:
        return self.registries[registry].ref(repository_and_tag)

    def digest(self, registry: str, repository_and_tag: str) -> str:
        for entry in self.plan:
            if entry.registry == registry and entry.repository_and_tag == repository_and_tag:
                return self.layout_digest(entry.layout_ref)
        raise KeyError(f"nothing was seeded as {repository_and_tag} in the {registry} registry")

    def layout_digest(self, layout_ref: str) -> str:
        return {
            "hello": self.images.hello.manifest_digest,
            "alice": self.images.alice.manifest_digest,
            "docker": self.images.docker.manifest_digest,
            "multi": self.images.multi_index,
            "multi-amd64": self.images.multi_amd64.manifest_digest,
            "multi-arm64": self.images.multi_arm64.manifest_digest,
        }[layout_ref]


def seed_one(
    skopeo: Skopeo,
    images: TestImages,
    registry: Registry,
    layout_ref: str,
    repository_and_tag: str,
    creds: tuple[str, str] | None,
) -> None:
    """Push one layout image with skopeo (Docker media types travel via ``dir:``)."""
    descriptor = read_layout(images.layout_dir)[layout_ref]
    if descriptor.media_type == DOCKER_LIST:
        raise ValueError("skopeo 1.9 cannot read a Docker manifest list from a layout")
    if descriptor.media_type == DOCKER_MANIFEST:
        exported = images.layout_dir.parent / f"dir-{layout_ref}"
        if not exported.exists():
            export_dir(images.layout_dir, layout_ref, exported)
        source = f"dir:{exported}"
    else:
        source = f"oci:{images.layout_dir}:{layout_ref}"
    all_images = descriptor.media_type == OCI_INDEX
    skopeo.copy(source, registry, repository_and_tag, creds=creds, all_images=all_images)


def seed(
    skopeo: Skopeo,
    images: TestImages,
    registries: Mapping[str, Registry],
    plan: Sequence[SeedEntry] = SEED_PLAN,
) -> Seeded:
    """Push every entry of ``plan``; token registries get the token server's seeder account."""
    for entry in plan:
        registry = registries[entry.registry]
        creds = _push_credentials(registry)
        seed_one(skopeo, images, registry, entry.layout_ref, entry.repository_and_tag, creds)
    return Seeded(images, registries, tuple(plan))


def _push_credentials(registry: Registry) -> tuple[str, str] | None:
    if registry.auth == "token":
        assert registry.token_server is not None
        return registry.token_server.seeder
    if registry.auth == "basic":
        return ALICE
    return None
