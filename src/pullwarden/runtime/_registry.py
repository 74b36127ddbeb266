"""An OCI distribution client: manifests, blobs and pushes, with real authentication.

:class:`RegistryClient` resolves an image reference to a platform manifest
(:meth:`~RegistryClient.get_manifest`), checks a tag cheaply
(:meth:`~RegistryClient.head_manifest`), streams blobs to disk while hashing them
(:meth:`~RegistryClient.fetch_blob`, :meth:`~RegistryClient.fetch_blobs`) and pushes blobs and
manifests (used by tests and tools).

Protocol notes:

* Authentication is lazy: a request goes out bare (or with what this client already learned
  about the registry), and a ``401`` is answered according to its ``WWW-Authenticate``
  challenge — Basic, or Bearer with a token from the realm.  Tokens are cached per registry,
  realm, service, scope and credential until shortly before they expire.
* Redirects are followed here, not by the transport, so that the ``Authorization`` header is
  sent only to the registry's own scheme, host and port.  That rule, the redirect limit, where
  the token realm may receive credentials and which TLS context a host gets are decided in one
  place, :mod:`pullwarden.runtime._policy`, for every request.
* Requests go out over HTTP/1.1 of our own (:mod:`._http1`), on connections kept alive per
  origin, TLS context and credential from one request to the next; a blob body with a length
  is read with ``recv_into`` straight into the writer's buffer.  It sits behind the client's
  transport seam (:mod:`._wire`; the requests and answers are :mod:`._messages`), so a client
  built with an injected ``transport`` runs the same request, credential, redirect, retry and
  blob-verification code as one on the real network.  No HTTP library is loaded.
  Blobs of one pull download :data:`DEFAULT_PARALLEL_BLOBS` at a time by default.
* No TLS context is made until an https registry is contacted (CA files excepted: they are
  loaded, and checked, when the client is made).
* Connection errors and ``5xx`` answers are retried with exponential back-off (the sleep is
  injectable); ``4xx`` answers never are.  A blob download that fails half-way starts again.
* Every operation takes a ``cancel`` token (:class:`~pullwarden._cancel.CancelToken`).  Once it
  is cancelled, the sockets in use are shut down — a download, a manifest or token request
  blocked in the middle of an answer ends at once — no retry or back-off follows, and the
  operation raises the token's error (a :class:`~pullwarden.errors.PullCancelledError` unless
  the canceller chose another).
* Manifest and token exchanges must also complete within ``request_timeout`` (60 s by default):
  a registry that answers one byte at a time cannot hold them longer.  Such an exchange fails
  like a timeout (retried, then :class:`~pullwarden.errors.RegistryUnavailableError`).  Blob
  downloads have no overall deadline; their stalls are the image store's progress timeout.
* Every failure is a :class:`~pullwarden.errors.RegistryError` subclass whose message names the
  operation, the image and the cause, e.g.
  ``pulling 127.0.0.1:5000/private/alice:v1: access denied (insufficient_scope)``, and never a
  password, token or ``Authorization`` value.
"""

from __future__ import annotations

import hashlib
import stat
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from pullwarden._cancel import CancelToken
from pullwarden._files import remove_quietly, write_all
from pullwarden._values import frozen
from pullwarden.errors import (
    DigestMismatchError,
    PullCancelledError,
    RegistryError,
    TooLargeError,
    UnsupportedMediaTypeError,
)
from pullwarden.reference import DEFAULT_TAG, parse_normalized
from pullwarden.runtime import _oci as oci
from pullwarden.runtime._auth import basic_authorization
from pullwarden.runtime._base import AuthConfig, Platform, ProgressCallback, PullProgress
from pullwarden.runtime._http1 import MAX_IDLE_PER_KEY, SIZED_BODY, SizedBody
from pullwarden.runtime._messages import URL, InvalidURL, Response, Transport
from pullwarden.runtime._policy import HostOptions, HostPolicy, load_ca_file
from pullwarden.runtime._scrub import Scrubber
from pullwarden.runtime._transport import Session, Target
from pullwarden.runtime._wire import RegistryTransport

if TYPE_CHECKING:
    import ssl

__all__ = [
    "DEFAULT_PARALLEL_BLOBS",
    "HostOptions",
    "RegistryClient",
    "ResolvedImage",
    "load_ca_file",
]

