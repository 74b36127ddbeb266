"""Credential provider exec plugins (KEP-2133) and their service-account tokens (KEP-4412).

Spec §2.4b.  For one image, every configured provider whose ``matchImages`` match it (the
keyring's glob rules, spec §2.3) is consulted in configuration order.  A provider answers from
its cache or by running ``<bin dir>/<name>`` (no shell) with its ``args``, the kubelet's
environment plus its ``env``, and a ``CredentialProviderRequest`` on stdin; the
``CredentialProviderResponse`` on stdout is decoded strictly.  The run is bounded (the kubelet's
one minute by default); on timeout the plugin's whole process group is killed.  Every
provider's ``auth`` map goes into one :class:`~pullwarden.credentials.DockerKeyring`, so the
usual key ordering applies across plugins.

Caching, as the kubelet does it, per provider: the response's ``cacheKeyType`` says under which
key the credentials are kept (``Image``: the image; ``Registry``: its registry host, with the
port; ``Global``: one key); a lookup tries the image, then the registry, then the global key.
``cacheDuration`` absent means the provider's ``defaultCacheDuration``; zero means not cached.
Providers with ``tokenAttributes`` key their entries also by the service account (namespace,
name, UID and the selected annotation values) and, with ``cacheType: Token``, by the token.
Concurrent lookups of one image (and token) run the plugin once.

Service-account tokens: a provider with ``tokenAttributes`` needs the pod's ServiceAccount.  A
pod without one runs the plugin without a token when ``requireServiceAccount`` is false (the
credentials are then node-wide) and is a failure otherwise; a named ServiceAccount that is not
known is a failure; a missing required annotation skips the provider quietly (logged at debug
level, as the kubelet does).  Tokens come from a :class:`ServiceAccountTokenSource`; without
one such providers fail.  Credentials obtained with a token carry the ServiceAccount as their
source, all others none.

Any failure of a provider (missing binary, non-zero exit, timeout, a response that does not
decode or has the wrong kind, apiVersion or ``cacheKeyType``) means that provider contributes
nothing: the lookup reports a :class:`PluginFailure` and goes on.  Failure messages, reprs and
log lines never contain a token, a password or the plugin's stdout; of stderr only a short,
scrubbed first line is kept.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import selectors
import signal
import stat
import subprocess
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any, Final, Protocol, TypeAlias

from pullwarden._documents import Members
from pullwarden._gofmt import go_quote, parse_go_duration
from pullwarden._nesting import NestingError, loads_json, reject_constant
from pullwarden._values import frozen
from pullwarden.credentials._dockerconfig import AuthEntry, DockerConfig
from pullwarden.credentials._keyring import (
    DockerKeyring,
    Keyring,
    ServiceAccountSource,
    TrackedCredential,
)
from pullwarden.credentials._provider_config import (
    CACHE_TYPE_TOKEN,
    PLUGIN_API_V1,
    CredentialProvider,
    CredentialProviderConfig,
)
from pullwarden.objects import Pod, ServiceAccount, describe_value

__all__ = [
    "DEFAULT_TIMEOUT",
    "CredentialPlugins",
    "PluginFailure",
    "ServiceAccountTokenSource",
]

_log = logging.getLogger(__name__)

DEFAULT_TIMEOUT: Final = 60.0
"""Seconds a plugin may run: the kubelet's catch-all one minute for every exec plugin."""

REQUEST_KIND: Final = "CredentialProviderRequest"
RESPONSE_KIND: Final = "CredentialProviderResponse"
CACHE_KEY_TYPES: Final = ("Image", "Registry", "Global")

_GLOBAL_CACHE_KEY: Final = "global"
_PURGE_INTERVAL: Final = 15 * 60.0  # seconds between sweeps of expired cache entries
_MAX_STDOUT: Final = 1 << 20  # a response larger than this is refused
_MAX_STDERR: Final = 4096  # bytes of stderr kept for the failure's reason
_REASON_CHARS: Final = 200
_READ_CHUNK: Final = 65536
_KILL_GRACE: Final = 1.0  # seconds to reap a killed plugin


# --------------------------------------------------------------------------------------------
# Public types
# --------------------------------------------------------------------------------------------


@frozen
class PluginFailure:
    """A provider that contributed nothing for an image, and why (never a secret)."""

    provider: str
    image: str
    message: str


class ServiceAccountTokenSource(Protocol):
    """Issues service account tokens bound to a pod (the API server's TokenRequest)."""

    def token(self, *, pod: Pod, service_account: ServiceAccount, audience: str) -> str: ...


