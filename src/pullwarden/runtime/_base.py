"""The seam between the image manager and whatever holds images (spec §1.6, design §2).

:class:`ImageService` is shaped like the CRI ImageService — pull with auth, status, list,
remove, filesystem usage — so the embedded store and containerd are interchangeable.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import field
from typing import Protocol

from pullwarden._cancel import CancelToken
from pullwarden._values import frozen
from pullwarden.errors import InvalidReferenceError

__all__ = [
    "AuthConfig",
    "FsUsage",
    "Image",
    "ImageService",
    "Platform",
    "PodSandbox",
    "ProgressCallback",
    "PullProgress",
]


@frozen
class AuthConfig:
    """Credentials for one pull (CRI ``AuthConfig``); ``repr`` never shows a secret."""

    username: str = ""
    password: str = ""
    identity_token: str = ""
    registry_token: str = ""

    def __repr__(self) -> str:
        shown = [f"username={self.username!r}"] if self.username else []
        for name in ("password", "identity_token", "registry_token"):
            if getattr(self, name):
                shown.append(f"{name}=***")
        return f"AuthConfig({', '.join(shown)})"

    @property
    def anonymous(self) -> bool:
        return not (self.username or self.password or self.identity_token or self.registry_token)


@frozen
class Image:
    """An image as the runtime reports it (CRI ``Image``).

    ``id`` is the config digest (``sha256:…``), as containerd reports it; ``repo_tags`` are full
    references (``registry/repo:tag``); ``repo_digests`` are ``registry/repo@<manifest digest>``.
    """

    id: str
    repo_tags: tuple[str, ...] = ()
    repo_digests: tuple[str, ...] = ()
    size: int = 0
    pinned: bool = False  # the runtime asks that garbage collection never remove it


@frozen
class FsUsage:
    """Space the image filesystem uses (CRI ``ImageFsInfo``)."""

    used_bytes: int
    inodes_used: int
    mountpoint: str = ""  # where the image filesystem is mounted ("" when unknown)


@frozen
class PodSandbox:
    """The pod a pull is for (CRI ``PodSandboxConfig``: its metadata and annotations).

    A runtime may use it (containerd passes it to its image pull hooks; the kubelet sends it);
    the embedded store ignores it.
    """

    name: str
    namespace: str
    uid: str
    annotations: Mapping[str, str] = field(default_factory=dict)


_ARCH_ALIASES = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


@frozen
class Platform:
    """An OCI platform: ``os/architecture[/variant]``."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    @classmethod
    def parse(cls, text: str) -> Platform:
        """``linux/arm64/v8`` → Platform; raises InvalidReferenceError on a malformed value."""
        parts = text.split("/")
        if not 2 <= len(parts) <= 3 or not all(parts):
            raise InvalidReferenceError(f"invalid platform {text!r}: expected OS/ARCH[/VARIANT]")
        return cls(parts[0], parts[1], parts[2] if len(parts) == 3 else "")

    @classmethod
    def host(cls) -> Platform:
        """linux and the architecture this machine runs (as OCI spells it)."""
        machine = os.uname().machine.lower()  # platform.machine(), without importing platform
        return cls("linux", _ARCH_ALIASES.get(machine, machine))

    def __str__(self) -> str:
        return "/".join(filter(None, (self.os, self.architecture, self.variant)))


@frozen
class PullProgress:
    """One progress report: ``done`` of ``total`` bytes of blob ``digest`` are on disk."""

    digest: str
    kind: str  # "manifest", "config" or "layer"
    done: int
    total: int
    cached: bool = False  # True when the blob was already present and nothing was downloaded


ProgressCallback = Callable[[PullProgress], None]


class ImageService(Protocol):
    """The image half of a container runtime."""

    def pull_image(
        self,
        image: str,
        auth: AuthConfig | None = None,
        on_progress: ProgressCallback | None = None,
        *,
        cancel: CancelToken | None = None,
        sandbox: PodSandbox | None = None,
    ) -> str:
        """Pull ``image`` with ``auth`` (None = anonymous); returns the image ref (its id).

        The contract callers rely on: when this returns, the image is committed (it is in the
        runtime under that name); when it raises, nothing of this pull was committed.  Once
        ``cancel`` is cancelled the pull stops within about a second, in-flight requests and
        downloads included, and raises ``cancel.error``
        (:class:`~pullwarden.errors.PullCancelledError` unless the canceller chose another).
        A cancel that comes too late to stop the commit is not an error: the pull returns.
        The one exception to "raises ⇒ nothing committed" is
        :class:`~pullwarden.errors.PullOutcomeUnknownError`: a runtime behind a socket may have
        committed a pull whose answer never came.  ``sandbox`` is the pod the pull is for.
        """
        ...

    def image_status(self, image: str) -> Image | None:
        """The image known by this tag, ``repo@digest``, id or bare hex id; None if absent."""
        ...

    def list_images(self) -> list[Image]: ...

    def remove_image(self, image: str) -> None:
        """Remove the image and every name it has; absent is not an error."""
        ...

    def fs_usage(self) -> FsUsage: ...
