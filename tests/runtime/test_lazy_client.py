"""What is built only when a registry is contacted: the store's own client, TLS contexts.

``pullwarden images`` and ``rmi`` on the embedded store, and a store that only lists or removes
images, never talk to a registry, so they build no :class:`RegistryClient` and no SSL context.
A client that talks only to plain-HTTP registries builds no SSL context either; an https host
without a CA file gets the default context when it is first contacted, once.  And the blob
parallelism default is the measured constant, whatever the CPU count.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from pullwarden.cli import main
from pullwarden.devregistry import DevRegistry
from pullwarden.errors import ImageStoreError, RegistryUnavailableError
from pullwarden.runtime import (
    HostOptions,
    LocalImageService,
    RegistryClient,
    _registry,
    build_image,
)
from tests.runtime.test_http1 import _TLSBlobHandler
from tests.runtime.test_registry import serve_tls


class Built:
    """Counts of what was constructed while a test ran."""

    def __init__(self) -> None:
        self.ssl_contexts = 0
        self.clients = 0
        self.closed = 0


@pytest.fixture
def built(monkeypatch: pytest.MonkeyPatch) -> Iterator[Built]:
    counts = Built()
    new_context = ssl.SSLContext.__new__
    client_init = RegistryClient.__init__
    client_close = RegistryClient.close

    def counting_context(cls: type[ssl.SSLContext], *args: Any, **kwargs: Any) -> Any:
        counts.ssl_contexts += 1
        return new_context(cls, *args, **kwargs)

    def counting_init(self: RegistryClient, *args: Any, **kwargs: Any) -> None:
        counts.clients += 1
        client_init(self, *args, **kwargs)

    def counting_close(self: RegistryClient) -> None:
        counts.closed += 1
        client_close(self)

    monkeypatch.setattr(ssl.SSLContext, "__new__", counting_context)
    monkeypatch.setattr(RegistryClient, "__init__", counting_init)
    monkeypatch.setattr(RegistryClient, "close", counting_close)
    monkeypatch.delenv("CONTAINER_RUNTIME_ENDPOINT", raising=False)
    yield counts


def test_listing_and_removing_build_no_client(built: Built, tmp_path: Path) -> None:
    with LocalImageService(tmp_path / "store") as store:
        assert store.list_images() == []
        assert store.image_status("127.0.0.1:5000/ns/app:v1") is None
        store.remove_image("127.0.0.1:5000/ns/app:v1")
        store.gc()
        store.fs_usage()
    assert (built.clients, built.ssl_contexts) == (0, 0)


def test_the_cli_images_and_rmi_build_no_client_nor_tls(built: Built, tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    LocalImageService(Path(store)).close()  # an empty store: a --store that holds none is refused
    for args in (["images", "--store", store], ["rmi", "--store", store, "ns/app:v1"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code in (0, 4), result.output  # rmi: 4, no such image
    assert (built.clients, built.ssl_contexts) == (0, 0)


def test_a_pull_makes_the_stores_client_then_close_closes_it(built: Built, tmp_path: Path) -> None:
    layout = tmp_path / "layout"
    image = build_image(layout, "v1", files={"a": b"x" * 1000})
    with DevRegistry() as registry:
        registry.add_image("ns/app", "v1", layout, "v1")
        store = LocalImageService(tmp_path / "store")
        assert built.clients == 0
        assert store.pull_image(f"{registry.host}/ns/app:v1") == image.config_digest
        assert store.pull_image(f"{registry.host}/ns/app:v1") == image.config_digest
        assert built.clients == 1  # one, made by the first pull and kept
        assert built.ssl_contexts == 0  # a plain-HTTP registry needs no TLS
        store.close()
        assert built.closed == 1
        with pytest.raises(ImageStoreError, match="closed"):
            store.pull_image(f"{registry.host}/ns/app:v1")
        assert built.clients == 1


def test_the_default_tls_context_is_made_once_when_first_needed(
    built: Built, tmp_path: Path
) -> None:
    with serve_tls(tmp_path, _TLSBlobHandler) as (host, _):
        server_side = built.ssl_contexts  # the test server's own
        # https without a CA file: the default trust, which refuses the test CA's certificate
        with RegistryClient(hosts={host: HostOptions(insecure=False)}, retries=0) as client:
            assert built.ssl_contexts == server_side
            for _ in range(2):
                with pytest.raises(RegistryUnavailableError, match="certificate"):
                    client.head_manifest(f"{host}/ns/x:v1")
            assert built.ssl_contexts == server_side + 1


def test_a_ca_file_is_loaded_when_the_client_is_made(built: Built, tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    with pytest.raises(ValueError, match="holds no certificate"):
        RegistryClient(hosts={"registry.test": HostOptions(ca_file=bad)})


@pytest.mark.parametrize("cpus", [1, 2, 64])
def test_the_blob_parallelism_default_is_the_measured_constant(
    monkeypatch: pytest.MonkeyPatch, cpus: int
) -> None:
    monkeypatch.setattr("os.cpu_count", lambda: cpus)
    with RegistryClient() as client:
        assert client._max_parallel == _registry.DEFAULT_PARALLEL_BLOBS
    with RegistryClient(max_parallel_blobs=3) as client:
        assert client._max_parallel == 3


def test_the_parallelism_docstring_says_what_the_constant_is() -> None:
    doc = RegistryClient.__doc__ or ""
    said = re.search(r"``max_parallel_blobs`` defaults to (\d+) ", doc)
    assert said is not None, doc
    assert int(said.group(1)) == _registry.DEFAULT_PARALLEL_BLOBS
    for workers in (2, 4, 6, 8):
        assert f"{workers} workers" in doc  # every count measured is reported
