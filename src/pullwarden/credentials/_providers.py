"""Node-level credentials from docker config files (spec §2.4a).

The kubelet reads ``config.json`` from, in order, its preferred path (its root directory),
its working directory, ``$HOME/.docker`` and ``/.docker``; the first file that can be read and
decoded wins.  Only when none is found does it try ``.dockercfg`` in the preferred path, the
working directory, ``$HOME`` and ``/``.  Nothing found means an empty config.  The result is
cached for five minutes.  These credentials have no source: every pod on the node may use them.

Credential provider plugins (spec §2.4b) are not implemented here.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final, Protocol

from pullwarden.credentials._dockerconfig import (
    DockerConfig,
    empty_config,
    parse_config_json,
    parse_dockercfg,
)
from pullwarden.credentials._keyring import DockerKeyring, TrackedCredential
from pullwarden.errors import DockerConfigError

__all__ = [
    "DEFAULT_CACHE_TTL",
    "DockerConfigProvider",
    "NodeDockerConfigProvider",
    "ProviderKeyring",
]

_log = logging.getLogger(__name__)

DEFAULT_CACHE_TTL: Final = 300.0
"""Seconds a node docker config stays cached (the kubelet's five minutes)."""

_CONFIG_JSON: Final = "config.json"
_DOCKERCFG: Final = ".dockercfg"


class DockerConfigProvider(Protocol):
    """A source of node-wide docker configs."""

    def config(self) -> DockerConfig: ...


class NodeDockerConfigProvider:
    """The kubelet's ``.dockercfg`` provider with its five-minute cache.

    ``preferred_path`` is the kubelet root directory (``/var/lib/kubelet`` by default).
    ``work_dir`` defaults to the process's current directory at read time, ``home`` to ``$HOME``
    at construction (an unset ``$HOME`` means paths relative to the working directory, as in the
    kubelet).  ``clock`` returns seconds; the file is re-read once ``ttl`` seconds have passed since
    the last read.  ``root`` (``/``) is only there so tests can keep off the real filesystem root.
    Thread-safe.
    """

    def __init__(
        self,
        preferred_path: Path,
        *,
        work_dir: Path | None = None,
        home: Path | None = None,
        clock: Callable[[], float] = time.monotonic,
        ttl: float = DEFAULT_CACHE_TTL,
        root: Path = Path("/"),
    ) -> None:
        self._preferred = Path(preferred_path)
        self._work_dir = work_dir
        self._home = home if home is not None else Path(os.environ.get("HOME", ""))
        self._clock = clock
        self._ttl = ttl
        self._root = root
        self._lock = threading.Lock()
        self._cached: DockerConfig | None = None
        self._expires = 0.0

    def search_paths(self) -> tuple[tuple[Path, ...], tuple[Path, ...]]:
        """The ``config.json`` candidates and the ``.dockercfg`` candidates, in search order."""
        work_dir = self._work_dir if self._work_dir is not None else Path()
        config_json = tuple(
            directory / _CONFIG_JSON
            for directory in (
                self._preferred,
                work_dir,
                self._home / ".docker",
                self._root / ".docker",
            )
        )
        dockercfg = tuple(
            directory / _DOCKERCFG
            for directory in (self._preferred, work_dir, self._home, self._root)
        )
        return config_json, dockercfg

    def config(self) -> DockerConfig:
        """The node's docker config, re-read at most once per ``ttl``."""
        with self._lock:
            if self._cached is not None and self._clock() < self._expires:
                return self._cached
            config = self._read()
            self._cached = config
            self._expires = self._clock() + self._ttl
            return config

    def _read(self) -> DockerConfig:
        config_json, dockercfg = self.search_paths()
        for path in config_json:
            found = _read_one(path, parse_config_json)
            if found is not None:
                return found
        for path in dockercfg:
            found = _read_one(path, parse_dockercfg)
            if found is not None:
                return found
        return empty_config()

    def __repr__(self) -> str:
        return f"NodeDockerConfigProvider(preferred_path={str(self._preferred)!r})"


def _read_one(path: Path, parse: Callable[[bytes], DockerConfig]) -> DockerConfig | None:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        _log.debug("cannot read docker config %s: %s", path, exc.strerror or type(exc).__name__)
        return None
    try:
        config = parse(data)
    except DockerConfigError as exc:
        _log.debug("cannot decode docker config %s: %s", path, exc)
        return None
    _log.debug("using docker config %s", path)
    return config


class ProviderKeyring:
    """Node-wide credentials from providers, as a keyring (no source, one index across providers).

    Each lookup asks every provider for its (possibly cached) config, in order.
    """

    def __init__(self, *providers: DockerConfigProvider, track_hashes: bool = True) -> None:
        self._providers = providers
        self._track_hashes = track_hashes

    def lookup(self, image: str) -> list[TrackedCredential]:
        keyring = DockerKeyring()
        for provider in self._providers:
            keyring.add(provider.config(), None, track_hashes=self._track_hashes)
        return keyring.lookup(image)
