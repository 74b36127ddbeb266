"""The development registry's HTTP server and its public face, :class:`DevRegistry`.

A :class:`http.server.ThreadingHTTPServer` on a loopback address (daemon threads, HTTP/1.1
keep-alive, a ``Content-Length`` on every answer) feeds requests to
:class:`~pullwarden.devregistry.api.DistributionApi`.  This module adds what happens around the
API: the fault knobs that concern every request (``available``, ``latency``, ``fail_5xx``),
request bodies (``Content-Length`` or chunked), cutting blob bodies short for
``drop_connection``, and the request log.

Each request is logged *before* its answer is written, so a client that has its answer always
finds the request in :attr:`DevRegistry.requests`.  The log holds the method, the request
target, the status, the body bytes the server sent, the user it was served for and the
``Authorization`` scheme the client sent (``Basic``/``Bearer``, never the value).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs

from pullwarden._clock import Clock
from pullwarden.devregistry.api import (
    DistributionApi,
    Reply,
    Request,
    error_reply,
    valid_name,
    valid_tag,
)
from pullwarden.devregistry.auth import AccessRule, AuthMode, Authority
from pullwarden.devregistry.faults import Faults, is_loopback_host
from pullwarden.devregistry.storage import DirectoryStorage, MemoryStorage, Storage
from pullwarden.runtime import oci, read_blob, read_layout

__all__ = ["DevRegistry", "RequestRecord"]

_CHUNK = 64 * 1024
_BODY_PIECE = 1024 * 1024


@dataclass(frozen=True)
class RequestRecord:
    """One request as the registry saw it.

    ``path`` is the request target (path and query); ``bytes_sent`` the body bytes written
    (for HEAD, 0); ``user`` the authenticated user (None = anonymous or refused);
    ``auth_scheme`` the scheme of the ``Authorization`` header the client sent, or ``""``.
    """

    method: str
    path: str
    status: int
    bytes_sent: int
    user: str | None
    auth_scheme: str = ""


class _BadRequest(Exception):
    pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body are separate writes: no 40 ms stalls
    server_version = "pullwarden-devregistry"
    sys_version = ""
    server: _Server
    _body_started = False
    _body_done = False

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log."""

    def do_GET(self) -> None:
        self._dispatch()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    # -- request bodies --

    def _body(self) -> Iterator[bytes]:
        """The request body in pieces; marks it consumed once read to the end."""
        if self._body_started:
            return
        self._body_started = True
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            yield from self._chunked()
        else:
            declared = (self.headers.get("Content-Length") or "0").strip() or "0"
            if not declared.isdigit():
                raise _BadRequest("invalid Content-Length")
            remaining = int(declared)
            while remaining > 0:
                piece = self.rfile.read(min(remaining, _BODY_PIECE))
                if not piece:
                    raise _BadRequest("body shorter than Content-Length")
                remaining -= len(piece)
                yield piece
        self._body_done = True

    def _chunked(self) -> Iterator[bytes]:
        while True:
            line = self.rfile.readline(1024)
            size_text = line.split(b";")[0].strip()
            try:
                size = int(size_text, 16)
            except ValueError:
                raise _BadRequest("bad chunk size") from None
            if size == 0:
                while self.rfile.readline(8192) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return
            remaining = size
            while remaining > 0:
                piece = self.rfile.read(min(remaining, _BODY_PIECE))
                if not piece:
                    raise _BadRequest("truncated chunk")
                remaining -= len(piece)
                yield piece
            self.rfile.readline(8)

    def _drain(self) -> None:
        """Read what the endpoint left unread, so the connection can serve the next request."""
        if self._body_done:
            return
        if self._body_started:  # abandoned half-way: the stream position is unknown
            self.close_connection = True
            return
        try:
            for _ in self._body():
                pass
        except (_BadRequest, OSError):
            self.close_connection = True

    # -- one request --

    def _dispatch(self) -> None:
        self._body_started = False
        self._body_done = False
        registry = self.server.registry
        path, _, query = self.path.partition("?")
        request = Request(
            self.command, path, parse_qs(query, keep_blank_values=True), self.headers, self._body
        )
        try:
            reply = registry._serve(request)
        except _BadRequest as exc:
            self.close_connection = True
            reply = error_reply(400, "UNSUPPORTED", "bad request", str(exc))
        except Exception as exc:  # a bug: answer 500 and keep it for the tests to see
            registry._server_errors.append(f"{type(exc).__name__}: {exc}")
            self.close_connection = True
            reply = error_reply(500, "UNKNOWN", "internal server error")
        self._drain()
        self._send(reply)

    def _send(self, reply: Reply) -> None:
        registry = self.server.registry
        length = reply.content_length
        bodiless = self.command == "HEAD" or reply.status in (204, 304)
        to_send = 0 if bodiless else length
        if reply.drop_after is not None and not bodiless:
            to_send = min(reply.drop_after, length)
        authorization = self.headers.get("Authorization") or ""
        record = RequestRecord(
            self.command,
            self.path,
            reply.status,
            to_send,
            reply.user,
            authorization.strip().partition(" ")[0],
        )
        slot = registry._record(record)
        sent = 0
        try:
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", "0" if reply.status == 204 else str(length))
            self.send_header("Docker-Distribution-Api-Version", "registry/2.0")
            if self.close_connection or reply.drop_after is not None:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            sent = self._write_body(reply, to_send)
        except OSError:
            self.close_connection = True
        finally:
            if reply.stream is not None:
                reply.stream.close()
        if sent != to_send:
            registry._correct(slot, replace(record, bytes_sent=sent))

    def _write_body(self, reply: Reply, to_send: int) -> int:
        sent = 0
        if to_send <= 0:
            return 0
        if reply.stream is None:
            chunks: Iterator[bytes] = iter((reply.body[:to_send],))
        else:
            chunks = _read_stream(reply.stream, to_send)
        for chunk in chunks:
            if reply.corrupt and sent == 0 and chunk:
                chunk = bytes([chunk[0] ^ 0xFF]) + chunk[1:]
            self.wfile.write(chunk)
            sent += len(chunk)
        return sent


