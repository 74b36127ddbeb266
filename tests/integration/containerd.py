"""A private containerd 1.6 with the CRI plugin, for tests that compare against the real runtime.

One :class:`Containerd` owns a work directory: its config, root, state, log, an empty CNI
directory and a ``certs.d`` tree for per-registry ``hosts.toml`` files. Nothing outside that
directory (and, for over-long paths, a short socket directory under /tmp) is touched, and the
gRPC socket is the only way in. The process is registered with infra's bookkeeping, so the
``atexit`` backstop kills it even when a fixture's teardown never ran.

``grpc`` and ``cri_api`` are imported only inside the methods that talk CRI, so this module can be
imported (and the fixtures can skip cleanly) on a machine without them. How containerd behaves
here is written up in ``shared/infra/real-components.md`` section 3.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import weakref
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from pullwarden.runtime import oci, read_blob, read_layout
from tests.integration.infra import (
    _COMMAND_TIMEOUT,
    _LIVE,
    _LIVE_LOCK,
    LOOPBACK,
    Registry,
    _terminate,
    dying_with_parent,
)

if TYPE_CHECKING:
    from cri_api.v1 import api_pb2, api_pb2_grpc

CONTAINERD_BINARY = "containerd"
CTR_BINARY = "ctr"
NAMESPACE = "k8s.io"  # where the CRI plugin keeps its images
SNAPSHOTTER = "native"  # needs no kernel features; CRI pulls and our imports both unpack here
# Never pulled (the ImageService tests start no pods); a loopback name keeps registry.k8s.io out.
SANDBOX_IMAGE = f"{LOOPBACK}:9/pullwarden/pause:never-pulled"
# containerd's own import honours this annotation as the full image name.
IMAGE_NAME_ANNOTATION = "io.containerd.image.name"
OCI_REF_NAME_ANNOTATION = "org.opencontainers.image.ref.name"

_BOOTED = b"containerd successfully booted"
_CRI_LOAD_FAILED = b"failed to load plugin io.containerd.grpc.v1.cri"
_START_TIMEOUT = 15.0
_RPC_TIMEOUT = 10.0
_SETTLE_TIMEOUT = 5.0
# sun_path holds 108 bytes with the NUL; the longest socket name used is "containerd.sock.ttrpc".
_SOCKET_PATH_LIMIT = 100
_DISABLED_PLUGINS = (
    "io.containerd.snapshotter.v1.aufs",
    "io.containerd.snapshotter.v1.btrfs",
    "io.containerd.snapshotter.v1.devmapper",
    "io.containerd.snapshotter.v1.zfs",
    "io.containerd.internal.v1.tracing",
    "io.containerd.tracing.processor.v1.otlp",
)


class CtrError(RuntimeError):
    """``ctr`` failed or timed out; carries the command and its stderr."""


class CriImage(NamedTuple):
    """What CRI ImageStatus reports for an image (the fields the tests assert on)."""

    id: str
    repo_tags: list[str]
    repo_digests: list[str]


def containerd_missing() -> list[str]:
    """What the containerd tests need but this machine lacks (empty when all is there)."""
    missing = [tool for tool in (CONTAINERD_BINARY, CTR_BINARY) if shutil.which(tool) is None]
    if os.geteuid() != 0:
        missing.append("root")
    for module, package in (
        ("grpc", "grpcio"),
        ("cri_api.v1.api_pb2_grpc", "container-runtime-interface-api"),
    ):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(f"the Python package {package}")
    return missing


def grpc_module() -> Any:
    """The grpc module, imported only when CRI is used (grpcio ships no type hints: Any)."""
    import grpc

    return grpc


def _toml_string(value: str | Path) -> str:
    """A TOML basic string (JSON's escaping is a subset TOML accepts)."""
    return json.dumps(str(value))


def _clean_env() -> dict[str, str]:
    """The environment without CONTAINERD_* variables, which would override our flags."""
    return {k: v for k, v in os.environ.items() if not k.startswith("CONTAINERD_")}


class Containerd:
    """One ``containerd --config <workdir>/config.toml`` process with the CRI plugin loaded.

    ``start`` waits for the boot line in the log and then for a CRI ``Version`` answer, so a
    daemon that came up without the CRI plugin fails loudly. ``stop`` is idempotent and
    ``start`` after ``stop`` reuses the same root: images survive a restart.
    """

    def __init__(self, workdir: Path, *, sandbox_image: str = SANDBOX_IMAGE) -> None:
        self.workdir = workdir
        self.config_path = workdir / "config.toml"
        self.log_path = workdir / "containerd.log"
        self.root = workdir / "root"
        self.state = workdir / "state"
        self.certs_dir = workdir / "certs.d"
        self.cni_dir = workdir / "cni"
        self.opt_dir = workdir / "opt"
        self.sandbox_image = sandbox_image
        workdir.mkdir(parents=True, exist_ok=True)
        for directory in (self.certs_dir, self.cni_dir):
            directory.mkdir(exist_ok=True)
        if len(str(workdir / "containerd.sock.ttrpc")) <= _SOCKET_PATH_LIMIT:
            self._socket_dir = workdir
        else:
            self._socket_dir = Path(tempfile.mkdtemp(prefix="pwctrd.", dir="/tmp"))
            weakref.finalize(self, shutil.rmtree, self._socket_dir, ignore_errors=True)
        self._process: subprocess.Popen[bytes] | None = None
        self._channel: Any = None  # grpc.Channel while running
        self._write_config()

    def __repr__(self) -> str:
        state = f"running, pid {self.pid}" if self.running else "stopped"
        return f"Containerd({self.socket}, {state})"

    # addresses

    @property
    def socket(self) -> Path:
        """The gRPC socket (containerd's API and CRI)."""
        return self._socket_dir / "containerd.sock"

    @property
    def endpoint(self) -> str:
        """``unix:///.../containerd.sock``: a CRI runtime endpoint as the kubelet spells it."""
        return f"unix://{self.socket}"

    # lifecycle

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self.running and self._process is not None else None

    def start(self) -> None:
        """Start containerd (no-op when running) and wait until CRI answers."""
        if self.running:
            return
        self.stop()  # forget a process that died on its own, and its channel
        for directory in (self.root, self.state, self.opt_dir, self.certs_dir, self.cni_dir):
            directory.mkdir(parents=True, exist_ok=True)
        offset = self.log_path.stat().st_size if self.log_path.exists() else 0
        with open(self.log_path, "ab") as log:
            process = subprocess.Popen(
                dying_with_parent([CONTAINERD_BINARY, "--config", str(self.config_path)]),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=self.workdir,
                env=_clean_env(),
            )
        with _LIVE_LOCK:
            _LIVE.add(process)
        self._process = process
        try:
            self._wait_for_boot(process, offset)
            self._wait_for_cri(process, offset)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """SIGTERM (then SIGKILL) containerd; root, state and config are kept."""
        channel, self._channel = self._channel, None
        if channel is not None:
            channel.close()
        process, self._process = self._process, None
        if process is not None:
            _terminate(process)

    def restart(self) -> None:
        self.stop()
        self.start()

    def _wait_for_boot(self, process: subprocess.Popen[bytes], offset: int) -> None:
        deadline = time.monotonic() + _START_TIMEOUT
        while time.monotonic() < deadline:
            if _BOOTED in self._log_since(offset):
                return
            if process.poll() is not None:
                raise RuntimeError(
                    f"containerd exited with {process.returncode}:\n{self.log_tail()}"
                )
            time.sleep(0.01)
        raise RuntimeError(f"containerd did not boot in {_START_TIMEOUT:.0f} s:\n{self.log_tail()}")

    def _wait_for_cri(self, process: subprocess.Popen[bytes], offset: int) -> None:
        grpc = grpc_module()
        if _CRI_LOAD_FAILED in self._log_since(offset):
            raise RuntimeError(f"containerd booted without the CRI plugin:\n{self.log_tail()}")
        deadline = time.monotonic() + _START_TIMEOUT
        while True:
            try:
                self.version(timeout=2.0)
                return
            except grpc.RpcError as error:
                if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    raise RuntimeError(
                        f"containerd has no CRI RuntimeService:\n{self.log_tail()}"
                    ) from None
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"CRI Version failed ({error.code()}: {error.details()}):\n"
                        + self.log_tail()
                    ) from None
            time.sleep(0.02)

    def _log_since(self, offset: int) -> bytes:
        try:
            with open(self.log_path, "rb") as log:
                log.seek(offset)
                return log.read()
        except OSError:
            return b""

    def log_tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of containerd's log (for failure messages)."""
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    # configuration

    def _write_config(self) -> None:
        cri = '[plugins."io.containerd.grpc.v1.cri"'
        disabled = ", ".join(_toml_string(name) for name in _DISABLED_PLUGINS)
        lines = [
            "version = 2",
            f"root = {_toml_string(self.root)}",
            f"state = {_toml_string(self.state)}",
            f"disabled_plugins = [{disabled}]",
            "[grpc]",
            f"  address = {_toml_string(self.socket)}",
            "[ttrpc]",
            f"  address = {_toml_string(self._socket_dir / 'containerd.sock.ttrpc')}",
            "[debug]",
            f"  address = {_toml_string(self._socket_dir / 'debug.sock')}",
            '  level = "info"',
            "[plugins]",
            '  [plugins."io.containerd.internal.v1.opt"]',
            f"    path = {_toml_string(self.opt_dir)}",
            f"  {cri}]",
            f"    sandbox_image = {_toml_string(self.sandbox_image)}",
            f"    {cri}.containerd]",
            f"      snapshotter = {_toml_string(SNAPSHOTTER)}",
            f"    {cri}.cni]",
            f"      conf_dir = {_toml_string(self.cni_dir)}",
            # config_path only: together with registry.mirrors, CRI silently fails to load.
            f"    {cri}.registry]",
            f"      config_path = {_toml_string(self.certs_dir)}",
        ]
        self.config_path.write_text("\n".join(lines) + "\n")

    # registries

    def hosts_file(self, host: str) -> Path:
        """``certs.d/<host:port>/hosts.toml``, the per-registry file containerd reads per pull."""
        return self.certs_dir / host / "hosts.toml"

    def trust(self, registry: Registry) -> None:
        """Point containerd at ``registry`` (http or https) and, for TLS, at its CA file.

        A plain registry gets just ``server = "http://HOST"``. For TLS the CA has to sit in a
        ``[host."https://HOST"]`` table: containerd 1.6 speaks plain HTTP to a top-level
        https ``server`` on a loopback host, whatever ``ca`` or ``skip_verify`` says. The
        ``server`` line stays (it names the upstream) but may only push, so a pull tries
        exactly one endpoint: with a pulling ``server`` as well, every failure is retried
        there (a second HEAD, and its error replaces the first).
        """
        server = f"server = {_toml_string(registry.url)}"
        if not registry.tls:
            text = server + "\n"
        else:
            if registry.ca_file is None:
                raise ValueError(f"{registry!r} serves TLS but has no CA file")
            text = "\n".join(
                [
                    server,
                    'capabilities = ["push"]',
                    f"[host.{_toml_string(registry.url)}]",
                    '  capabilities = ["pull", "resolve"]',
                    f"  ca = {_toml_string(registry.ca_file)}",
                    "",
                ]
            )
        path = self.hosts_file(registry.host)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)

    def untrust(self, registry: Registry) -> None:
        """Remove ``registry``'s hosts.toml (containerd falls back to its defaults)."""
        path = self.hosts_file(registry.host)
        path.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            path.parent.rmdir()

    # ctr

    def ctr(
        self,
        *args: str,
        check: bool = True,
        timeout: float = _COMMAND_TIMEOUT,
    ) -> str:
        """``ctr --address SOCKET --namespace k8s.io ARGS``; its stdout."""
        command = [CTR_BINARY, "--address", str(self.socket), "--namespace", NAMESPACE, *args]
        try:
            result = subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                timeout=timeout,
                env=_clean_env(),
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise CtrError(f"ctr {' '.join(args)} timed out after {timeout} s") from error
        if check and result.returncode != 0:
            raise CtrError(
                f"ctr {' '.join(args)} failed ({result.returncode}): "
                + result.stderr.decode(errors="replace").strip()
            )
        return result.stdout.decode(errors="replace")

    def image_names(self) -> set[str]:
        """Every image name in namespace k8s.io, including CRI's ``sha256:<id>`` entries."""
        return {line.strip() for line in self.ctr("images", "ls", "-q").splitlines() if line}

    def content_digests(self) -> set[str]:
        """The digests of every blob in the content store (``ctr content ls -q``)."""
        return {line.strip() for line in self.ctr("content", "ls", "-q").splitlines() if line}

    def remove_all_images(self) -> None:
        """Remove every image, lease and blob, so the next pull downloads everything again.

        ``--sync`` makes ctr wait for the garbage collector. CRI's image cache follows the
        store through events; should it still list an image once the store is empty, one
        restart (CRI rebuilds its cache from the store) settles it.
        """
        names = self.image_names()
        if names:
            self.ctr("images", "rm", "--sync", *sorted(names))
        leases = self.ctr("leases", "ls", "-q").split()
        if leases:
            self.ctr("leases", "rm", "--sync", *leases)
        left_over = self.content_digests()
        if left_over:
            self.ctr("content", "rm", *sorted(left_over))
        if not self._settled():
            self.restart()
            if not self._settled():
                raise RuntimeError(
                    f"images left after removing them all: store {sorted(self.image_names())}, "
                    f"CRI {[image.id for image in self.cri_images()]}, "
                    f"content {sorted(self.content_digests())}"
                )

    def _settled(self) -> bool:
        deadline = time.monotonic() + _SETTLE_TIMEOUT
        while True:
            if not self.image_names() and not self.cri_images() and not self.content_digests():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.02)

    def import_image(
        self, layout_dir: Path, layout_ref: str, name: str, *, digest_ref: bool = True
    ) -> str:
        """Import the image (or index) tagged ``layout_ref`` in an OCI layout as ``name``.

        ``name`` is a full tagged reference (``127.0.0.1:5003/private/alice:v1``). With
        ``digest_ref`` the image also gets ``<repository>@<digest>``, as a pull leaves it, so
        CRI reports a repo digest. No registry is contacted. Returns the image id as CRI
        reports it, ``sha256:<config digest>`` (for an index: of the host's platform).
        """
        repository, tag = _split_tagged(name)
        top = read_layout(layout_dir)[layout_ref]
        archive = self.workdir / f"import-{os.getpid()}-{time.monotonic_ns()}.tar"
        try:
            archive.write_bytes(
                _oci_archive(
                    layout_dir,
                    top.to_json(),
                    {IMAGE_NAME_ANNOTATION: name, OCI_REF_NAME_ANNOTATION: tag},
                )
            )
            flags = ["--snapshotter", SNAPSHOTTER]
            if top.media_type in oci.MANIFEST_TYPES:
                # A single image of another platform would be filtered out otherwise; an
                # index keeps only the host's platform, as a pull does.
                flags.append("--all-platforms")
            if digest_ref:
                flags += ["--base-name", repository, "--digests"]
            self.ctr("images", "import", *flags, str(archive))
        finally:
            archive.unlink(missing_ok=True)
        want_digest = f"{repository}@{top.digest}" if digest_ref else None
        deadline = time.monotonic() + _SETTLE_TIMEOUT
        while True:
            status = self.cri_status(name)
            if (
                status is not None
                and name in status.repo_tags
                and (want_digest is None or want_digest in status.repo_digests)
            ):
                return status.id
            if time.monotonic() > deadline:
                raise RuntimeError(f"CRI does not show the imported {name} (status {status})")
            time.sleep(0.02)

    # CRI

    def _cri_channel(self) -> Any:
        grpc = grpc_module()
        if self._channel is None:
            if not self.running:
                raise RuntimeError("containerd is not running")
            self._channel = grpc.insecure_channel(self.endpoint)
        return self._channel

    @property
    def image_service(self) -> api_pb2_grpc.ImageServiceStub:
        """A CRI ImageService stub on this daemon's socket (channel shared until ``stop``)."""
        from cri_api.v1 import api_pb2_grpc

        return api_pb2_grpc.ImageServiceStub(self._cri_channel())

    @property
    def runtime_service(self) -> api_pb2_grpc.RuntimeServiceStub:
        from cri_api.v1 import api_pb2_grpc

        return api_pb2_grpc.RuntimeServiceStub(self._cri_channel())

    def version(self, *, timeout: float = _RPC_TIMEOUT) -> api_pb2.VersionResponse:
        """CRI ``RuntimeService/Version``."""
        from cri_api.v1 import api_pb2

        response: api_pb2.VersionResponse = self.runtime_service.Version(
            api_pb2.VersionRequest(version="v1"), timeout=timeout
        )
        return response

    def cri_status(self, ref: str) -> CriImage | None:
        """CRI ``ImageStatus`` of ``ref`` (tag, ``repo@digest`` or id); None when absent."""
        from cri_api.v1 import api_pb2

        response: api_pb2.ImageStatusResponse = self.image_service.ImageStatus(
            api_pb2.ImageStatusRequest(image=api_pb2.ImageSpec(image=ref)),
            timeout=_RPC_TIMEOUT,
        )
        if not response.HasField("image"):
            return None
        return _cri_image(response.image)

    def cri_images(self) -> list[CriImage]:
        """CRI ``ListImages`` (containerd 1.6 ignores filters, so there is none)."""
        from cri_api.v1 import api_pb2

        response: api_pb2.ListImagesResponse = self.image_service.ListImages(
            api_pb2.ListImagesRequest(), timeout=_RPC_TIMEOUT
        )
        return [_cri_image(image) for image in response.images]


