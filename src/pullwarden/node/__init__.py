"""A node image manager: pods from manifests, images ensured and verified, state kept on disk."""

from pullwarden.node._gc import (
    LOST_SERVICES,
    DiskStats,
    GCPlan,
    GCReport,
    ImageGC,
    PlannedRemoval,
    prune_withheld_message,
)
from pullwarden.node._node import IMAGES_DIR, ContainerOutcome, Node, PodOutcome

__all__ = [
    "IMAGES_DIR",
    "LOST_SERVICES",
    "ContainerOutcome",
    "DiskStats",
    "GCPlan",
    "GCReport",
    "ImageGC",
    "Node",
    "PlannedRemoval",
    "PodOutcome",
    "prune_withheld_message",
]
