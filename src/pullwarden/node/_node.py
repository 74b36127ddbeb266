"""One node: pods in, images ensured (and verified) out, state kept like a kubelet's root.

``<root>/image_manager/`` holds the pull records exactly as a kubelet keeps them,
``<root>/images/`` the embedded image store (unless images live in a container runtime: a CRI
endpoint, from ``runtime_endpoint`` or the configuration's ``imageServiceEndpoint`` /
``containerRuntimeEndpoint``), ``<root>/image_gc_state.json`` image usage times,
``<root>/node.lock`` the lock that makes a root one node's: a :class:`Node` holds it
(``flock``, exclusive) from construction to :meth:`Node.close`, and a second one on the same
root fails at once with :class:`~pullwarden.errors.NodeBusyError` -- two processes sharing the
records would each trust a cache the other does not update.  Constructing a :class:`Node`
over an existing root is a kubelet restart: the pull manager's start-up housekeeping runs
against the store's images.

The pull manager gets every :class:`~pullwarden.pullmanager.Protections` (stricter than the
kubelet); :meth:`Node.cancel` (Ctrl-C in ``pullwarden run``) stops pulls without ever leaving
an image that was pulled but neither recorded nor covered by an intent.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import field
from pathlib import Path

from pullwarden._cancel import CancelToken
from pullwarden._clock import Clock, SystemClock
from pullwarden._values import frozen
from pullwarden.config import KubeletConfig
from pullwarden.credentials import NodeDockerConfigProvider, ProviderKeyring
from pullwarden.errors import NodeBusyError, PullwardenError
from pullwarden.events import IGNORED_IMAGE_PULL_SECRET, EventRecorder, ListRecorder
from pullwarden.imagemanager import (
    ERR_IMAGE_PULL,
    STOP_GRACE,
    EnsureResult,
    ImageManager,
    PluginKeyrings,
    PullProgressHook,
)
from pullwarden.metrics import Metrics
from pullwarden.node._gc import (
    DiskStats,
    GCReport,
    ImageGC,
    image_fs_stats,
    prune_withheld_message,
)
from pullwarden.objects import (
    PULL_SECRET_TYPES,
    Container,
    CredentialRef,
    Objects,
    Pod,
    Secret,
    ServiceAccount,
)
from pullwarden.policy import PolicyEnforcer
from pullwarden.pullmanager import Protections, PullManager, VerifiedBy
from pullwarden.records import IMAGE_MANAGER_DIR, CachedRecordStore, FileRecordStore
from pullwarden.runtime import (
    CRIImageService,
    HostOptions,
    ImageService,
    LocalImageService,
    RegistryClient,
)

__all__ = ["READY", "ContainerOutcome", "Node", "PodOutcome"]

IMAGES_DIR = "images"
LOCK_FILE = "node.lock"
READY = "Ready"


@frozen
class ContainerOutcome:
    name: str
    image: str
    image_ref: str
    outcome: str  # READY or the kubelet's error value (ErrImagePull, ErrImageNeverPull, …)
    message: str
    pulled: bool
    verified_by: VerifiedBy
    credential: str
    init: bool = False
    interrupted: bool = False  # stopped (or never started) because the node was cancelled
    credential_ref: CredentialRef | None = None  # whose access pulled or matched (None: none)

    @property
    def ready(self) -> bool:
        return self.outcome == READY

    @property
    def why(self) -> str:
        """A short human reason for the outcome: how access was established and whose it is."""
        if not self.ready:
            return self.message
        ref = self.credential_ref
        return self.verified_by.describe(ref.describe() if ref is not None else self.credential)


@frozen
class PodOutcome:
    namespace: str
    name: str
    uid: str
    containers: tuple[ContainerOutcome, ...] = field(default_factory=tuple)

    @property
    def ready(self) -> bool:
        return all(c.ready for c in self.containers)


class Node:
    """A node image manager over one root directory (see the module docstring).

    Raises :class:`~pullwarden.errors.NodeBusyError` when another process holds ``root``.
    ``protections`` default to :meth:`Protections.all`; pass ``Protections()`` for exactly the
    kubelet's decisions.  Images come from ``image_service`` when given, else from the CRI
    runtime at ``runtime_endpoint`` (default: the configuration's :attr:`KubeletConfig.
    image_endpoint`; "" means the embedded store under ``root``).

    ``read_only`` opens the node to look, not to act (``pullwarden gc --dry-run``): the records
    are read as they are (no start-up housekeeping, no draft sweep, no directory created) and
    :meth:`run` is refused; only the root's lock file is written.
    """

    def __init__(
        self,
        root: Path,
        config: KubeletConfig,
        *,
        image_service: ImageService | None = None,
        events: EventRecorder | None = None,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        registry_hosts: dict[str, HostOptions] | None = None,
        node_credentials: bool = True,
        disk_stats: Callable[[], DiskStats] | None = None,
        protections: Protections | None = None,
        cancel: CancelToken | None = None,
        runtime_endpoint: str | None = None,
        credential_plugins: PluginKeyrings | None = None,
        pull_progress: PullProgressHook | None = None,
        read_only: bool = False,
    ) -> None:
        self.root = Path(root)
        self._lock_fd = _lock_root(self.root)
        self._own_service = image_service is None
        try:
            self.cancel = cancel or CancelToken()
            self.config = config
            self.clock: Clock = clock or SystemClock()
            self.events: EventRecorder = events or ListRecorder()
            self.metrics = metrics or Metrics()
            endpoint = config.image_endpoint if runtime_endpoint is None else runtime_endpoint
            self.images: ImageService
            if image_service is not None:
                self.images = image_service
            elif endpoint:
                self.images = CRIImageService(endpoint, cancel=self.cancel)
                disk_stats = disk_stats or image_fs_stats(self.images, self.root)
            else:
                self.images = LocalImageService(
                    self.root / IMAGES_DIR,
                    client=RegistryClient(hosts=registry_hosts),
                    clock=self.clock,
                )
            self.read_only = read_only
            self.pull_manager: PullManager | None = None
            if config.feature_gate_enabled:
                assert config.verification_policy is not None  # defaulted whenever the gate is on
                enforcer = PolicyEnforcer(config.verification_policy, config.allowlist)
                if read_only:
                    self.pull_manager = PullManager(
                        FileRecordStore(self.root, migrate=False, create=False),
                        enforcer,
                        None,  # no start-up housekeeping: it writes
                        clock=self.clock,
                        metrics=self.metrics,
                    )
                else:
                    first_start = not (self.root / IMAGE_MANAGER_DIR).is_dir()
                    records = FileRecordStore(self.root, lookups_only=True)
                    records.sweep_drafts()  # this node owns the root: no other writer is at work
                    self.pull_manager = PullManager(
                        CachedRecordStore(records),
                        enforcer,
                        self.images,
                        clock=self.clock,
                        metrics=self.metrics,
                        lock_stripes=config.max_parallel_image_pulls or 1,
                        protections=protections or Protections.all(),
                    )
                    if first_start:
                        self._note_preloaded(config.verification_policy)
            node_keyring = None
            if node_credentials:
                node_keyring = ProviderKeyring(NodeDockerConfigProvider(self.root))
            self.manager = ImageManager(
                self.images,
                self.pull_manager,
                events=self.events,
                node_keyring=node_keyring,
                plugins=credential_plugins,
                serialize_image_pulls=config.serialize_image_pulls,
                max_parallel_image_pulls=config.max_parallel_image_pulls,
                registry_pull_qps=config.registry_pull_qps,
                registry_burst=config.registry_burst,
                clock=self.clock,
                metrics=self.metrics,
                cancel=self.cancel,
                pull_progress=pull_progress,
            )
            self.gc = ImageGC(
                self.root,
                self.images,
                self.pull_manager,
                clock=self.clock,
                high_threshold=config.image_gc_high_threshold_percent,
                low_threshold=config.image_gc_low_threshold_percent,
                minimum_age=config.image_minimum_gc_age,
                maximum_age=config.image_maximum_gc_age,
                disk_stats=disk_stats,
                service=None if image_service is not None else endpoint.removeprefix("unix://"),
            )
            if endpoint and image_service is None:  # the embedded store's images have records
                self.gc.note_service("", LocalImageService.holds_images(self.root / IMAGES_DIR))
        except BaseException:
            try:
                self._close_own_service()
            finally:
                self._release_root()
            raise

    def close(self) -> None:
        """Stop the pullers (waiting briefly when cancelled), close the store, free the root."""
        try:
            self.manager.close(STOP_GRACE if self.cancel.cancelled else None)
            self._close_own_service()
        finally:
            self._release_root()

    def _note_preloaded(self, policy: str) -> None:
        """A Warning when a node without records starts on images already there (the KEP's
        first-enablement caveat): none of them was pulled by this node, so all are preloaded."""
        try:
            found = len(self.images.list_images())
        except (PullwardenError, OSError):
            return  # the start-up housekeeping has reported it already
        if found:
            self.events.record(
                None,
                "Warning",
                "ImagesPreloaded",
                f"{found} image(s) are already in the image service but {self.root} has no pull "
                f"records: this node pulled none of them, so they count as preloaded under "
                f"{policy}",
            )

    def _close_own_service(self) -> None:
        images = getattr(self, "images", None)
        if self._own_service and isinstance(images, LocalImageService | CRIImageService):
            images.close()

    def _release_root(self) -> None:
        fd, self._lock_fd = self._lock_fd, -1
        if fd >= 0:
            os.close(fd)

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pods --------------------------------------------------------------------------------

    def run(self, objects: Objects) -> list[PodOutcome]:
        """Ensure the images of every pod, init containers first; outcomes in pod order.

        With ``serializeImagePulls`` (the default) pods are handled one after the other, so the
        events read as a story; otherwise each pod has its own worker, as in the kubelet, and
        pulls overlap up to ``maxParallelImagePulls``.  Once :attr:`cancel` is cancelled, pods
        not yet done come back with ``interrupted`` containers within about a second.
        """
        if self.read_only:
            raise PullwardenError(f"the node at {self.root} is open read-only: it runs no pods")
        pods = objects.pods
        results: list[PodOutcome | None] = [None] * len(pods)

        def work(i: int) -> None:
            results[i] = self.run_pod(pods[i], objects)

        if self.config.serialize_image_pulls or len(pods) < 2:
            for i in range(len(pods)):
                work(i)
        else:
            workers = [
                threading.Thread(target=work, args=(i,), name="pullwarden-pod", daemon=True)
                for i in range(len(pods))
            ]
            for w in workers:
                w.start()
            self._join(workers)
        outcomes = [r or _not_done(p, self.cancel) for r, p in zip(results, pods, strict=True)]
        if not self.cancel.cancelled:
            used = [c.image_ref for p in outcomes for c in p.containers if c.image_ref]
            self.gc.mark_used(used)
            self._auto_gc(used)
        return outcomes

    def _join(self, workers: Sequence[threading.Thread]) -> None:
        """Wait for the pod workers; once cancelled, for ``STOP_GRACE`` seconds more at most."""
        woken = threading.Event()
        with self.cancel.on_cancel(woken.set):
            for w in workers:
                while w.is_alive() and not woken.is_set():
                    w.join(0.1)
        deadline = time.monotonic() + STOP_GRACE + 0.2
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))

    def run_pod(self, pod: Pod, objects: Objects) -> PodOutcome:
        secrets = self._pull_secrets(pod, objects)
        account = _service_account(pod, objects)
        outcomes = []
        for init, container in _containers(pod):
            result = self.manager.ensure_image_exists(pod, container, secrets, account)
            outcomes.append(self._outcome(container, result, init))
        return PodOutcome(pod.namespace, pod.name, pod.uid, tuple(outcomes))

    def _pull_secrets(self, pod: Pod, objects: Objects) -> list[Secret]:
        """The pod's pull Secrets that exist and are of a type the kubelet reads credentials
        from; a Warning event names the missing ones, and one each of another type."""
        found, missing = [], []
        for name in pod.image_pull_secrets:
            secret = objects.secrets.get((pod.namespace, name))
            if secret is None:
                missing.append(name)
            elif secret.type not in PULL_SECRET_TYPES:
                self.events.record(
                    pod,
                    "Warning",
                    IGNORED_IMAGE_PULL_SECRET,
                    f"image pull secret {pod.namespace}/{name} is of type {secret.type}, not "
                    f"{' or '.join(PULL_SECRET_TYPES)}: ignored for image pulls",
                )
            else:
                found.append(secret)
        if missing:
            self.events.record(
                pod,
                "Warning",
                "FailedToRetrieveImagePullSecret",
                f"Unable to retrieve some image pull secrets ({', '.join(missing)}); attempting "
                "to pull the image may not succeed.",
            )
        return found

    @staticmethod
    def _outcome(container: Container, result: EnsureResult, init: bool) -> ContainerOutcome:
        return ContainerOutcome(
            name=container.name,
            image=container.image,
            image_ref=result.image_ref,
            outcome=READY if result.error is None else result.error,
            message=result.message,
            pulled=result.pulled,
            verified_by=result.verified_by,
            credential=result.credential,
            init=init,
            interrupted=result.interrupted,
            credential_ref=result.credential_ref,
        )

    # -- garbage collection -----------------------------------------------------------------------

    def collect_garbage(
        self, in_use: Sequence[str] = (), *, force_all_unused: bool = False
    ) -> GCReport:
        return self.gc.collect(in_use, force_all_unused=force_all_unused)

    def _auto_gc(self, in_use: Sequence[str]) -> None:
        """A GC pass after the pods; its failure is an event, never the run's."""
        try:
            report = self.gc.collect(in_use, always_prune=False)  # prunes only after removals
        except (PullwardenError, OSError) as err:
            self.events.record(None, "Warning", "ImageGCFailed", f"image GC failed: {err}")
            return
        for image in report.removed:
            name = image.repo_tags[0] if image.repo_tags else image.id
            self.events.record(
                None,
                "Normal",
                "ImageGCed",
                f"Removed image {name} ({image.size} bytes): {report.reasons[image.id]}",
            )
        if report.removed and report.prune_withheld:
            message = prune_withheld_message(report.prune_withheld)
            self.events.record(None, "Warning", "PullRecordsKept", message)


def _service_account(pod: Pod, objects: Objects) -> ServiceAccount | None:
    """The pod's ServiceAccount among the objects (``default`` when the pod names none)."""
    return objects.service_accounts.get((pod.namespace, pod.service_account_name or "default"))


def _containers(pod: Pod) -> list[tuple[bool, Container]]:
    """(is init container, container), init containers first."""
    return [(True, c) for c in pod.init_containers] + [(False, c) for c in pod.containers]


def _not_done(pod: Pod, cancel: CancelToken) -> PodOutcome:
    """The outcome of a pod whose worker had not finished when the node stopped waiting."""
    message = f"not done: {cancel.error or 'stopped'}"
    containers = tuple(
        ContainerOutcome(
            c.name, c.image, "", ERR_IMAGE_PULL, message, False, VerifiedBy.NONE, "", init, True
        )
        for init, c in _containers(pod)
    )
    return PodOutcome(pod.namespace, pod.name, pod.uid, containers)


def _lock_root(root: Path) -> int:
    """Create ``root`` if needed and take its node lock; raises NodeBusyError if it is held."""
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(root / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError as err:
        raise PullwardenError(f"cannot open the node root {root}: {err.strerror or err}") from err
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read_pid(fd)
        os.close(fd)
        by = f" (pid {holder})" if holder else ""
        raise NodeBusyError(
            f"{root} is in use by another pullwarden node{by}: one node per root directory; "
            "wait for it to finish or use another --root"
        ) from None
    except OSError as err:
        os.close(fd)
        raise PullwardenError(f"cannot lock the node root {root}: {err.strerror or err}") from err
    with contextlib.suppress(OSError):
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def _read_pid(fd: int) -> str:
    with contextlib.suppress(OSError):
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
        if text.isdigit():
            return text
    return ""
