"""One node: pods in, images ensured (and verified) out, state kept like a kubelet's root.

``<root>/image_manager/`` holds the pull records exactly as a kubelet keeps them,
``<root>/images/`` the embedded image store, ``<root>/image_gc_state.json`` image usage times.
Constructing a :class:`Node` over an existing root is a kubelet restart: the pull manager's
start-up housekeeping runs against the store's images.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pullwarden._clock import Clock, SystemClock
from pullwarden.config import KubeletConfig
from pullwarden.credentials.providers import NodeDockerConfigProvider, ProviderKeyring
from pullwarden.events import EventRecorder, ListRecorder
from pullwarden.imagemanager import EnsureResult, ImageManager
from pullwarden.metrics import Metrics
from pullwarden.node._gc import DiskStats, GCReport, ImageGC
from pullwarden.objects import Container, Objects, Pod, Secret
from pullwarden.policy import PolicyEnforcer
from pullwarden.pullmanager import PullManager
from pullwarden.records.fs import FileRecordStore
from pullwarden.runtime.base import ImageService
from pullwarden.runtime.registry import HostOptions, RegistryClient
from pullwarden.runtime.store import LocalImageService

__all__ = ["ContainerOutcome", "Node", "PodOutcome"]

IMAGES_DIR = "images"


@dataclass(frozen=True, slots=True)
class ContainerOutcome:
    name: str
    image: str
    image_ref: str
    outcome: str  # "Ready" or the kubelet's error value (ErrImagePull, ErrImageNeverPull, …)
    message: str
    pulled: bool
    verified_by: str
    credential: str
    init: bool = False

    @property
    def ready(self) -> bool:
        return self.outcome == "Ready"

    @property
    def why(self) -> str:
        """A short human reason for the outcome."""
        if not self.ready:
            return self.message
        by = {
            "pull": f"pulled with {self.credential or 'no credentials'}",
            "secretHash": "verified by record: secret hash match",
            "secretCoordinates": "verified by record: secret coordinates match (rotated secret)",
            "serviceAccount": "verified by record: service account",
            "nodeWide": "verified by record: node-wide access",
            "policy": "policy exempt (no verification needed)",
            "featureDisabled": "already present (verification disabled)",
        }
        return by.get(self.verified_by, self.verified_by)


@dataclass(frozen=True, slots=True)
class PodOutcome:
    namespace: str
    name: str
    uid: str
    containers: tuple[ContainerOutcome, ...] = field(default_factory=tuple)

    @property
    def ready(self) -> bool:
        return all(c.ready for c in self.containers)


class Node:
    """A node image manager over one root directory."""

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
    ) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.config = config
        self.clock: Clock = clock or SystemClock()
        self.events: EventRecorder = events or ListRecorder()
        self.metrics = metrics or Metrics()
        self._own_service = image_service is None
        self.images: ImageService = image_service or LocalImageService(
            self.root / IMAGES_DIR, client=RegistryClient(hosts=registry_hosts), clock=self.clock
        )
        self.pull_manager: PullManager | None = None
        if config.feature_gate_enabled:
            assert config.verification_policy is not None  # defaulted whenever the gate is on
            enforcer = PolicyEnforcer(config.verification_policy, config.allowlist)
            self.pull_manager = PullManager(
                FileRecordStore(self.root),
                enforcer,
                self.images,
                clock=self.clock,
                metrics=self.metrics,
                lock_stripes=config.max_parallel_image_pulls or 1,
            )
        node_keyring = None
        if node_credentials:
            node_keyring = ProviderKeyring(NodeDockerConfigProvider(self.root))
        self.manager = ImageManager(
            self.images,
            self.pull_manager,
            events=self.events,
            node_keyring=node_keyring,
            serialize_image_pulls=config.serialize_image_pulls,
            max_parallel_image_pulls=config.max_parallel_image_pulls,
            registry_pull_qps=config.registry_pull_qps,
            registry_burst=config.registry_burst,
            clock=self.clock,
            metrics=self.metrics,
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
        )

    def close(self) -> None:
        self.manager.close()
        if self._own_service and isinstance(self.images, LocalImageService):
            self.images.close()

    def __enter__(self) -> Node:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- pods --------------------------------------------------------------------------------

    def run(self, objects: Objects) -> list[PodOutcome]:
        """Ensure the images of every pod, init containers first; outcomes in pod order.

        With ``serializeImagePulls`` (the default) pods are handled one after the other, so the
        events read as a story; otherwise each pod has its own worker, as in the kubelet, and
        pulls overlap up to ``maxParallelImagePulls``.
        """
        pods = objects.pods
        results: list[PodOutcome | None] = [None] * len(pods)

        def work(i: int) -> None:
            results[i] = self.run_pod(pods[i], objects)

        if self.config.serialize_image_pulls or len(pods) < 2:
            for i in range(len(pods)):
                work(i)
        else:
            workers = [threading.Thread(target=work, args=(i,)) for i in range(len(pods))]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
        outcomes = [r for r in results if r is not None]
        used = [c.image_ref for p in outcomes for c in p.containers if c.image_ref]
        self.gc.mark_used(used)
        self._auto_gc(used)
        return outcomes

    def run_pod(self, pod: Pod, objects: Objects) -> PodOutcome:
        secrets = self._pull_secrets(pod, objects)
        outcomes = []
        for init, container in [(True, c) for c in pod.init_containers] + [
            (False, c) for c in pod.containers
        ]:
            result = self.manager.ensure_image_exists(pod, container, secrets)
            outcomes.append(self._outcome(container, result, init))
        return PodOutcome(pod.namespace, pod.name, pod.uid, tuple(outcomes))

    def _pull_secrets(self, pod: Pod, objects: Objects) -> list[Secret]:
        found, missing = [], []
        for name in pod.image_pull_secrets:
            secret = objects.secrets.get((pod.namespace, name))
            if secret is None:
                missing.append(name)
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
            outcome="Ready" if result.error is None else result.error,
            message=result.message,
            pulled=result.pulled,
            verified_by=result.verified_by,
            credential=result.credential,
            init=init,
        )

    # -- garbage collection -----------------------------------------------------------------------

    def collect_garbage(
        self, in_use: Sequence[str] = (), *, force_all_unused: bool = False
    ) -> GCReport:
        return self.gc.collect(in_use, force_all_unused=force_all_unused)

    def _auto_gc(self, in_use: Sequence[str]) -> None:
        report = self.gc.collect(in_use)
        for image in report.removed:
            name = image.repo_tags[0] if image.repo_tags else image.id
            self.events.record(
                None,
                "Normal",
                "ImageGCed",
                f"Removed image {name} ({image.size} bytes): {report.reasons[image.id]}",
            )
