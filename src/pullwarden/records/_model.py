"""The record types a kubelet keeps under ``<root>/image_manager`` (spec §4.5).

They are immutable; operations that change a record build a new one.  ``credential_mapping`` is a
plain dict by type, but treat it as read-only: the cache and the store hand out shared objects.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

__all__ = [
    "ImagePullCredentials",
    "ImagePullIntent",
    "ImagePullSecret",
    "ImagePullServiceAccount",
    "ImagePulledRecord",
]


@dataclass(frozen=True, slots=True)
class ImagePullSecret:
    """The coordinates of a pull Secret and the hash of the credential it supplied."""

    uid: str
    namespace: str
    name: str
    credential_hash: str = ""

    def same_coordinates(self, other: ImagePullSecret) -> bool:
        return (
            self.uid == other.uid and self.namespace == other.namespace and self.name == other.name
        )

    def sort_key(self) -> tuple[str, str, str]:
        """Records keep secrets sorted by namespace, then name, then uid (spec §5.5)."""
        return (self.namespace, self.name, self.uid)


@dataclass(frozen=True, slots=True)
class ImagePullServiceAccount:
    """The coordinates of a ServiceAccount whose token-bound credentials pulled an image."""

    uid: str
    namespace: str
    name: str

    def sort_key(self) -> tuple[str, str, str]:
        return (self.namespace, self.name, self.uid)


@dataclass(frozen=True, slots=True)
class ImagePullCredentials:
    """Which credentials are known to have pulled an image under one name."""

    kubernetes_secrets: tuple[ImagePullSecret, ...] = ()
    kubernetes_service_accounts: tuple[ImagePullServiceAccount, ...] = ()
    node_pods_accessible: bool = False

    def __post_init__(self) -> None:
        # Accept any iterable (lists are natural for callers) but store tuples.
        if not isinstance(self.kubernetes_secrets, tuple):
            object.__setattr__(self, "kubernetes_secrets", tuple(self.kubernetes_secrets))
        if not isinstance(self.kubernetes_service_accounts, tuple):
            object.__setattr__(
                self, "kubernetes_service_accounts", tuple(self.kubernetes_service_accounts)
            )

    def is_empty(self) -> bool:
        return not (
            self.node_pods_accessible or self.kubernetes_secrets or self.kubernetes_service_accounts
        )


@dataclass(frozen=True, slots=True)
class ImagePullIntent:
    """Written before a pull starts; names the raw image string of the container spec."""

    image: str


@dataclass(frozen=True, slots=True)
class ImagePulledRecord:
    """Which credentials pulled the image ``image_ref``, per image name without tag/digest."""

    image_ref: str
    last_updated_time: datetime
    credential_mapping: Mapping[str, ImagePullCredentials] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.credential_mapping, dict):
            object.__setattr__(self, "credential_mapping", dict(self.credential_mapping))


RecordObject = ImagePullIntent | ImagePulledRecord
