"""The OCI distribution API of the development registry, independent of sockets.

:class:`DistributionApi` turns a :class:`Request` into a :class:`Reply`; the HTTP plumbing in
:mod:`pullwarden.devregistry.server` reads and writes the bytes.  Endpoints:

* ``GET /v2/`` — ``{}`` once authenticated.
* ``GET|HEAD /v2/<name>/manifests/<tag|digest>`` — with ``Content-Type``,
  ``Docker-Content-Digest`` and ``Content-Length``.  The ``Accept`` header is honoured as
  docker-registry 2.8 does it: OCI manifests and indexes are ``404 MANIFEST_UNKNOWN`` unless
  their media type is listed, a Docker schema 2 manifest is ``400 MANIFEST_INVALID`` unless
  listed (2.8 would try to convert it to schema 1), and a Docker manifest list that is not
  accepted is replaced by its ``linux/amd64`` entry.
* ``PUT /v2/<name>/manifests/<tag|digest>`` — ``201``; every referenced blob or child manifest
  must already be in the repository (``400 MANIFEST_BLOB_UNKNOWN``).
* ``GET|HEAD /v2/<name>/blobs/<digest>`` — only blobs linked into ``<name>``.
* ``POST /v2/<name>/blobs/uploads/`` — ``202`` with ``Location: …?_state=…``, or ``201`` for a
  cross-repository mount (``?mount=<digest>&from=<repo>``) the client may pull from.  A
  ``?digest=`` on the POST only opens a session, as in 2.8.
* ``PATCH`` (``Content-Range`` optional, checked when sent), ``PUT ?digest=`` (final or
  monolithic), ``GET`` (status) and ``DELETE`` (cancel) on the session ``Location``.  The
  uploaded bytes are verified against the digest: ``400 DIGEST_INVALID``.
* ``GET /v2/<name>/tags/list`` — with ``n`` and ``last``.
* ``GET|POST /token`` — the token endpoint in ``token`` mode (see :mod:`.auth`).

Errors are distribution's JSON, ``{"errors": [{"code", "message", "detail"}]}``.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import Message
from typing import Any, BinaryIO
from urllib.parse import parse_qs, quote

from pullwarden._gojson import format_rfc3339
from pullwarden.devregistry.auth import TOKEN_LIFETIME, Authority, Decision
from pullwarden.devregistry.faults import Faults
from pullwarden.devregistry.storage import Storage, Upload
from pullwarden.errors import RegistryError
from pullwarden.runtime import Platform, oci

__all__ = [
    "DistributionApi",
    "Reply",
    "Request",
    "error_reply",
    "valid_name",
    "valid_tag",
]

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[a-f0-9]{64}$")
_RANGE = re.compile(r"^(?:bytes=)?(\d+)-(\d+)$")

_UPLOADS = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/?$")
_UPLOAD = re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/(?P<id>[^/]+)$")
_BLOB = re.compile(r"^/v2/(?P<name>.+)/blobs/(?P<digest>[^/]+)$")
_MANIFEST = re.compile(r"^/v2/(?P<name>.+)/manifests/(?P<ref>[^/]+)$")
_TAGS = re.compile(r"^/v2/(?P<name>.+)/tags/list$")

_JSON = "application/json; charset=utf-8"
_PULL: tuple[str, ...] = ("pull",)
_PUSH: tuple[str, ...] = ("pull", "push")
_MAX_FORM = 64 * 1024
# Padding for the oversized-manifest fault: past the 4 MiB limit clients enforce.
_OVERSIZED = oci.MAX_MANIFEST_BYTES + 4096


def valid_name(name: str) -> bool:
    """True for a repository name of the distribution grammar (at most 255 characters)."""
    return len(name) <= 255 and _NAME.match(name) is not None


def valid_tag(tag: str) -> bool:
    return _TAG.match(tag) is not None


class BodyTooLarge(Exception):
    """The request body is larger than the endpoint accepts."""


@dataclass
class Request:
    """One HTTP request; ``body`` yields the body's chunks and may be read only once."""

    method: str
    path: str
    query: Mapping[str, list[str]]
    headers: Message
    body: Callable[[], Iterator[bytes]]

    def header(self, name: str) -> str:
        return self.headers.get(name, "") or ""

    def param(self, name: str) -> str:
        values = self.query.get(name)
        return values[0] if values else ""

    def read(self, limit: int) -> bytes:
        parts: list[bytes] = []
        size = 0
        for chunk in self.body():
            size += len(chunk)
            if size > limit:
                raise BodyTooLarge
            parts.append(chunk)
        return b"".join(parts)