def _cri_image(image: api_pb2.Image) -> CriImage:
    return CriImage(image.id, list(image.repo_tags), list(image.repo_digests))


def _split_tagged(name: str) -> tuple[str, str]:
    """``host/repo:tag`` → (``host/repo``, ``tag``); a tag is required, a digest refused."""
    slash, colon = name.rfind("/"), name.rfind(":")
    if "@" in name or slash < 0 or colon <= slash or colon == len(name) - 1:
        raise ValueError(f"image name {name!r} must be HOST/REPOSITORY:TAG")
    return name[:colon], name[colon + 1 :]


def _oci_archive(layout_dir: Path, top: Mapping[str, Any], annotations: Mapping[str, str]) -> bytes:
    """An OCI image layout as one tar: ``top`` (with ``annotations``) and every blob below it."""
    blobs: dict[str, bytes] = {}
    media_type = str(top["mediaType"])
    data = read_blob(layout_dir, str(top["digest"]))
    blobs[str(top["digest"])] = data
    if media_type in oci.INDEX_TYPES:
        children = list(json.loads(data)["manifests"])
    elif media_type in oci.MANIFEST_TYPES:
        children = []
        _collect_manifest_blobs(layout_dir, data, blobs)
    else:
        raise ValueError(f"cannot import {media_type} from {layout_dir}")
    for child in children:
        if child["mediaType"] not in oci.MANIFEST_TYPES:
            raise ValueError(f"nested index {child['digest']} is not supported")
        child_data = read_blob(layout_dir, child["digest"])
        blobs[child["digest"]] = child_data
        _collect_manifest_blobs(layout_dir, child_data, blobs)
    entry = {**top, "annotations": dict(annotations)}
    index = {"schemaVersion": 2, "mediaType": oci.OCI_INDEX, "manifests": [entry]}
    members: list[tuple[str, bytes]] = [
        ("oci-layout", b'{"imageLayoutVersion":"1.0.0"}'),
        ("index.json", json.dumps(index, separators=(",", ":")).encode()),
    ]
    members += [(f"blobs/sha256/{digest.split(':', 1)[1]}", blob) for digest, blob in blobs.items()]
    return _tar(members)


def _collect_manifest_blobs(layout_dir: Path, manifest: bytes, blobs: dict[str, bytes]) -> None:
    document = json.loads(manifest)
    for descriptor in (document["config"], *document["layers"]):
        digest = descriptor["digest"]
        if digest not in blobs:
            blobs[digest] = read_blob(layout_dir, digest)


def _tar(members: Iterable[tuple[str, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        directories = {"blobs", "blobs/sha256"}
        for directory in sorted(directories):
            info = tarfile.TarInfo(directory)
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