_T = TypeVar("_T")

CHUNK_SIZE = 64 * 1024  # iter_bytes chunk size: the fastest measured on loopback
_BLOB_BUFFER = 1024 * 1024  # recv_into buffer of a blob body with a length
_PROGRESS_STEP = 1024 * 1024  # report blob progress at most once per MiB (and at the end)
_ANONYMOUS = AuthConfig()
_HASHES = {"sha256": 64, "sha384": 96, "sha512": 128}

DEFAULT_PARALLEL_BLOBS = 6
"""Blobs one pull downloads at a time unless ``max_parallel_blobs`` says otherwise.

Chosen by measurement, not from the CPU count: see :class:`RegistryClient`.
"""


@frozen
class ResolvedImage:
    """An image reference resolved to one platform manifest.

    ``digest`` is the top-level digest (the index's when the reference named an index, else
    the manifest's); it is what ``repo_digests`` record.  ``tag`` is the reference's tag, empty
    when the reference carried only a digest.
    """

    registry: str
    repository: str
    name: str
    tag: str
    digest: str
    manifest_digest: str
    manifest: bytes
    manifest_media_type: str
    config: oci.Descriptor
    layers: tuple[oci.Descriptor, ...]
    index: bytes | None = None
    index_media_type: str = ""


# --- helpers ---------------------------------------------------------------------------------


def _hasher(digest: str) -> Any:
    algorithm, _, hexpart = digest.partition(":")
    size = _HASHES.get(algorithm)
    if size is None or len(hexpart) != size or not all(c in "0123456789abcdef" for c in hexpart):
        return None
    return hashlib.new(algorithm)


def _matches(data: bytes, digest: str) -> bool:
    hasher = _hasher(digest)
    if hasher is None:
        return False
    hasher.update(data)
    return f"{digest.partition(':')[0]}:{hasher.hexdigest()}" == digest


def _remove(path: Path) -> None:
    """Delete a partly written blob file (never a device such as ``/dev/null``)."""
    try:
        regular = stat.S_ISREG(path.lstat().st_mode)
    except OSError:
        return
    if regular:
        remove_quietly(path)


def _default_tls() -> ssl.SSLContext:
    """The TLS context for https hosts without a CA file: the system's trust store (OpenSSL's
    default paths, which ``SSL_CERT_FILE`` and ``SSL_CERT_DIR`` may point elsewhere).

    ``ssl`` is loaded here, when the first https request goes out, and not before.
    """
    import ssl

    return ssl.create_default_context()


def _scrubber(auth: AuthConfig) -> Scrubber:
    """A scrubber for one operation, knowing every secret of ``auth`` (and its Basic value)."""
    scrubber = Scrubber((auth.password, auth.identity_token, auth.registry_token))
    if auth.username or auth.password:
        scrubber.add(basic_authorization(auth.username, auth.password).partition(" ")[2])
    return scrubber


# --- the client ------------------------------------------------------------------------------