# --------------------------------------------------------------------------------------------
# Keeping secrets out of messages
# --------------------------------------------------------------------------------------------

_KEYWORD_VALUE: Final = re.compile(
    r"(?i)\b(password|passwd|secret|token|credentials?|authorization|api[_-]?key)"
    r"(\"?\s*[:=]\s*\"?)(\S+)"
)
_SCHEME_VALUE: Final = re.compile(r"(?i)\b(bearer|basic)(\s+)(\S+)")
_LONG_WORD: Final = re.compile(r"[A-Za-z0-9+/_=.~-]{20,}")


def _redact_long(match: re.Match[str]) -> str:
    word = match.group()
    has_letter = any(c.isalpha() for c in word)
    has_digit = any(c.isdigit() for c in word)
    return "<redacted>" if has_letter and has_digit else word


def _scrub(text: str, secrets: tuple[str, ...] = ()) -> str:
    """``text`` shortened to one line, with anything that may be a secret replaced."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    line = "".join(c if c.isprintable() else "?" for c in line)
    line = _SCHEME_VALUE.sub(lambda m: m.group(1) + m.group(2) + "<redacted>", line)
    line = _KEYWORD_VALUE.sub(lambda m: m.group(1) + m.group(2) + "<redacted>", line)
    line = _LONG_WORD.sub(_redact_long, line)
    if len(line) > _REASON_CHARS:
        line = line[:_REASON_CHARS] + "…"
    return line


def _shown(value: Any) -> str:
    """A plugin-supplied value in a message: a short quoted string, or its JSON type."""
    if isinstance(value, str):
        return go_quote(value if len(value) <= 64 else value[:64] + "…")
    return describe_value(value)


class _PluginError(Exception):
    """A provider failed; ``message`` is safe to show."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# --------------------------------------------------------------------------------------------
# Running a plugin
# --------------------------------------------------------------------------------------------


class _Timeout(Exception):
    pass


class _TooLarge(Exception):
    pass


@frozen
class _Run:
    returncode: int
    stdout: bytes
    stderr: bytes


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


def _exchange(proc: subprocess.Popen[bytes], data: bytes, deadline: float) -> tuple[bytes, bytes]:
    """Write ``data`` to the plugin's stdin while reading its stdout and stderr until both end.

    Raises :class:`_Timeout` at ``deadline`` and :class:`_TooLarge` when stdout exceeds its cap.
    """
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    stdin, stdout, stderr = proc.stdin, proc.stdout, proc.stderr
    out = bytearray()
    err = bytearray()
    with selectors.DefaultSelector() as selector:
        for pipe in (stdin, stdout, stderr):
            os.set_blocking(pipe.fileno(), False)
        if data:
            selector.register(stdin, selectors.EVENT_WRITE)
        else:
            stdin.close()
        selector.register(stdout, selectors.EVENT_READ)
        selector.register(stderr, selectors.EVENT_READ)
        view = memoryview(data)
        written = 0
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _Timeout
            for key, _events in selector.select(remaining):
                ready = key.fileobj
                if ready is stdin:
                    try:
                        written += os.write(stdin.fileno(), view[written : written + _READ_CHUNK])
                    except BlockingIOError:
                        continue
                    except BrokenPipeError:
                        written = len(data)  # the plugin does not read its request: its business
                    if written >= len(data):
                        selector.unregister(stdin)
                        with contextlib.suppress(OSError):
                            stdin.close()
                    continue
                try:
                    chunk = os.read(key.fd, _READ_CHUNK)
                except BlockingIOError:
                    continue
                if not chunk:
                    selector.unregister(ready)
                    continue
                if ready is stdout:
                    out += chunk
                    if len(out) > _MAX_STDOUT:
                        raise _TooLarge
                elif len(err) < _MAX_STDERR:
                    err += chunk[: _MAX_STDERR - len(err)]
    return bytes(out), bytes(err)