@dataclass
class Reply:
    """An answer: status, headers, and a body as bytes or as a stream of ``length`` bytes.

    ``user`` is who the request was served for (None = anonymous).  ``corrupt`` flips the
    body's first byte; ``drop_after`` closes the connection after that many body bytes.
    """

    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    stream: BinaryIO | None = None
    length: int | None = None
    user: str | None = None
    corrupt: bool = False
    drop_after: int | None = None

    @property
    def content_length(self) -> int:
        return self.length if self.length is not None else len(self.body)


def error_reply(
    status: int,
    code: str,
    message: str,
    detail: Any = None,
    headers: Sequence[tuple[str, str]] = (),
    user: str | None = None,
) -> Reply:
    body = json.dumps({"errors": [{"code": code, "message": message, "detail": detail}]})
    return Reply(status, [("Content-Type", _JSON), *headers], (body + "\n").encode(), user=user)


def _json_reply(document: object, status: int = 200, user: str | None = None) -> Reply:
    return Reply(status, [("Content-Type", _JSON)], json.dumps(document).encode(), user=user)


def _accepted_types(request: Request) -> set[str]:
    values = request.headers.get_all("Accept") or []
    return {
        part.split(";")[0].strip().lower()
        for value in values
        for part in str(value).split(",")
        if part.strip()
    }


def _manifest_not_found(detail: Any, message: str = "manifest unknown") -> Reply:
    return error_reply(404, "MANIFEST_UNKNOWN", message, detail)


def _digest_invalid(message: str = "provided digest did not match uploaded content") -> Reply:
    return error_reply(400, "DIGEST_INVALID", message)