class RegistryClient:
    """A thread-safe OCI distribution client with one pool of kept-alive connections.

    ``hosts`` maps a registry (``host[:port]`` as in image names, e.g. ``127.0.0.1:5000`` or
    ``docker.io``) to its :class:`HostOptions`. ``transport`` replaces the network (tests pass a
    :class:`pullwarden.testing.MockTransport`): TLS, per-host CA files and kept-alive
    connections live in the network transport and then do not apply; everything above it does.
    ``timeout`` bounds each connect, send and read; ``request_timeout`` bounds a whole manifest
    or token exchange (None: no such bound). ``retries`` is the number of extra attempts after a
    connection error, timeout or ``5xx``; attempt *n* waits ``retry_backoff * 2**n`` seconds,
    through ``sleep`` when given (tests), else in a wait that a cancel ends. ``clock`` times
    token expiry.
    ``platform`` is the default for manifest lists (``linux`` and the host architecture).

    ``max_parallel_blobs`` defaults to 6 (:data:`DEFAULT_PARALLEL_BLOBS`), whatever the CPU
    count: with kept-alive connections a pull of many small blobs waits on the registry's time
    to first byte, not on this process's hashing and writing, so more downloads at a time than
    cores pay off until the registry is the limit.  Measured in process on 2 shared cores
    against a token-auth docker-registry on loopback (``bench/pull_throughput.py
    --parallelism 2,4,6,8``; medians of 7 rotated rounds, MB/s; the machine was noisy,
    ±15 %):

    =============  =========  =========  =========  =========
    image          2 workers  4 workers  6 workers  8 workers
    =============  =========  =========  =========  =========
    50 × 1 MB        184        180        210        208
    10 × 10 MB       410        481        452        490
    1 × 100 MB       461        424        489        450
    =============  =========  =========  =========  =========

    The process's CPU time per pull stayed flat (50 × 1 MB: 115 ms with 2 workers, 121 ms
    with 6), large layers did not slow down, and each worker adds one 1 MiB read buffer:
    6 workers are the smallest count at the top for small layers.  A 1 GB single-layer pull
    peaked at 46 MiB RSS as a whole ``pullwarden pull`` process (one worker: one layer).
    """

    def __init__(
        self,
        *,
        hosts: Mapping[str, HostOptions] | None = None,
        transport: Transport | None = None,
        timeout: float = 30.0,
        request_timeout: float | None = 60.0,
        max_parallel_blobs: int | None = None,
        retries: int = 3,
        retry_backoff: float = 0.25,
        sleep: Callable[[float], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        platform: Platform | None = None,
    ) -> None:
        self._hosts = HostPolicy(hosts)
        if max_parallel_blobs is None:
            max_parallel_blobs = DEFAULT_PARALLEL_BLOBS
        self._max_parallel = max(1, max_parallel_blobs)
        self._platform = platform or Platform.host()
        if transport is None:
            # Our own transport, so that a cancel or a deadline can reach the socket (_network),
            # with the TLS context of each host (made when first needed) and kept-alive
            # connections (_wire).
            transport = RegistryTransport(
                self._hosts,
                _default_tls,
                idle_per_origin=max(MAX_IDLE_PER_KEY, self._max_parallel),
            )
        self._transport = transport
        self._session = Session(
            transport,
            timeout=timeout,
            retries=retries,
            retry_backoff=retry_backoff,
            sleep=sleep,
            clock=clock,
            request_timeout=request_timeout,
        )
        self._count_lock = threading.Lock()
        self.direct_blob_count = 0  # blobs read straight into the buffer (tests, benchmarks)

    # -- lifecycle --

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> RegistryClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- public operations --

    def head_manifest(
        self, ref: str, auth: AuthConfig | None = None, *, cancel: CancelToken | None = None
    ) -> str | None:
        """``Docker-Content-Digest`` of ``ref``'s manifest by HEAD, or None when none is sent.

        This is the cheap re-verification request: one manifest request, no body.
        """
        target = self._target(ref, auth, "pulling", "pull", cancel=cancel)

        def attempt() -> str | None:
            url = target.url(f"manifests/{target.reference}")
            with self._session.request(
                target, "HEAD", url, "manifest", {"Accept": oci.ACCEPT}, deadline=True
            ) as resp:
                digest = resp.headers.get("Docker-Content-Digest", "").strip() or None
            if digest is not None and target.digest and digest != target.digest:
                target.fail(
                    DigestMismatchError,
                    f"registry reports manifest digest {digest}, expected {target.digest}",
                )
            return digest

        return self._session.retrying(target, attempt)

    def get_manifest(
        self,
        ref: str,
        auth: AuthConfig | None = None,
        *,
        platform: Platform | None = None,
        cancel: CancelToken | None = None,
    ) -> ResolvedImage:
        """Fetch and verify ``ref``'s manifest; for an index, the entry for ``platform``."""
        target = self._target(ref, auth, "pulling", "pull", cancel=cancel)
        want = platform or self._platform
        top, top_type, top_digest = self._fetch_manifest(target, target.reference)
        if top_type in oci.INDEX_TYPES:
            index = self._guard(target, lambda: oci.parse_index(top, top_type))
            chosen = self._guard(
                target, lambda: oci.select_platform(index.manifests, want, f"pulling {target.what}")
            )
            body, media_type, digest = self._fetch_manifest(target, chosen.digest)
            index_body: bytes | None = top
        else:
            body, media_type, digest = top, top_type, top_digest
            index_body, top_type = None, ""
        if media_type not in oci.MANIFEST_TYPES:
            target.fail(
                UnsupportedMediaTypeError,
                f"unsupported manifest media type {target.shown(repr(media_type), 'media type')}",
            )
        manifest = self._guard(target, lambda: oci.parse_manifest(body, media_type))
        return ResolvedImage(
            registry=target.registry,
            repository=target.repository,
            name=target.name,
            tag=target.tag,
            digest=top_digest,
            manifest_digest=digest,
            manifest=body,
            manifest_media_type=media_type,
            config=manifest.config,
            layers=manifest.layers,
            index=index_body,
            index_media_type=top_type,
        )

    def fetch_blob(
        self,
        resolved_or_name: ResolvedImage | str,
        desc: oci.Descriptor,
        dest: Path,
        auth: AuthConfig | None = None,
        *,
        kind: str = "layer",
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        """Stream blob ``desc`` into ``dest`` while hashing; verify its size and digest.

        On any failure ``dest`` is removed.  A dropped connection or ``5xx`` restarts the blob.
        """
        target = self._blob_target(resolved_or_name, auth, cancel)
        self._fetch_blob(target, desc, dest, kind, on_progress)

    def fetch_blobs(
        self,
        resolved: ResolvedImage,
        items: Sequence[tuple[oci.Descriptor, Path, str]],
        auth: AuthConfig | None = None,
        *,
        on_progress: ProgressCallback | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        """Fetch ``(descriptor, dest, kind)`` items, at most ``max_parallel_blobs`` at a time.

        The first failure stops the others; it is raised once they have all returned.  Files of
        blobs that did not complete are removed; completed ones are left for the caller.  Once
        ``cancel`` is cancelled every download stops at once and its error is raised.
        """
        if not items:
            return
        # One token for the siblings: a failure cancels it (waking the other downloads), and
        # so does ``cancel``, whose error then is the one every download raises.
        siblings = cancel.child() if cancel is not None else CancelToken()
        try:
            target = self._blob_target(resolved, auth, siblings)
            failed = self._fetch_all(target, items, on_progress, siblings)
        finally:
            siblings.release()
        if failed is not None:
            error = failed.exception()
            assert error is not None
            raise error

    def _fetch_all(
        self,
        target: Target,
        items: Sequence[tuple[oci.Descriptor, Path, str]],
        on_progress: ProgressCallback | None,
        siblings: CancelToken,
    ) -> Future[None] | None:
        """Run the downloads in a pool; the first failed one, or None when all succeeded."""
        workers = min(self._max_parallel, len(items))
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pullwarden-blob") as pool:
            futures: list[Future[None]] = [
                pool.submit(self._fetch_blob, target, desc, dest, kind, on_progress)
                for desc, dest, kind in items
            ]
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = next((f for f in futures if f in done and f.exception() is not None), None)
            if failed is not None:
                siblings.cancel(PullCancelledError("stopped: another blob of this pull failed"))
                for future in futures:
                    future.cancel()
            wait(futures)
        return failed

    def push_blob(
        self, name: str, data: bytes | Path, auth: AuthConfig | None = None
    ) -> oci.Descriptor:
        """Upload ``data`` to ``name``'s repository unless it is already there (monolithic PUT)."""
        target = self._target(name, auth, "pushing", "pull,push", tag_default=False)
        digest, size = self._digest_and_size(data)

        def content() -> bytes | Iterator[bytes]:
            return data if isinstance(data, bytes) else self._file_chunks(data)

        def attempt() -> None:
            blob_url = target.url(f"blobs/{digest}")
            with self._session.request(
                target, "HEAD", blob_url, f"blob {digest}", ok=(200, 404)
            ) as head:
                if head.status_code == 200:
                    return
            upload_url = target.url("blobs/uploads/")
            with self._session.request(target, "POST", upload_url, "upload", ok=(202,)) as started:
                location = started.headers.get("Location", "")
                session = target.resolve(started.url, location) if location else None
            if session is None:
                target.fail(RegistryError, "upload answer has no Location header")
            put_url = session.with_params({"digest": digest})
            headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
            with self._session.request(target, "PUT", put_url, f"blob {digest}", headers, content):
                pass

        self._session.retrying(target, attempt)
        return oci.Descriptor("application/octet-stream", digest, size)

    def push_manifest(
        self,
        name: str,
        reference: str,
        data: bytes,
        media_type: str,
        auth: AuthConfig | None = None,
    ) -> str:
        """PUT ``data`` as ``name``'s manifest ``reference`` (tag or digest); returns its digest."""
        target = self._target(name, auth, "pushing", "pull,push", tag_default=False)
        digest = oci.digest_of(data)

        def attempt() -> None:
            url = target.url(f"manifests/{reference}")
            headers = {"Content-Type": media_type}
            with self._session.request(
                target, "PUT", url, "manifest", headers, lambda: data
            ) as resp:
                reported = resp.headers.get("Docker-Content-Digest", "").strip()
            if reported and reported != digest:
                target.fail(
                    DigestMismatchError,
                    f"registry stored manifest as {reported}, expected {digest}",
                )

        self._session.retrying(target, attempt)
        return digest

    # -- targets and errors --

    def _target(
        self,
        ref: str,
        auth: AuthConfig | None,
        action: str,
        actions: str,
        *,
        tag_default: bool = True,
        cancel: CancelToken | None = None,
    ) -> Target:
        parsed = parse_normalized(ref)
        tag = parsed.tag or ("" if parsed.digest or not tag_default else DEFAULT_TAG)
        auth = auth or _ANONYMOUS
        try:
            base: URL | None = self._hosts.base_url(parsed.domain)
        except InvalidURL:  # the grammar bounds no DNS label; one over 63 characters, say
            base = None
        target = Target(
            action=action,
            registry=parsed.domain,
            repository=parsed.path,
            name=parsed.name,
            tag=tag,
            digest=parsed.digest,
            base=base or URL(""),  # only to word the error below
            auth=auth,
            insecure_configured=self._hosts.insecure_configured(parsed.domain),
            scope=f"repository:{parsed.path}:{actions}",
            scrubber=_scrubber(auth),
            cancel=cancel,
        )
        if base is None:
            target.fail(RegistryError, f"invalid registry host {parsed.domain!r}")
        return target

    def _blob_target(
        self, resolved: ResolvedImage | str, auth: AuthConfig | None, cancel: CancelToken | None
    ) -> Target:
        if isinstance(resolved, str):
            return self._target(resolved, auth, "pulling", "pull", tag_default=False, cancel=cancel)
        ref = resolved.name + (f":{resolved.tag}" if resolved.tag else f"@{resolved.digest}")
        return self._target(ref, auth, "pulling", "pull", cancel=cancel)

    @staticmethod
    def _guard(target: Target, action: Callable[[], _T]) -> _T:
        """Run an oci parser; re-raise its error with this operation's context."""
        try:
            return action()
        except RegistryError as exc:
            target.fail(type(exc), str(exc).removeprefix(f"pulling {target.what}: "))

    # -- manifests --

    def _fetch_manifest(self, target: Target, reference: str) -> tuple[bytes, str, str]:
        """GET one manifest; returns ``(body, media type, sha256 digest)`` after all checks."""

        def attempt() -> tuple[bytes, str, str]:
            url = target.url(f"manifests/{reference}")
            with self._session.request(
                target, "GET", url, "manifest", {"Accept": oci.ACCEPT}, deadline=True
            ) as resp:
                body = self._read_manifest(target, resp)
                header_type = resp.headers.get("Content-Type", "")
                header_digest = resp.headers.get("Docker-Content-Digest", "").strip()
            return body, header_type, header_digest

        body, header_type, header_digest = self._session.retrying(target, attempt)
        digest = oci.digest_of(body)
        if ":" in reference and not _matches(body, reference):  # by digest (tags have no ":")
            target.fail(
                DigestMismatchError,
                f"manifest content does not match its digest {reference} (got {digest})",
            )
        if header_digest and not _matches(body, header_digest):
            target.fail(
                DigestMismatchError,
                f"manifest digest {digest} does not match Docker-Content-Digest {header_digest}",
            )
        media_type = self._guard(target, lambda: oci.media_type_of(body, header_type))
        if media_type not in oci.INDEX_TYPES and media_type not in oci.MANIFEST_TYPES:
            target.fail(
                UnsupportedMediaTypeError,
                f"unsupported manifest media type {target.shown(repr(media_type), 'media type')}",
            )
        return body, media_type, digest

    def _read_manifest(self, target: Target, response: Response) -> bytes:
        limit = oci.MAX_MANIFEST_BYTES
        too_large = f"manifest larger than the {limit} byte limit"
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > limit:
            target.fail(TooLargeError, f"{too_large} (Content-Length {declared})")
        parts: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > limit:
                target.fail(TooLargeError, too_large)
            parts.append(chunk)
        return b"".join(parts)

    # -- blobs --

    def _fetch_blob(
        self,
        target: Target,
        desc: oci.Descriptor,
        dest: Path,
        kind: str,
        on_progress: ProgressCallback | None,
    ) -> None:
        if _hasher(desc.digest) is None:
            target.fail(UnsupportedMediaTypeError, f"{kind} has unsupported digest {desc.digest!r}")
        reported = [-1]  # highest `done` reported so far: progress never goes backwards

        def report(done: int) -> None:
            if on_progress is not None and done > reported[0]:
                reported[0] = done
                on_progress(PullProgress(desc.digest, kind, done, desc.size))

        report(0)
        try:
            self._session.retrying(target, lambda: self._download(target, desc, dest, kind, report))
        except BaseException:
            _remove(dest)
            raise

    def _download(
        self,
        target: Target,
        desc: oci.Descriptor,
        dest: Path,
        kind: str,
        report: Callable[[int], None],
    ) -> None:
        """One attempt at a blob: stream, hash and write; verify size and digest."""
        subject = f"{kind} {desc.digest}"
        url = target.url(f"blobs/{desc.digest}")
        headers = {"Accept-Encoding": "identity"}
        with self._session.request(target, "GET", url, subject, headers) as response:
            declared = response.headers.get("Content-Length", "")
            length = int(declared) if declared.isdigit() else None
            direct = response.extensions.get(SIZED_BODY)
            if isinstance(direct, SizedBody):  # read into a buffer of our own
                chunks: Iterable[bytes | memoryview] = direct.chunks(
                    memoryview(bytearray(_BLOB_BUFFER))
                )
            else:
                chunks = response.iter_bytes(CHUNK_SIZE)
            self._store_blob(target, desc, subject, length, chunks, dest, report)
        if direct is not None:
            with self._count_lock:
                self.direct_blob_count += 1

    def _store_blob(
        self,
        target: Target,
        desc: oci.Descriptor,
        subject: str,
        length: int | None,
        chunks: Iterable[bytes | memoryview],
        dest: Path,
        report: Callable[[int], None],
    ) -> None:
        """Hash and write ``chunks`` to ``dest``; verify size and digest against ``desc``."""
        cancel = target.cancel
        size = desc.size
        if length is not None and length > size:
            target.fail(
                TooLargeError,
                f"{subject} is {length} bytes, more than the {size} its descriptor says",
            )
        hasher = _hasher(desc.digest)
        done = 0
        next_report = _PROGRESS_STEP
        with open(dest, "wb", buffering=0) as out:
            fd = out.fileno()
            for chunk in chunks:
                done += len(chunk)
                if done > size:
                    target.fail(
                        TooLargeError,
                        f"{subject} is longer than the {size} bytes its descriptor says",
                    )
                hasher.update(chunk)
                write_all(fd, chunk)
                if done >= next_report:
                    report(done)
                    next_report = done + _PROGRESS_STEP
                    if cancel is not None and cancel.cancelled:
                        cancel.raise_if_cancelled()
        if done != size:
            target.fail(
                DigestMismatchError, f"{subject} is {done} bytes, its descriptor says {size}"
            )
        actual = f"{desc.digest.partition(':')[0]}:{hasher.hexdigest()}"
        if actual != desc.digest:
            target.fail(DigestMismatchError, f"{subject} content has digest {actual}")
        report(done)

    # -- pushing helpers --

    @staticmethod
    def _digest_and_size(data: bytes | Path) -> tuple[str, int]:
        if isinstance(data, bytes):
            return oci.digest_of(data), len(data)
        hasher = hashlib.sha256()
        size = 0
        with open(data, "rb") as source:
            while chunk := source.read(1024 * 1024):
                hasher.update(chunk)
                size += len(chunk)
        return "sha256:" + hasher.hexdigest(), size

    @staticmethod
    def _file_chunks(path: Path) -> Iterator[bytes]:
        with open(path, "rb") as source:
            while chunk := source.read(1024 * 1024):
                yield chunk