def _run(argv: list[str], env: Mapping[str, str], data: bytes, timeout: float) -> _Run:
    """Run a plugin to completion within ``timeout`` seconds; raises :class:`_PluginError`."""
    try:
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=dict(env),
            close_fds=True,
            start_new_session=True,  # its own process group, so a timeout kills all of it
        )
    except ValueError:
        raise _PluginError("cannot start the plugin: invalid environment variable") from None
    except OSError as err:
        raise _PluginError(
            f"cannot start the plugin: {err.strerror or type(err).__name__}"
        ) from None
    deadline = time.monotonic() + timeout
    stderr = b""
    try:
        try:
            stdout, stderr = _exchange(proc, data, deadline)
            returncode = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except (_Timeout, subprocess.TimeoutExpired):
            _kill_group(proc)
            raise _PluginError(
                f"the plugin did not finish within {timeout:g}s and was killed"
            ) from None
        except _TooLarge:
            _kill_group(proc)
            raise _PluginError(
                f"the plugin's response is larger than {_MAX_STDOUT} bytes"
            ) from None
    finally:
        for pipe in (proc.stdin, proc.stdout, proc.stderr):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if proc.returncode is None:
            _kill_group(proc)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=_KILL_GRACE)
    return _Run(returncode, stdout, stderr)


# --------------------------------------------------------------------------------------------
# The protocol
# --------------------------------------------------------------------------------------------


def _request(
    api_version: str, image: str, token: str, annotations: Mapping[str, str] | None
) -> bytes:
    """The ``CredentialProviderRequest`` document (the token fields exist in v1 only)."""
    doc: dict[str, Any] = {"kind": REQUEST_KIND, "apiVersion": api_version, "image": image}
    if api_version == PLUGIN_API_V1:
        if token:
            doc["serviceAccountToken"] = token
        if annotations:
            doc["serviceAccountAnnotations"] = dict(sorted(annotations.items()))
    return (json.dumps(doc, separators=(",", ":")) + "\n").encode("utf-8")


@frozen
class _Response:
    cache_key_type: str
    cache_duration: float | None  # seconds; None: the provider's default
    config: DockerConfig


_PLAIN_NAME: Final = re.compile(r"[A-Za-z0-9_]{1,64}")


def _field(path: str, key: str) -> str:
    """A member's path for a message: plain names as they are, anything else quoted."""
    return path + (key if _PLAIN_NAME.fullmatch(key) else _shown(key))


def _strict_fields(obj: Mapping[str, Any], known: frozenset[str], path: str) -> None:
    for key in getattr(obj, "duplicates", ()):
        raise _PluginError(
            f"cannot decode the plugin's response: duplicate field {_field(path, key)}"
        )
    for key in obj:
        if key not in known:
            raise _PluginError(
                f"cannot decode the plugin's response: unknown field {_field(path, key)}"
            )


def _string_member(obj: Mapping[str, Any], key: str, path: str) -> str:
    value = obj.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise _PluginError(
            f"cannot decode the plugin's response: {path}{key} must be a string, "
            f"not {describe_value(value)}"
        )
    return value


_RESPONSE_FIELDS: Final = frozenset({"kind", "apiVersion", "cacheKeyType", "cacheDuration", "auth"})
_AUTH_FIELDS: Final = frozenset({"username", "password"})


def _auth(value: Any) -> DockerConfig:
    if value is None:
        return MappingProxyType({})
    if not isinstance(value, Mapping):
        raise _PluginError(
            f"cannot decode the plugin's response: auth must be a map, not {describe_value(value)}"
        )
    _strict_fields(value, frozenset(value), "auth.")  # only repeated match patterns
    entries: dict[str, AuthEntry] = {}
    for pattern, entry in value.items():
        path = f"auth[{_shown(pattern)}]."
        if entry is None:
            entries[pattern] = AuthEntry("", "")
            continue
        if not isinstance(entry, Mapping):
            raise _PluginError(
                f"cannot decode the plugin's response: {path[:-1]} must be a map, "
                f"not {describe_value(entry)}"
            )
        _strict_fields(entry, _AUTH_FIELDS, path)
        entries[pattern] = AuthEntry(
            _string_member(entry, "username", path), _string_member(entry, "password", path)
        )
    return MappingProxyType(entries)


