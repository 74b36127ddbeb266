"""Image services behind one CRI-shaped protocol: the embedded store and its registry client."""

from pullwarden.runtime.base import (
    AuthConfig,
    FsUsage,
    Image,
    ImageService,
    Platform,
    ProgressCallback,
    PullProgress,
)

__all__ = [
    "AuthConfig",
    "FsUsage",
    "Image",
    "ImageService",
    "Platform",
    "ProgressCallback",
    "PullProgress",
]