def _read_stream(stream: Any, limit: int) -> Iterator[bytes]:
    remaining = limit
    while remaining > 0:
        chunk = stream.read(min(remaining, _CHUNK))
        if not chunk:
            return
        remaining -= len(chunk)
        yield chunk


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], family: int, registry: DevRegistry) -> None:
        self.address_family = family
        self.registry = registry
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def cut_connections(self) -> None:
        """Close every kept-alive connection (their handler threads then end)."""
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def _bind_address(host: str) -> tuple[str, int]:
    """``(address to bind, address family)`` for a loopback ``host``; ValueError otherwise."""
    if not is_loopback_host(host):
        raise ValueError(
            f"the development registry listens on loopback only (127.0.0.1, localhost or ::1), "
            f"not {host!r}"
        )
    bare = host.strip().lower().removeprefix("[").removesuffix("]")
    if bare == "localhost":
        return "127.0.0.1", socket.AF_INET
    if ":" in bare:
        return bare, socket.AF_INET6
    return bare, socket.AF_INET


class DevRegistry:
    """An OCI distribution registry in this process, for demos, experiments and tests.

    ``storage_dir`` None keeps content in memory; a directory keeps it across restarts.
    ``auth`` ``basic`` or ``token`` checks ``users`` (username → password) against ``rules``
    (default: every user may pull and push everything) and ``anonymous_pull`` globs; see
    :mod:`pullwarden.devregistry.auth`.  ``faults`` are the knobs of
    :class:`~pullwarden.devregistry.faults.Faults`, also reachable as :attr:`faults`.
    ``clock`` times token expiry; ``sleep`` waits for the latency fault.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.  A stopped registry can
    be started again; it listens on the same port when it can.
    """

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        storage_dir: Path | None = None,
        users: Mapping[str, str] | None = None,
        auth: AuthMode = "none",
        rules: Sequence[AccessRule] = (),
        anonymous_pull: Sequence[str] = (),
        faults: Faults | None = None,
        clock: Clock | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._bind_host, self._family = _bind_address(host)
        if not 0 <= port <= 65535:
            raise ValueError(f"port must be between 0 and 65535, not {port}")
        self._wanted_port = port
        self._faults = faults if faults is not None else Faults()
        self.storage: Storage = (
            MemoryStorage() if storage_dir is None else DirectoryStorage(Path(storage_dir))
        )
        self.authority = Authority(
            mode=auth, users=users, rules=rules, anonymous_pull=anonymous_pull, clock=clock
        )
        self._api = DistributionApi(self.storage, self.authority, self._faults)
        self._sleep = sleep
        self._log: list[RequestRecord] = []
        self._log_lock = threading.Lock()
        self._server_errors: list[str] = []
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._port = 0

    @property
    def faults(self) -> Faults:
        """The live fault knobs; change their fields, or assign a new :class:`Faults`."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults) -> None:
        self._faults = faults
        self._api.faults = faults

    # -- lifecycle --

    def start(self) -> None:
        """Listen and serve in a background thread."""
        if self._server is not None:
            raise RuntimeError("the registry is already running")
        port = self._port or self._wanted_port
        try:
            server = _Server((self._bind_host, port), self._family, self)
        except OSError:
            if port == self._wanted_port:
                raise
            server = _Server((self._bind_host, self._wanted_port), self._family, self)
        self._server = server
        self._port = server.server_address[1]
        self.authority.set_realm(f"{self.url}/token")
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"devregistry-{self._port}",
            daemon=True,
        )
        self._thread.start()

    def stop(self) -> None:
        """Stop listening, close open connections and drop unfinished uploads."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.cut_connections()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self._api.discard_uploads()

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> DevRegistry:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- where --

    @property
    def port(self) -> int:
        if not self._port:
            raise RuntimeError("the registry has not been started yet")
        return self._port

    @property
    def host(self) -> str:
        """``127.0.0.1:PORT`` (``[::1]:PORT`` for IPv6): the registry part of image names."""
        if self._family == socket.AF_INET6:
            return f"[{self._bind_host}]:{self.port}"
        return f"{self._bind_host}:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    # -- request log --

    @property
    def requests(self) -> list[RequestRecord]:
        """A copy of the request log, oldest first."""
        with self._log_lock:
            return list(self._log)

    @property
    def server_errors(self) -> list[str]:
        """Unexpected exceptions inside the server (answered with 500); empty when healthy."""
        return list(self._server_errors)

    def mark(self) -> int:
        """A position in the log, for ``since=`` arguments."""
        with self._log_lock:
            return len(self._log)

    def count(
        self,
        method: str | None = None,
        path_contains: str = "",
        since: int = 0,
        status: int | None = None,
    ) -> int:
        """How many logged requests (from ``since`` on) match method, path part and status."""
        return sum(
            1
            for r in self.requests[since:]
            if (method is None or r.method == method)
            and path_contains in r.path
            and (status is None or r.status == status)
        )

    def blob_bytes_served(self, since: int = 0) -> int:
        """Body bytes sent by blob GETs (uploads excluded) from ``since`` on."""
        return sum(
            r.bytes_sent
            for r in self.requests[since:]
            if r.method == "GET" and "/blobs/" in r.path and "/blobs/uploads" not in r.path
        )

    def _record(self, record: RequestRecord) -> int:
        with self._log_lock:
            self._log.append(record)
            return len(self._log) - 1

    def _correct(self, slot: int, record: RequestRecord) -> None:
        with self._log_lock:
            self._log[slot] = record

    # -- serving --

    def _serve(self, request: Request) -> Reply:
        faults = self._faults
        if not faults.available:
            return error_reply(503, "UNAVAILABLE", "service unavailable")
        if faults.latency > 0:
            self._sleep(faults.latency)
        if faults.take_5xx():
            return error_reply(503, "UNAVAILABLE", "service unavailable")
        return self._api.handle(request)

    # -- content --

    def add_image(self, repository: str, tag: str, layout_dir: Path, ref_name: str) -> str:
        """Import the image or index ``ref_name`` of an OCI layout as ``repository:tag``.

        Blobs, child manifests and the top manifest go straight into storage (no HTTP, no
        auth, no faults).  Returns the top-level digest.
        """
        if not valid_name(repository):
            raise ValueError(f"invalid repository name {repository!r}")
        if not valid_tag(tag):
            raise ValueError(f"invalid tag {tag!r}")
        entries = read_layout(Path(layout_dir))
        top = entries.get(ref_name)
        if top is None:
            raise ValueError(f"{layout_dir} has no image named {ref_name!r}")
        self._import(repository, Path(layout_dir), top.digest, top.media_type)
        self.storage.set_tag(repository, tag, top.digest)
        return top.digest

    def _import(self, repository: str, layout: Path, digest: str, declared: str) -> None:
        data = read_blob(layout, digest)
        media_type = oci.media_type_of(data, declared)
        if media_type in oci.INDEX_TYPES:
            for child in oci.parse_index(data, media_type).manifests:
                self._import(repository, layout, child.digest, child.media_type)
        else:
            manifest = oci.parse_manifest(data, media_type)
            for blob in (manifest.config, *manifest.layers):
                self.storage.put_blob(read_blob(layout, blob.digest))
                self.storage.link_blob(repository, blob.digest)
        self.storage.put_blob(data)
        self.storage.add_manifest(repository, digest, media_type)