def _parse_response(data: bytes, api_version: str) -> _Response:
    """Decode and check a ``CredentialProviderResponse``; raises :class:`_PluginError`.

    Nothing of the response's values appears in an error but its kind, apiVersion and
    cacheKeyType (never a credential).
    """
    try:
        doc = loads_json(
            data.decode("utf-8"), object_pairs_hook=Members, parse_constant=reject_constant
        )
    except (UnicodeDecodeError, NestingError, ValueError):
        raise _PluginError("the plugin's response is not valid JSON") from None
    if not isinstance(doc, Mapping):
        raise _PluginError(f"the plugin's response is not a JSON object but {describe_value(doc)}")
    got = doc.get("apiVersion")
    if got != api_version:
        raise _PluginError(
            f"the response's apiVersion {_shown(got)} does not match the request's {api_version}"
        )
    if doc.get("kind") != RESPONSE_KIND:
        raise _PluginError(f"the response's kind {_shown(doc.get('kind'))} is not {RESPONSE_KIND}")
    _strict_fields(doc, _RESPONSE_FIELDS, "")
    cache_key_type = _string_member(doc, "cacheKeyType", "")
    duration: float | None = None
    raw_duration = doc.get("cacheDuration")
    if raw_duration is not None:
        if not isinstance(raw_duration, str):
            raise _PluginError(
                "cannot decode the plugin's response: cacheDuration must be a duration string, "
                f"not {describe_value(raw_duration)}"
            )
        try:
            duration = parse_go_duration(raw_duration) / 1e9
        except ValueError:
            raise _PluginError(
                f"the response's cacheDuration {_shown(raw_duration)} is not a valid duration"
            ) from None
    config = _auth(doc.get("auth"))
    if cache_key_type not in CACHE_KEY_TYPES:
        raise _PluginError(
            f"the response's cacheKeyType {_shown(cache_key_type)} is not one of "
            f"{', '.join(CACHE_KEY_TYPES)}: the response is not used"
        )
    return _Response(cache_key_type, duration, config)


# --------------------------------------------------------------------------------------------
# One provider: its cache and its runs
# --------------------------------------------------------------------------------------------

_CacheKey: TypeAlias = tuple[str, tuple[str, ...]]  # (image | registry | "global", SA part)


@frozen
class _Entry:
    config: DockerConfig
    expires_at: float


class _Call:
    """One plugin run that concurrent lookups share."""

    __slots__ = ("config", "done", "error")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.config: DockerConfig | None = None
        self.error = "the plugin run was interrupted"


@frozen
class _Identity:
    """Who the plugin runs for: the token to pass and what the cache keys by."""

    token: str = ""
    annotations: Mapping[str, str] | None = None
    cache_part: tuple[str, ...] = ()
    source: ServiceAccountSource | None = None


_NODE_WIDE: Final = _Identity()


def _registry(image: str) -> str:
    return image.split("/", 1)[0]


