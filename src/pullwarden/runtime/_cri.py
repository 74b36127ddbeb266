"""A container runtime's image service over CRI v1 (``runtime.v1.ImageService``), e.g. containerd.

:class:`CRIImageService` is the :class:`~pullwarden.runtime.ImageService` of a runtime reached
the way the kubelet reaches it: gRPC on a unix socket (``--container-runtime-endpoint`` /
``--image-service-endpoint``; ``unix:///run/containerd/containerd.sock`` or a bare absolute
path).  grpcio and the CRI stubs (PyPI ``container-runtime-interface-api``) are imported when
the first service is made, so nothing else pays for them.

**Connecting.**  The constructor calls ``RuntimeService/Version`` and keeps the answer in
:attr:`CRIImageService.version`; a missing socket, a refused connection or a runtime whose CRI
plugin is not loaded fails there with :class:`~pullwarden.errors.RuntimeUnavailableError`.

**Deadlines.**  Every call but ``PullImage`` gets ``request_timeout`` (the kubelet's
``runtimeRequestTimeout``, two minutes).  ``PullImage`` has none by default, as in the kubelet:
the runtime bounds a pull by its progress (containerd 1.7+: ``image_pull_progress_timeout``);
``pull_timeout`` adds an overall one.  A cancel token (the one given to the service, or one per
pull) cancels the call in flight at once.

**Errors** become the error tree's types, so that events, outcomes and exit codes are those of
the embedded store's path.  gRPC ``UNAVAILABLE`` before any answer is
:class:`~pullwarden.errors.RuntimeUnavailableError`; a runtime's pull failure (containerd:
``UNKNOWN`` or ``NOT_FOUND`` with the registry's words in the message) is classified from its
text -- registry unreachable, 401, denied (403, ``insufficient_scope``, ``pull access
denied``), not found -- and keeps that text as its message in gRPC's ``rpc error: code = …
desc = …`` form, masked of every secret the pull sent.  A pull that ends without an answer
(stopped, past its deadline, connection lost) raises
:class:`~pullwarden.errors.PullOutcomeUnknownError`: the runtime may have committed it.

**The image ref.**  containerd reports the image id (``sha256:<config digest>``) from both
``PullImage`` and ``ImageStatus``, and a pull record is only found again if they agree (spec
§1.3, kubernetes issue 137024).  After each pull the returned ref is looked up with
``ImageStatus``: when the runtime names the same image by another ref, its id is returned
(records then match later lookups); when the runtime cannot find its own ref, the ref is
returned unchanged and a warning logged -- records made for it never match, so every pod
using the image is verified (fail safe).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterator
from typing import Any, Final

from pullwarden._cancel import CancelToken
from pullwarden._values import frozen
from pullwarden.errors import (
    ContainerRuntimeError,
    DeniedError,
    InvalidReferenceError,
    NotFoundError,
    PullCancelledError,
    PullOutcomeUnknownError,
    RegistryError,
    RegistryUnavailableError,
    RuntimeUnavailableError,
    UnauthorizedError,
)
from pullwarden.reference import parse_normalized
from pullwarden.runtime._base import (
    AuthConfig,
    FsUsage,
    Image,
    PodSandbox,
    ProgressCallback,
)
from pullwarden.runtime._scrub import mask_secrets

__all__ = [
    "RUNTIME_REQUEST_TIMEOUT",
    "CRIImageService",
    "RuntimeVersion",
    "parse_endpoint",
]

log = logging.getLogger("pullwarden.runtime.cri")

RUNTIME_REQUEST_TIMEOUT: Final = 120.0
"""Seconds every CRI call but ``PullImage`` may take (the kubelet's ``runtimeRequestTimeout``)."""

_MAX_MESSAGE: Final = 16 * 1024 * 1024  # the kubelet's gRPC message size limit, both ways
_CRI_API_VERSION: Final = "v1"

# Texts in a runtime's pull error that say why it failed (containerd quotes the registry's
# status line and Go's network errors).  Checked in this order: a token service that cannot be
# reached makes "failed to authorize" fail for want of a network, not of credentials.
_UNREACHABLE: Final = (
    "connection refused",
    "connection reset",
    "no such host",
    "i/o timeout",
    "network is unreachable",
    "no route to host",
    "tls handshake timeout",
    "500 internal server error",
    "502 bad gateway",
    "503 service unavailable",
    "504 gateway timeout",
)
_DENIED: Final = ("pull access denied", "insufficient_scope", "403 forbidden", "denied:")
_UNAUTHORIZED: Final = ("401 unauthorized", "failed to authorize", "unauthorized:")
_NOT_FOUND: Final = (": not found", "manifest unknown", "name unknown")


@frozen
class RuntimeVersion:
    """What ``RuntimeService/Version`` says: ``containerd 1.6.20~ds1 (CRI v1)``."""

    runtime_name: str
    runtime_version: str
    runtime_api_version: str

    def __str__(self) -> str:
        return f"{self.runtime_name} {self.runtime_version} (CRI {self.runtime_api_version})"


def parse_endpoint(endpoint: str) -> tuple[str, str]:
    """``unix:///path`` or ``/path`` → (the gRPC target, the socket path).

    Raises :class:`~pullwarden.errors.ContainerRuntimeError` for any other form: on Linux the
    kubelet reaches its runtime on a unix socket only.
    """
    text = endpoint.strip()
    if text.startswith("unix://"):
        path = text[len("unix://") :]
    elif "://" not in text:
        path = text
    else:
        scheme = text.split("://", 1)[0]
        raise ContainerRuntimeError(
            f"unsupported container runtime endpoint {endpoint!r}: the {scheme}:// scheme is "
            "not supported, use unix:///path/to/socket",
            endpoint=endpoint,
        )
    if not path.startswith("/"):
        raise ContainerRuntimeError(
            f"invalid container runtime endpoint {endpoint!r}: expected unix:///path/to/socket "
            "or an absolute socket path",
            endpoint=endpoint,
        )
    return f"unix://{path}", path


class _Stubs:
    """grpc and the CRI v1 modules, imported once, on first use."""

    _lock = threading.Lock()
    _loaded: tuple[Any, Any, Any] | None = None

    @classmethod
    def load(cls) -> tuple[Any, Any, Any]:
        with cls._lock:
            if cls._loaded is None:
                try:
                    grpc = importlib.import_module("grpc")
                    api = importlib.import_module("cri_api.v1.api_pb2")
                    services = importlib.import_module("cri_api.v1.api_pb2_grpc")
                except ImportError as err:
                    raise ContainerRuntimeError(
                        f"CRI support needs grpcio and container-runtime-interface-api ({err}): "
                        "pip install grpcio container-runtime-interface-api"
                    ) from err
                cls._loaded = (grpc, api, services)
            return cls._loaded


class CRIImageService:
    """The image service of the CRI runtime at ``endpoint`` (see the module docstring).

    ``cancel`` stops every call in flight once it is cancelled (a node's Ctrl-C); close the
    service (or use it as a context manager) to close its channel.
    """

    def __init__(
        self,
        endpoint: str,
        *,
        request_timeout: float = RUNTIME_REQUEST_TIMEOUT,
        pull_timeout: float | None = None,
        cancel: CancelToken | None = None,
    ) -> None:
        self.endpoint = endpoint
        target, self._socket = parse_endpoint(endpoint)
        self.request_timeout = request_timeout
        self.pull_timeout = pull_timeout
        self._cancel = cancel
        self._grpc, self._api, services = _Stubs.load()
        self._check_socket()
        self._channel = self._grpc.insecure_channel(
            target,
            options=[
                ("grpc.max_receive_message_length", _MAX_MESSAGE),
                ("grpc.max_send_message_length", _MAX_MESSAGE),
            ],
        )
        try:
            self._images = services.ImageServiceStub(self._channel)
            self._runtime = services.RuntimeServiceStub(self._channel)
            self.version = self._connect()
        except BaseException:
            self._channel.close()
            raise

    def __repr__(self) -> str:
        return f"CRIImageService({self.endpoint!r})"

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> CRIImageService:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- connecting ----------------------------------------------------------------------------

    def _check_socket(self) -> None:
        """A clear error for the common mistakes before gRPC gives its own."""
        try:
            mode = os.stat(self._socket).st_mode
        except FileNotFoundError:
            raise self._unavailable(
                f"{self._socket} does not exist (is the runtime running?)"
            ) from None
        except OSError as err:
            raise self._unavailable(f"cannot reach {self._socket}: {err.strerror or err}") from None
        if not stat.S_ISSOCK(mode):
            raise self._unavailable(f"{self._socket} is not a socket")

    def _unavailable(self, why: str) -> RuntimeUnavailableError:
        return RuntimeUnavailableError(
            f"container runtime unavailable at {self.endpoint}: {why}",
            endpoint=self.endpoint,
            code="UNAVAILABLE",
        )

    def _connect(self) -> RuntimeVersion:
        request = self._api.VersionRequest(version=_CRI_API_VERSION)
        try:
            answer = self._call(self._runtime.Version, request, self.request_timeout, None)
        except ContainerRuntimeError as err:
            if err.code == "UNIMPLEMENTED":
                raise RuntimeUnavailableError(
                    f"the container runtime at {self.endpoint} does not serve CRI v1 "
                    "(runtime.v1.RuntimeService/Version is not implemented): for containerd, "
                    "check that its CRI plugin loaded (ctr plugins ls | grep cri)",
                    endpoint=self.endpoint,
                    code=err.code,
                ) from None
            raise
        version = RuntimeVersion(
            answer.runtime_name, answer.runtime_version, answer.runtime_api_version
        )
        if version.runtime_api_version != _CRI_API_VERSION:
            raise RuntimeUnavailableError(
                f"the container runtime at {self.endpoint} ({version}) does not speak CRI "
                f"{_CRI_API_VERSION}",
                endpoint=self.endpoint,
            )
        log.debug("connected to %s at %s", version, self.endpoint)
        return version

    # -- the ImageService protocol -----------------------------------------------------------

    def pull_image(
        self,
        image: str,
        auth: AuthConfig | None = None,
        on_progress: ProgressCallback | None = None,  # CRI reports no progress
        *,
        cancel: CancelToken | None = None,
        sandbox: PodSandbox | None = None,
    ) -> str:
        """``PullImage``; returns the runtime's ref for the image (see the module docstring)."""
        for token in (self._cancel, cancel):
            if token is not None:
                token.raise_if_cancelled()
        api = self._api
        annotations = dict(sandbox.annotations) if sandbox is not None else {}
        request = api.PullImageRequest(
            image=api.ImageSpec(image=image, annotations=annotations, user_specified_image=image)
        )
        secrets: set[str] = set()
        if auth is not None and not auth.anonymous:
            request.auth.CopyFrom(
                api.AuthConfig(
                    username=auth.username,
                    password=auth.password,
                    identity_token=auth.identity_token,
                    registry_token=auth.registry_token,
                )
            )
            secrets = {auth.password, auth.identity_token, auth.registry_token} - {""}
        if sandbox is not None:
            metadata = api.PodSandboxMetadata(
                name=sandbox.name, namespace=sandbox.namespace, uid=sandbox.uid
            )
            request.sandbox_config.CopyFrom(
                api.PodSandboxConfig(metadata=metadata, annotations=annotations)
            )
        answer = self._call(
            self._images.PullImage, request, self.pull_timeout, cancel, pull=image, secrets=secrets
        )
        return self._settled_ref(image, answer.image_ref)

    def _settled_ref(self, image: str, ref: str) -> str:
        """The ref to record for a pull the runtime answered with ``ref`` (module docstring).

        Never raises: the pull has committed, and raising would say it had not.
        """
        try:
            status = self.image_status(ref) if ref else None
        except Exception as err:
            log.warning(
                "cannot look up %s after pulling %s (%s): recording it as is", ref, image, err
            )
            return ref
        if status is not None and status.id == ref:
            return ref
        if status is not None:
            log.warning(
                "%s reported %s for the pull of %s, which it knows as image %s: recording %s",
                self.version.runtime_name,
                ref,
                image,
                status.id,
                status.id,
            )
            return status.id
        log.warning(
            "%s reported %r for the pull of %s but has no image by that ref: records made for "
            "it will never match, so every pod using it will be verified",
            self.version.runtime_name,
            ref,
            image,
        )
        return ref

    def image_status(self, image: str) -> Image | None:
        """``ImageStatus`` (not verbose); None when the runtime has no such image."""
        request = self._api.ImageStatusRequest(image=self._api.ImageSpec(image=image))
        answer = self._call(self._images.ImageStatus, request, self.request_timeout, None)
        return _image(answer.image) if answer.HasField("image") else None

    def list_images(self) -> list[Image]:
        answer = self._call(
            self._images.ListImages, self._api.ListImagesRequest(), self.request_timeout, None
        )
        return sorted((_image(i) for i in answer.images), key=lambda i: i.id)

    def remove_image(self, image: str) -> None:
        """``RemoveImage``: the image and every name it has (absent is not an error)."""
        request = self._api.RemoveImageRequest(image=self._api.ImageSpec(image=image))
        self._call(self._images.RemoveImage, request, self.request_timeout, None)

    def fs_usage(self) -> FsUsage:
        """``ImageFsInfo``: the image filesystems' usage (summed) and the first mountpoint."""
        answer = self._call(
            self._images.ImageFsInfo, self._api.ImageFsInfoRequest(), self.request_timeout, None
        )
        filesystems = list(answer.image_filesystems)
        return FsUsage(
            used_bytes=sum(f.used_bytes.value for f in filesystems),
            inodes_used=sum(f.inodes_used.value for f in filesystems),
            mountpoint=filesystems[0].fs_id.mountpoint if filesystems else "",
        )

    # -- calls -----------------------------------------------------------------------------------

    def _call(
        self,
        rpc: Any,
        request: Any,
        timeout: float | None,
        cancel: CancelToken | None,
        *,
        pull: str = "",
        secrets: set[str] | None = None,
    ) -> Any:
        """One unary call, cancelled by either token; errors mapped (see :meth:`_error`)."""
        grpc = self._grpc
        future = rpc.future(request, timeout=timeout)
        tokens = [t for t in (self._cancel, cancel) if t is not None]
        with _cancelling(tokens, lambda: future.cancel()):
            try:
                return future.result()
            except grpc.FutureCancelledError:
                stopped = next((t.error for t in tokens if t.error is not None), None)
                why = str(stopped or PullCancelledError("cancelled"))
                if pull:
                    raise PullOutcomeUnknownError(
                        f"the pull of {pull} was stopped ({why}) while {self.endpoint} worked on "
                        "it: the runtime may have pulled it",
                        endpoint=self.endpoint,
                        code="CANCELLED",
                    ) from None
                raise stopped or PullCancelledError(why) from None
            except grpc.RpcError as err:
                raise self._error(err, pull, secrets or set()) from None

    def _error(self, err: Any, pull: str, secrets: set[str]) -> Exception:
        """The error-tree exception for a failed call (``pull``: the image, for PullImage)."""
        code = err.code()
        name = code.name if code is not None else "UNKNOWN"
        details = mask_secrets(err.details() or "", secrets)
        text = f"rpc error: code = {_go_code(name)} desc = {details}"
        kwargs = {"endpoint": self.endpoint, "code": name}
        if name == "UNAVAILABLE" and _never_connected(details):
            return RuntimeUnavailableError(
                f"container runtime unavailable at {self.endpoint}: {_short(details)}", **kwargs
            )
        if not pull:
            if name == "DEADLINE_EXCEEDED":
                return ContainerRuntimeError(
                    f"{self.endpoint} did not answer within {self.request_timeout:g}s: {text}",
                    **kwargs,
                )
            if name == "INVALID_ARGUMENT" or "invalid reference format" in details:
                return InvalidReferenceError(text)
            return ContainerRuntimeError(text, **kwargs)
        if name in ("UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED", "INTERNAL"):
            return PullOutcomeUnknownError(
                f"the pull of {pull} ended without an answer from {self.endpoint} ({text}): "
                "the runtime may have pulled it",
                **kwargs,
            )
        return _registry_error(name, details, text, pull)


def _registry_error(code: str, details: str, text: str, image: str) -> Exception:
    """A runtime's pull failure, classified from its text as the registry client would be."""
    where = _where(image)
    lowered = details.lower()
    kind: type[RegistryError] | None = None
    if any(s in lowered for s in _UNREACHABLE):
        kind = RegistryUnavailableError
    elif any(s in lowered for s in _DENIED):
        kind = DeniedError
    elif any(s in lowered for s in _UNAUTHORIZED):
        kind = UnauthorizedError
    elif code == "NOT_FOUND" or any(s in lowered for s in _NOT_FOUND):
        kind = NotFoundError
    if kind is None:
        if code == "INVALID_ARGUMENT" or "invalid reference format" in lowered:
            return InvalidReferenceError(text)
        return ContainerRuntimeError(text, code=code)
    return kind(text, **where)


def _where(image: str) -> dict[str, str]:
    """registry/repository/reference of ``image`` for a RegistryError (empty if unparsable)."""
    try:
        ref = parse_normalized(image)
    except InvalidReferenceError:
        return {}
    return {
        "registry": ref.domain,
        "repository": ref.path,
        "reference": ref.digest or ref.tag or "latest",
    }


def _image(message: Any) -> Image:
    return Image(
        id=message.id,
        repo_tags=tuple(message.repo_tags),
        repo_digests=tuple(message.repo_digests),
        size=int(message.size),
        pinned=bool(message.pinned),
    )


def _go_code(name: str) -> str:
    """A gRPC code name as Go spells it in ``rpc error: code = …``: ``NOT_FOUND`` → ``NotFound``."""
    if name == "CANCELLED":
        return "Canceled"
    return "".join(part.capitalize() for part in name.split("_"))


def _never_connected(details: str) -> bool:
    """Whether an UNAVAILABLE status says the request never reached the runtime."""
    lowered = details.lower()
    return "failed to connect" in lowered or "connection refused" in lowered


def _short(details: str) -> str:
    """gRPC's connection failure without its repetitions (``…; last error: …`` and so on)."""
    return details.split("; last error:", 1)[-1].strip() or details


@contextlib.contextmanager
def _cancelling(tokens: list[CancelToken], callback: Callable[[], None]) -> Iterator[None]:
    with contextlib.ExitStack() as stack:
        for token in tokens:
            stack.enter_context(token.on_cancel(callback))
        yield