class DistributionApi:
    """The registry's endpoints over a :class:`Storage`, an :class:`Authority` and
    :class:`Faults`; thread-safe.  ``realm`` is the token endpoint URL once known.
    """

    def __init__(self, storage: Storage, authority: Authority, faults: Faults) -> None:
        self.storage = storage
        self.authority = authority
        self.faults = faults
        self._uploads: dict[str, tuple[Upload, str]] = {}
        self._lock = threading.Lock()

    # -- entry point --

    def handle(self, request: Request) -> Reply:
        path, method = request.path, request.method
        if path == "/token":
            if method in ("GET", "POST"):
                return self._token(request)
            return self._unsupported(405)
        if path in ("/v2", "/v2/"):
            if method not in ("GET", "HEAD"):
                return self._unsupported(405)
            decision = self.authority.check(request.header("Authorization"), None, ())
            if not decision.allowed:
                return self._refused(decision, None, ())
            return _json_reply({}, user=decision.user)
        routes: tuple[tuple[re.Pattern[str], Callable[[Request, re.Match[str]], Reply]], ...] = (
            (_UPLOADS, self._uploads_endpoint),
            (_UPLOAD, self._upload_endpoint),
            (_BLOB, self._blob_endpoint),
            (_MANIFEST, self._manifest_endpoint),
            (_TAGS, self._tags_endpoint),
        )
        for pattern, endpoint in routes:
            match = pattern.match(path)
            if match is not None:
                if not valid_name(match["name"]):
                    return error_reply(
                        400, "NAME_INVALID", "invalid repository name", {"name": match["name"]}
                    )
                return endpoint(request, match)
        return self._unsupported(404)

    @staticmethod
    def _unsupported(status: int) -> Reply:
        return error_reply(status, "UNSUPPORTED", "The operation is unsupported.")

    # -- access --

    def _authorize(
        self, request: Request, name: str, actions: tuple[str, ...]
    ) -> tuple[str | None, Reply | None]:
        """``(user, None)`` when allowed, else ``(user, the refusal)``."""
        decision = self.authority.check(request.header("Authorization"), name, actions)
        if decision.allowed:
            return decision.user, None
        return decision.user, self._refused(decision, name, actions)

    @staticmethod
    def _refused(decision: Decision, name: str | None, actions: tuple[str, ...]) -> Reply:
        detail = (
            [{"Type": "repository", "Name": name, "Action": action} for action in actions]
            if name is not None
            else None
        )
        headers = [("WWW-Authenticate", decision.challenge)] if decision.challenge else []
        return error_reply(
            decision.status, decision.code, decision.message, detail, headers, decision.user
        )

    # -- manifests --

    def _manifest_endpoint(self, request: Request, match: re.Match[str]) -> Reply:
        name, ref = match["name"], match["ref"]
        if request.method in ("GET", "HEAD"):
            user, refusal = self._authorize(request, name, _PULL)
            if refusal is not None:
                return refusal
            reply = self._get_manifest(request, name, ref)
        elif request.method == "PUT":
            user, refusal = self._authorize(request, name, _PUSH)
            if refusal is not None:
                return refusal
            reply = self._put_manifest(request, name, ref)
        else:
            return self._unsupported(405)
        reply.user = user
        return reply

    def _resolve(self, name: str, ref: str) -> tuple[str, str] | Reply:
        """``(digest, media type)`` of manifest ``ref`` in ``name``, or the error."""
        if ":" in ref:
            if not _DIGEST.match(ref):
                return _digest_invalid("invalid or unsupported digest")
            digest = ref
        else:
            found = self.storage.resolve_tag(name, ref) if valid_tag(ref) else None
            if found is None:
                return _manifest_not_found({"Tag": ref})
            digest = found
        media_type = self.storage.manifest_type(name, digest)
        if media_type is None:
            return _manifest_not_found({"Revision": digest})
        return digest, media_type

    def _get_manifest(self, request: Request, name: str, ref: str) -> Reply:
        resolved = self._resolve(name, ref)
        if isinstance(resolved, Reply):
            return resolved
        digest, media_type = resolved
        accepted = _accepted_types(request)
        data = self.storage.read_blob(digest)
        if media_type == oci.DOCKER_LIST and oci.DOCKER_LIST not in accepted:
            # 2.8 answers a client that cannot read manifest lists with the amd64/linux entry.
            try:
                entries = oci.parse_index(data, media_type).manifests
                chosen = oci.select_platform(entries, Platform("linux", "amd64"))
            except RegistryError:
                return _manifest_not_found({"Revision": digest})
            return self._get_manifest(request, name, chosen.digest)
        if media_type == oci.OCI_MANIFEST and oci.OCI_MANIFEST not in accepted:
            return _manifest_not_found(
                None, "OCI manifest found, but accept header does not support OCI manifests"
            )
        if media_type == oci.OCI_INDEX and oci.OCI_INDEX not in accepted:
            return _manifest_not_found(
                None, "OCI index found, but accept header does not support OCI indexes"
            )
        if media_type == oci.DOCKER_MANIFEST and oci.DOCKER_MANIFEST not in accepted:
            return error_reply(
                400, "MANIFEST_INVALID", "manifest invalid", "schema 1 manifests are not served"
            )
        if self.faults.oversized_manifest and len(data) < _OVERSIZED:
            data += b" " * (_OVERSIZED - len(data))
            digest = oci.digest_of(data)
        headers = [
            ("Content-Type", media_type),
            ("Docker-Content-Digest", digest),
            ("ETag", f'"{digest}"'),
        ]
        return Reply(200, headers, data)

    def _put_manifest(self, request: Request, name: str, ref: str) -> Reply:
        if ":" in ref:
            if not _DIGEST.match(ref):
                return _digest_invalid("invalid or unsupported digest")
        elif not valid_tag(ref):
            return error_reply(400, "TAG_INVALID", "manifest tag did not match URI", ref)
        try:
            data = request.read(oci.MAX_MANIFEST_BYTES)
        except BodyTooLarge:
            return error_reply(400, "MANIFEST_INVALID", "manifest invalid", "manifest too large")
        content_type = request.header("Content-Type").split(";")[0].strip()
        try:
            media_type = oci.media_type_of(data, content_type)
            if media_type in oci.INDEX_TYPES:
                children = oci.parse_index(data, media_type).manifests
                missing = [
                    d.digest for d in children if self.storage.manifest_type(name, d.digest) is None
                ]
            else:
                manifest = oci.parse_manifest(data, media_type)
                missing = [
                    d.digest
                    for d in (manifest.config, *manifest.layers)
                    if not self.storage.blob_linked(name, d.digest)
                ]
        except RegistryError as exc:
            return error_reply(400, "MANIFEST_INVALID", "manifest invalid", str(exc))
        if missing:
            return error_reply(400, "MANIFEST_BLOB_UNKNOWN", "blob unknown to registry", missing[0])
        digest = oci.digest_of(data)
        if ":" in ref and ref != digest:
            return _digest_invalid()
        self.storage.put_blob(data)
        self.storage.add_manifest(name, digest, media_type)
        if ":" not in ref:
            self.storage.set_tag(name, ref, digest)
        headers = [
            ("Location", f"/v2/{name}/manifests/{digest}"),
            ("Docker-Content-Digest", digest),
        ]
        return Reply(201, headers)

    # -- blobs --

    def _blob_endpoint(self, request: Request, match: re.Match[str]) -> Reply:
        name, digest = match["name"], match["digest"]
        if request.method not in ("GET", "HEAD"):
            return self._unsupported(405)
        user, refusal = self._authorize(request, name, _PULL)
        if refusal is not None:
            return refusal
        reply = self._get_blob(request, name, digest)
        reply.user = user
        return reply

    def _get_blob(self, request: Request, name: str, digest: str) -> Reply:
        if not _DIGEST.match(digest):
            return _digest_invalid("invalid or unsupported digest")
        size = self.storage.blob_size(digest)
        if size is None or not self.storage.blob_linked(name, digest):
            return error_reply(404, "BLOB_UNKNOWN", "blob unknown to registry", digest)
        headers = [
            ("Content-Type", "application/octet-stream"),
            ("Docker-Content-Digest", digest),
            ("ETag", f'"{digest}"'),
            ("Accept-Ranges", "bytes"),
        ]
        if request.method == "HEAD":
            return Reply(200, headers, length=size)
        origin = self.faults.redirect_blobs_to
        if origin is not None:
            location = origin.rstrip("/") + request.path
            return Reply(307, [("Location", location)])
        drop_after = size // 2 if self.faults.take_drop() else None
        return Reply(
            200,
            headers,
            stream=self.storage.open_blob(digest),
            length=size,
            corrupt=self.faults.wrong_digest,
            drop_after=drop_after,
        )

    # -- uploads --

    def _uploads_endpoint(self, request: Request, match: re.Match[str]) -> Reply:
        name = match["name"]
        if request.method != "POST":
            return self._unsupported(405)
        user, refusal = self._authorize(request, name, _PUSH)
        if refusal is not None:
            return refusal
        mounted = self._mount(name, request.param("mount"), request.param("from"), user)
        if mounted is not None:
            mounted.user = user
            return mounted
        for _ in request.body():  # a body on the POST is not a monolithic upload in 2.8
            pass
        upload = self.storage.begin_upload(name)
        state = secrets.token_urlsafe(16)
        with self._lock:
            self._uploads[upload.id] = (upload, state)
        return Reply(202, self._upload_headers(upload, state), user=user)

    def _mount(self, name: str, digest: str, source: str, user: str | None) -> Reply | None:
        if not digest or not source or not _DIGEST.match(digest) or not valid_name(source):
            return None
        if "pull" not in self.authority.allowed_actions(user, source):
            return None
        if not self.storage.blob_linked(source, digest):
            return None
        self.storage.link_blob(name, digest)
        return Reply(
            201,
            [("Location", f"/v2/{name}/blobs/{digest}"), ("Docker-Content-Digest", digest)],
        )

    @staticmethod
    def _upload_headers(upload: Upload, state: str) -> list[tuple[str, str]]:
        location = f"/v2/{upload.repository}/blobs/uploads/{upload.id}?_state={quote(state)}"
        return [
            ("Location", location),
            ("Docker-Upload-UUID", upload.id),
            ("Range", f"0-{max(upload.size - 1, 0)}"),
        ]

    def _session(self, request: Request, name: str, upload_id: str) -> tuple[Upload, str] | Reply:
        with self._lock:
            entry = self._uploads.get(upload_id)
        if entry is None or entry[0].repository != name:
            return error_reply(
                404, "BLOB_UPLOAD_UNKNOWN", "blob upload unknown to registry", upload_id
            )
        upload, state = entry
        if not secrets.compare_digest(request.param("_state"), state):
            return error_reply(400, "BLOB_UPLOAD_INVALID", "blob upload invalid", "bad _state")
        return upload, state

    def _forget(self, upload: Upload) -> None:
        with self._lock:
            self._uploads.pop(upload.id, None)
        upload.discard()

    def _upload_endpoint(self, request: Request, match: re.Match[str]) -> Reply:
        name, upload_id = match["name"], match["id"]
        if request.method not in ("GET", "PATCH", "PUT", "DELETE"):
            return self._unsupported(405)
        user, refusal = self._authorize(request, name, _PUSH)
        if refusal is not None:
            return refusal
        session = self._session(request, name, upload_id)
        if isinstance(session, Reply):
            return session
        upload, state = session
        with upload.lock:
            if request.method == "GET":
                reply = Reply(204, self._upload_headers(upload, state))
            elif request.method == "DELETE":
                self._forget(upload)
                reply = Reply(204)
            elif request.method == "PATCH":
                reply = self._patch(request, upload, state)
            else:
                reply = self._finish(request, name, upload)
        reply.user = user
        return reply

    def _patch(self, request: Request, upload: Upload, state: str) -> Reply:
        content_range = request.header("Content-Range").strip()
        if content_range:
            parsed = _RANGE.match(content_range)
            if parsed is None or int(parsed[1]) != upload.size:
                return error_reply(
                    416,
                    "BLOB_UPLOAD_INVALID",
                    "blob upload invalid",
                    f"range does not start at offset {upload.size}",
                )
        for chunk in request.body():
            upload.write(chunk)
        return Reply(202, self._upload_headers(upload, state))

    def _finish(self, request: Request, name: str, upload: Upload) -> Reply:
        digest = request.param("digest")
        if not _DIGEST.match(digest):
            self._forget(upload)
            return _digest_invalid("digest parameter missing or not a sha256 digest")
        for chunk in request.body():
            upload.write(chunk)
        if upload.digest != digest:
            self._forget(upload)
            return _digest_invalid()
        with self._lock:
            self._uploads.pop(upload.id, None)
        self.storage.commit_upload(upload)
        self.storage.link_blob(name, digest)
        headers = [("Location", f"/v2/{name}/blobs/{digest}"), ("Docker-Content-Digest", digest)]
        return Reply(201, headers)

    def discard_uploads(self) -> None:
        with self._lock:
            pending = [upload for upload, _ in self._uploads.values()]
            self._uploads.clear()
        for upload in pending:
            upload.discard()

    # -- tags --

    def _tags_endpoint(self, request: Request, match: re.Match[str]) -> Reply:
        name = match["name"]
        if request.method not in ("GET", "HEAD"):
            return self._unsupported(405)
        user, refusal = self._authorize(request, name, _PULL)
        if refusal is not None:
            return refusal
        tags = self.storage.tags(name)
        if tags is None:
            return error_reply(
                404, "NAME_UNKNOWN", "repository name not known to registry", {"name": name}
            )
        last = request.param("last")
        if last:
            tags = [t for t in tags if t > last]
        headers: list[tuple[str, str]] = []
        count = request.param("n")
        if count.isdigit():
            limit = int(count)
            if len(tags) > limit:
                tags = tags[:limit]
                if tags:
                    link = f"/v2/{name}/tags/list?n={limit}&last={quote(tags[-1])}"
                    headers.append(("Link", f'<{link}>; rel="next"'))
        reply = _json_reply({"name": name, "tags": tags}, user=user)
        reply.headers.extend(headers)
        return reply

    # -- token endpoint --

    def _token(self, request: Request) -> Reply:
        authority = self.authority
        if authority.mode != "token":
            return self._unsupported(404)
        if request.method == "POST":
            try:
                form = parse_qs(request.read(_MAX_FORM).decode("utf-8", "replace"))
            except BodyTooLarge:
                return _json_reply({"error": "invalid_request"}, 400)
            grant_type = (form.get("grant_type") or [""])[0]
            if grant_type != "password":
                return _json_reply({"error": "unsupported_grant_type"}, 400)
            ok, user = authority.login(
                (form.get("username") or [""])[0], (form.get("password") or [""])[0]
            )
            raw_scopes = form.get("scope") or []
        else:
            ok, user = authority.authenticate(request.header("Authorization") or None)
            raw_scopes = list(request.query.get("scope") or [])
        if not ok:
            return error_reply(
                401,
                "UNAUTHORIZED",
                "authentication required",
                None,
                [("WWW-Authenticate", 'Basic realm="pullwarden-devregistry"')],
            )
        scopes = [s for raw in raw_scopes for s in raw.split()]
        token, grant = authority.issue_token(user, scopes)
        issued = format_rfc3339(grant.issued_at)
        return _json_reply(
            {
                "token": token,
                "access_token": token,
                "expires_in": TOKEN_LIFETIME,
                "issued_at": issued,
            },
            user=user,
        )