def _sha256(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


class _Runner:
    """One configured provider, with its cache (thread-safe)."""

    def __init__(
        self,
        provider: CredentialProvider,
        bin_dir: Path,
        clock: Callable[[], float],
        timeout: float,
        environ: Mapping[str, str] | None,
    ) -> None:
        self.provider = provider
        self._bin_dir = bin_dir
        self._clock = clock
        self._timeout = timeout
        self._environ = environ
        self._lock = threading.Lock()
        self._cache: dict[_CacheKey, _Entry] = {}
        self._calls: dict[tuple[str, ...], _Call] = {}
        self._last_purge = clock()

    @property
    def name(self) -> str:
        return self.provider.name

    def matches(self, image: str) -> bool:
        return self.provider.matches(image)

    # --- service accounts ---------------------------------------------------------------

    def identity(
        self,
        image: str,
        pod: Pod | None,
        service_account: ServiceAccount | None,
        tokens: ServiceAccountTokenSource | None,
    ) -> _Identity | None:
        """The token and cache part for this pod; None: skip the provider quietly."""
        attrs = self.provider.token_attributes
        if attrs is None:
            return _NODE_WIDE
        name = pod.service_account_name if pod is not None else ""
        if pod is None or not name:
            if attrs.require_service_account:
                raise _PluginError(
                    "the pod has no service account and the provider requires one "
                    "(tokenAttributes.requireServiceAccount)"
                )
            return _NODE_WIDE
        if service_account is None:
            raise _PluginError(f"service account {pod.namespace}/{name} not found")
        annotations: dict[str, str] = {}
        for key in attrs.required_annotation_keys:
            if key not in service_account.annotations:
                _log.debug(
                    "credential provider %s skipped for %s: service account %s/%s lacks the "
                    "required annotation %s",
                    self.name,
                    image,
                    pod.namespace,
                    name,
                    key,
                )
                return None
            annotations[key] = service_account.annotations[key]
        for key in attrs.optional_annotation_keys:
            if key in service_account.annotations:
                annotations[key] = service_account.annotations[key]
        if tokens is None:
            raise _PluginError(
                "no service account token issuer is configured (the provider has tokenAttributes)"
            )
        try:
            token = tokens.token(
                pod=pod,
                service_account=service_account,
                audience=attrs.service_account_token_audience,
            )
        except Exception as err:
            raise _PluginError(
                f"cannot get a token for service account {pod.namespace}/{name}: "
                f"{_scrub(f'{type(err).__name__}: {err}')}"
            ) from None
        if not token:
            raise _PluginError(
                f"the token issuer gave an empty token for service account {pod.namespace}/{name}"
            )
        part = (
            pod.namespace,
            name,
            service_account.uid,
            *(item for key in sorted(annotations) for item in (key, annotations[key])),
        )
        if attrs.cache_type == CACHE_TYPE_TOKEN:
            part = (*part, "token", _sha256(token))
        return _Identity(
            token, annotations, part, ServiceAccountSource(service_account.uid, pod.namespace, name)
        )

    # --- the cache ----------------------------------------------------------------------

    def _cached(self, image: str, part: tuple[str, ...], now: float) -> DockerConfig | None:
        """A live entry for the image, its registry or the global key (lock held)."""
        if now - self._last_purge > _PURGE_INTERVAL:
            self._cache = {k: e for k, e in self._cache.items() if now <= e.expires_at}
            self._last_purge = now
        for base in (image, _registry(image), _GLOBAL_CACHE_KEY):
            entry = self._cache.get((base, part))
            if entry is not None:
                if now <= entry.expires_at:
                    return entry.config
                del self._cache[(base, part)]
        return None

    def _store(self, image: str, part: tuple[str, ...], response: _Response) -> None:
        """Cache a response as the kubelet does (lock held)."""
        duration = response.cache_duration
        if duration is None:
            duration = self.provider.default_cache_duration
        if duration <= 0:
            return  # zero: not cached; negative: would be expired at once
        if response.cache_key_type == "Image":
            base = image
        elif response.cache_key_type == "Registry":
            base = _registry(image)
        else:
            base = _GLOBAL_CACHE_KEY
        self._cache[(base, part)] = _Entry(response.config, self._clock() + duration)

    # --- answering ----------------------------------------------------------------------

    def provide(self, image: str, identity: _Identity) -> DockerConfig:
        """The provider's docker config for ``image``; raises :class:`_PluginError`."""
        flight = (image, *identity.cache_part, _sha256(identity.token) if identity.token else "")
        with self._lock:
            cached = self._cached(image, identity.cache_part, self._clock())
            if cached is not None:
                return cached
            call = self._calls.get(flight)
            leader = call is None
            if call is None:
                call = self._calls[flight] = _Call()
        if not leader:
            call.done.wait()
            if call.config is None:
                raise _PluginError(call.error)
            return call.config
        response: _Response | None = None
        try:
            response = self._exec(image, identity)
            call.config = response.config
        except _PluginError as err:
            call.error = err.message
            raise
        finally:
            with self._lock:
                if response is not None:
                    self._store(image, identity.cache_part, response)
                del self._calls[flight]
            call.done.set()
        return response.config

    def _binary(self) -> Path:
        name = self.provider.name
        if not name or "/" in name or name in (".", ".."):
            raise _PluginError(f"invalid provider name {_shown(name)}")
        path = self._bin_dir / name
        try:
            info = path.stat()
        except FileNotFoundError:
            raise _PluginError(f"plugin binary {path} does not exist") from None
        except OSError as err:
            raise _PluginError(
                f"cannot inspect plugin binary {path}: {err.strerror or type(err).__name__}"
            ) from None
        if not stat.S_ISREG(info.st_mode):
            raise _PluginError(f"plugin binary {path} is not a regular file")
        if not os.access(path, os.X_OK):
            raise _PluginError(f"plugin binary {path} is not executable")
        return path

    def _exec(self, image: str, identity: _Identity) -> _Response:
        provider = self.provider
        argv = [str(self._binary()), *provider.args]
        env = dict(os.environ if self._environ is None else self._environ)
        env.update(provider.env)  # the configured variables win over the kubelet's
        request = _request(provider.api_version, image, identity.token, identity.annotations)
        _log.debug("running credential provider %s for %s", provider.name, image)
        try:
            run = _run(argv, env, request, self._timeout)
        except OSError as err:  # the pipes themselves failed
            raise _PluginError(
                f"cannot talk to the plugin: {err.strerror or type(err).__name__}"
            ) from None
        secrets = (identity.token,)
        if run.returncode != 0:
            if run.returncode < 0:
                what = f"the plugin was killed by signal {-run.returncode}"
            else:
                what = f"the plugin exited with status {run.returncode}"
            reason = _scrub(run.stderr.decode("utf-8", "replace"), secrets)
            raise _PluginError(f"{what}: {reason}" if reason else what)
        response = _parse_response(run.stdout, provider.api_version)
        attrs = provider.token_attributes
        echoes_token = identity.token and any(
            entry.password == identity.token for entry in response.config.values()
        )
        if echoes_token and attrs is not None and attrs.cache_type != CACHE_TYPE_TOKEN:
            raise _PluginError(
                "the plugin returned the service account token as a password, which needs "
                "tokenAttributes.cacheType Token"
            )
        return response


# --------------------------------------------------------------------------------------------
# The facade
# --------------------------------------------------------------------------------------------


class CredentialPlugins:
    """The configured credential provider plugins, as a keyring per pod (spec §2.4b).

    ``bin_dir`` is the kubelet's ``--image-credential-provider-bin-dir``; ``clock`` (seconds,
    monotonic) times the cache; ``tokens`` issues service account tokens for providers with
    ``tokenAttributes``; ``timeout`` bounds each plugin run (seconds); ``environ`` is the
    environment plugins start from (default: this process's, read at each run).  Thread-safe;
    caches live as long as this object.
    """

    def __init__(
        self,
        config: CredentialProviderConfig,
        bin_dir: Path,
        *,
        clock: Callable[[], float] = time.monotonic,
        tokens: ServiceAccountTokenSource | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self._config = config
        self._bin_dir = Path(bin_dir).absolute()
        self._tokens = tokens
        self._runners = tuple(
            _Runner(provider, self._bin_dir, clock, timeout, environ)
            for provider in config.providers
        )

    @property
    def config(self) -> CredentialProviderConfig:
        return self._config

    @property
    def bin_dir(self) -> Path:
        return self._bin_dir

    def keyring_for(
        self,
        pod: Pod | None,
        service_account: ServiceAccount | None,
        on_failure: Callable[[PluginFailure], None] | None = None,
    ) -> Keyring:
        """A keyring whose lookups consult the plugins for ``pod``.

        ``service_account`` is the pod's ServiceAccount (None when it is not known); it only
        matters to providers with ``tokenAttributes``.  ``on_failure`` hears of every provider
        that contributed nothing because it failed (without it, failures are logged as
        warnings).
        """
        return _PluginKeyring(self, pod, service_account, on_failure)

    def _lookup(
        self,
        image: str,
        pod: Pod | None,
        service_account: ServiceAccount | None,
        on_failure: Callable[[PluginFailure], None] | None,
    ) -> list[TrackedCredential]:
        keyring = DockerKeyring()
        for runner in self._runners:
            if not runner.matches(image):
                continue
            try:
                identity = runner.identity(image, pod, service_account, self._tokens)
                if identity is None:
                    continue
                config = runner.provide(image, identity)
            except _PluginError as err:
                failure = PluginFailure(runner.name, image, err.message)
                _log.debug("credential provider %s for %s: %s", runner.name, image, err.message)
                if on_failure is not None:
                    on_failure(failure)
                else:
                    _log.warning(
                        "credential provider %s gave no credentials for %s: %s",
                        runner.name,
                        image,
                        err.message,
                    )
                continue
            keyring.add(config, identity.source, provider=runner.name)
        return keyring.lookup(image)

    def __repr__(self) -> str:
        names = tuple(runner.name for runner in self._runners)
        return f"CredentialPlugins(providers={names!r}, bin_dir={str(self._bin_dir)!r})"


class _PluginKeyring:
    """The plugins' credentials for one pod (a :class:`~pullwarden.credentials.Keyring`)."""

    def __init__(
        self,
        plugins: CredentialPlugins,
        pod: Pod | None,
        service_account: ServiceAccount | None,
        on_failure: Callable[[PluginFailure], None] | None,
    ) -> None:
        self._plugins = plugins
        self._pod = pod
        self._service_account = service_account
        self._on_failure = on_failure

    def lookup(self, image: str) -> list[TrackedCredential]:
        return self._plugins._lookup(image, self._pod, self._service_account, self._on_failure)

    def __repr__(self) -> str:
        pod = self._pod.key if self._pod is not None else None
        return f"PluginKeyring(pod={pod!r}, plugins={self._plugins!r})"
