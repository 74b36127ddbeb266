"""Image services behind one CRI-shaped protocol: the embedded store and its registry client.

Import the supported names from here; the modules behind them are private: ``_base`` (the
:class:`ImageService` protocol and its value types), ``_store`` (the embedded store),
``_registry`` (the OCI distribution client, with ``_transport``, ``_policy``, ``_wire``,
``_fastblob``, ``_network``, ``_auth``, ``_scrub`` and ``_blobs`` under it), ``_cri`` (a
container runtime's image service over CRI: containerd), ``_layout`` (OCI image layouts) and
``_oci`` (media types, manifests and indexes; also offered whole as
:mod:`oci`, for its constants).
"""

from pullwarden.runtime import _oci as oci
from pullwarden.runtime._base import (
    AuthConfig,
    FsUsage,
    Image,
    ImageService,
    Platform,
    PodSandbox,
    ProgressCallback,
    PullProgress,
)
from pullwarden.runtime._cri import (
    RUNTIME_REQUEST_TIMEOUT,
    CRIImageService,
    RuntimeVersion,
    parse_endpoint,
)
from pullwarden.runtime._layout import (
    LINUX_AMD64,
    REF_NAME_ANNOTATION,
    BuiltImage,
    build_image,
    build_index,
    make_tar,
    push_layout,
    random_layer,
    read_blob,
    read_layout,
)
from pullwarden.runtime._oci import Descriptor, digest_of, is_digest
from pullwarden.runtime._registry import HostOptions, RegistryClient, ResolvedImage, load_ca_file
from pullwarden.runtime._store import INDEX_VERSION, ContentSource, LocalImageService

__all__ = [
    "INDEX_VERSION",
    "LINUX_AMD64",
    "REF_NAME_ANNOTATION",
    "RUNTIME_REQUEST_TIMEOUT",
    "AuthConfig",
    "BuiltImage",
    "CRIImageService",
    "ContentSource",
    "Descriptor",
    "FsUsage",
    "HostOptions",
    "Image",
    "ImageService",
    "LocalImageService",
    "Platform",
    "PodSandbox",
    "ProgressCallback",
    "PullProgress",
    "RegistryClient",
    "ResolvedImage",
    "RuntimeVersion",
    "build_image",
    "build_index",
    "digest_of",
    "is_digest",
    "load_ca_file",
    "make_tar",
    "oci",
    "parse_endpoint",
    "push_layout",
    "random_layer",
    "read_blob",
    "read_layout",
]
