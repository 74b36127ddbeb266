"""The one policy for what is sent where (runtime._policy), and that every path consumes it.

The behaviour itself (credentials across redirects, realms, CA files) is tested end to end in
test_registry.py, test_http1.py and test_hostile_input.py; these pin the rules' edges.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from pullwarden.errors import RegistryError
from pullwarden.runtime import RegistryClient, oci
from pullwarden.runtime._messages import URL, Request, Response
from pullwarden.runtime._policy import (
    MAX_REDIRECTS,
    HostOptions,
    HostPolicy,
    TLSContexts,
    origin_of,
    realm_gets_credentials,
    redirect_location,
    sends_credentials,
)
from pullwarden.testing import MockTransport
from tests.runtime.test_registry import _make_ca_and_server_cert


@pytest.mark.parametrize(
    ("url", "origin"),
    [
        ("http://127.0.0.1:5000/v2/", ("http", "127.0.0.1", 5000)),
        ("HTTPS://Registry.Test/v2/", ("https", "registry.test", 443)),
        ("https://registry.test:443/x", ("https", "registry.test", 443)),
        ("http://registry.test/x", ("http", "registry.test", 80)),
        ("http://[::1]:5000/x", ("http", "::1", 5000)),
    ],
)
def test_origin_is_normalised(url: str, origin: tuple[str, str, int]) -> None:
    assert origin_of(URL(url)) == origin


@pytest.mark.parametrize(
    ("url", "sent"),
    [
        ("https://registry.test/v2/ns/x/blobs/sha256:a", True),
        ("https://REGISTRY.test:443/elsewhere", True),
        ("http://registry.test/v2/", False),  # another scheme
        ("https://registry.test:8443/v2/", False),  # another port
        ("https://storage.registry.test/b", False),  # another host, even a sub-domain
    ],
)
def test_credentials_go_only_to_their_origin(url: str, sent: bool) -> None:
    origin = origin_of(URL("https://registry.test"))
    assert sends_credentials(URL(url), origin) is sent


def test_the_realm_rule() -> None:
    base = URL("http://registry.test:5000")
    assert realm_gets_credentials(URL("https://auth.test/t"), base, False)
    assert realm_gets_credentials(URL("http://127.0.0.1:5080/t"), base, False)
    assert not realm_gets_credentials(URL("http://auth.test/t"), base, True)
    assert not realm_gets_credentials(URL("http://registry.test:8080/t"), base, False)
    assert realm_gets_credentials(URL("http://registry.test:8080/t"), base, True)


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_redirects_followed_for_get_and_head(status: int) -> None:
    response = Response(status, headers={"Location": "/there"})
    assert redirect_location("GET", response) == "/there"
    assert redirect_location("HEAD", response) == "/there"
    assert redirect_location("PUT", response) is None
    assert redirect_location("GET", Response(status)) is None  # no Location


def test_other_statuses_are_not_redirects() -> None:
    assert redirect_location("GET", Response(304, headers={"Location": "/x"})) is None
    assert redirect_location("GET", Response(200, headers={"Location": "/x"})) is None


def test_one_redirect_limit_for_blobs_too(tmp_path: Path) -> None:
    """A blob GET follows as many redirects as any request, and no more."""
    hops: list[URL] = []

    def handler(request: Request) -> Response:
        hops.append(request.url)
        return Response(302, headers={"Location": f"/hop/{len(hops)}"})

    desc = oci.Descriptor(oci.OCI_LAYER, "sha256:" + "1" * 64, 1)
    too_many = f"too many redirects \\(more than {MAX_REDIRECTS}\\)"
    client = RegistryClient(transport=MockTransport(handler), retries=0)
    with client, pytest.raises(RegistryError, match=too_many):
        client.fetch_blob("127.0.0.1:5000/ns/x", desc, tmp_path / "b")
    assert len(hops) == MAX_REDIRECTS + 1


def test_an_injected_transport_sees_the_production_blob_request(tmp_path: Path) -> None:
    """The request a MockTransport gets is the one the network transport would get."""
    blob = b"blob bytes"
    desc = oci.Descriptor(oci.OCI_LAYER, oci.digest_of(blob), len(blob))
    seen: list[Request] = []

    def handler(request: Request) -> Response:
        seen.append(request)
        return Response(200, content=blob)

    with RegistryClient(transport=MockTransport(handler)) as client:
        client.fetch_blob("127.0.0.1:5000/ns/x", desc, tmp_path / "b")
        client.head_manifest("127.0.0.1:5000/ns/x:v1")
    blob_request, manifest_request = seen
    assert blob_request.method == "GET" and blob_request.url.path.endswith(desc.digest)
    assert blob_request.headers["Accept-Encoding"] == "identity"
    assert manifest_request.method == "HEAD"
    assert (tmp_path / "b").read_bytes() == blob


@pytest.mark.parametrize(
    ("registry", "expected"),
    [
        ("127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("docker.io", "https://registry-1.docker.io"),
        ("registry.test", "https://registry.test"),
    ],
)
def test_base_url(registry: str, expected: str) -> None:
    assert str(HostPolicy().base_url(registry)) == expected


def test_tls_context_by_host(tmp_path: Path) -> None:
    ca, _, _ = _make_ca_and_server_cert(tmp_path)
    hosts = {
        "registry.test": HostOptions(ca_file=ca),
        "registry.test:5000": HostOptions(ca_file=ca),
        "docker.io": HostOptions(ca_file=ca),
        "plain.test": HostOptions(insecure=True),
    }
    default = ssl.create_default_context()
    tls = TLSContexts(HostPolicy(hosts), default)
    bare = tls.for_url(URL("https://registry.test/v2/"))
    port = tls.for_url(URL("https://registry.test:5000/v2/"))
    hub = tls.for_url(URL("https://registry-1.docker.io/v2/"))
    assert len({id(bare), id(port), id(hub), id(default)}) == 4
    assert tls.for_url(URL("https://registry.test:8443/v2/")) is bare  # any port
    assert tls.for_url(URL("https://other.test/v2/")) is default
    assert tls.for_url(URL("http://registry.test/v2/")) is default
    assert tls.all()[0] is default and len(tls.all()) == 4


def test_an_unusable_ca_file_fails_when_the_network_is_made(tmp_path: Path) -> None:
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate")
    hosts = {"registry.test": HostOptions(ca_file=bad)}
    with pytest.raises(ValueError, match="holds no certificate"):
        RegistryClient(hosts=hosts)
    mock = MockTransport(lambda r: Response(200))
    RegistryClient(hosts=hosts, transport=mock).close()  # no network made: no CA file loaded
