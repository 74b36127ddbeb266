"""Image services behind one CRI-shaped protocol: the embedded store and its registry client.

Import the supported names from here; the modules behind them are private: ``_base`` (the
:class:`ImageService` protocol and its value types), ``_store`` (the embedded store),
``_registry`` (the OCI distribution client, with ``_transport``, ``_policy``, ``_wire``,
``_http1``, ``_messages``, ``_network``, ``_auth``, ``_scrub`` and ``_blobs`` under it), ``_cri`` (a
container runtime's image service over CRI: containerd), ``_layout`` (OCI image layouts) and
``_oci`` (media types, manifests and indexes; also offered whole as
:mod:`oci`, for its constants).

The protocol, its value types and the OCI constants load with the package; the store, the
registry client, the layouts and the CRI client are imported on first use (PEP 562),
so code that only names an image or reads records never loads an HTTP stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pullwarden._facade import lazy_names
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
from pullwarden.runtime._oci import (
    Descriptor,
    digest_of,
    is_digest,
)

if TYPE_CHECKING:
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
    from pullwarden.runtime._messages import (
        URL,
        Headers,
        Request,
        Response,
        Transport,
        TransportError,
    )
    from pullwarden.runtime._registry import (
        HostOptions,
        RegistryClient,
        ResolvedImage,
        load_ca_file,
    )
    from pullwarden.runtime._store import (
        INDEX_VERSION,
        ContentSource,
        LocalImageService,
    )

_LAZY = {
    "BuiltImage": "pullwarden.runtime._layout",
    "CRIImageService": "pullwarden.runtime._cri",
    "ContentSource": "pullwarden.runtime._store",
    "Headers": "pullwarden.runtime._messages",
    "HostOptions": "pullwarden.runtime._registry",
    "INDEX_VERSION": "pullwarden.runtime._store",
    "LINUX_AMD64": "pullwarden.runtime._layout",
    "LocalImageService": "pullwarden.runtime._store",
    "REF_NAME_ANNOTATION": "pullwarden.runtime._layout",
    "RUNTIME_REQUEST_TIMEOUT": "pullwarden.runtime._cri",
    "RegistryClient": "pullwarden.runtime._registry",
    "Request": "pullwarden.runtime._messages",
    "Response": "pullwarden.runtime._messages",
    "ResolvedImage": "pullwarden.runtime._registry",
    "RuntimeVersion": "pullwarden.runtime._cri",
    "Transport": "pullwarden.runtime._messages",
    "TransportError": "pullwarden.runtime._messages",
    "URL": "pullwarden.runtime._messages",
    "build_image": "pullwarden.runtime._layout",
    "build_index": "pullwarden.runtime._layout",
    "load_ca_file": "pullwarden.runtime._registry",
    "make_tar": "pullwarden.runtime._layout",
    "parse_endpoint": "pullwarden.runtime._cri",
    "push_layout": "pullwarden.runtime._layout",
    "random_layer": "pullwarden.runtime._layout",
    "read_blob": "pullwarden.runtime._layout",
    "read_layout": "pullwarden.runtime._layout",
}

__all__ = [
    "INDEX_VERSION",
    "LINUX_AMD64",
    "REF_NAME_ANNOTATION",
    "RUNTIME_REQUEST_TIMEOUT",
    "URL",
    "AuthConfig",
    "BuiltImage",
    "CRIImageService",
    "ContentSource",
    "Descriptor",
    "FsUsage",
    "Headers",
    "HostOptions",
    "Image",
    "ImageService",
    "LocalImageService",
    "Platform",
    "PodSandbox",
    "ProgressCallback",
    "PullProgress",
    "RegistryClient",
    "Request",
    "ResolvedImage",
    "Response",
    "RuntimeVersion",
    "Transport",
    "TransportError",
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

__getattr__, __dir__ = lazy_names(__name__, _LAZY, __all__)
