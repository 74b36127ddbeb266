"""Manifest parsing and platform selection (pullwarden.runtime._oci) and the runtime value types."""

from __future__ import annotations

import json

import pytest

from pullwarden.errors import InvalidReferenceError, NotFoundError, UnsupportedMediaTypeError
from pullwarden.runtime._base import AuthConfig, Platform
from pullwarden.runtime._oci import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    Descriptor,
    digest_of,
    media_type_of,
    parse_index,
    parse_manifest,
    select_platform,
)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64


def manifest(media_type: str = OCI_MANIFEST) -> bytes:
    return json.dumps(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": D1,
                "size": 7,
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": D2,
                    "size": 9,
                }
            ],
        }
    ).encode()


def entry(digest: str, arch: str, variant: str = "") -> dict[str, object]:
    plat = {"os": "linux", "architecture": arch} | ({"variant": variant} if variant else {})
    return {"mediaType": OCI_MANIFEST, "digest": digest, "size": 100, "platform": plat}


def test_parse_manifest() -> None:
    m = parse_manifest(manifest(), OCI_MANIFEST)
    assert m.config.digest == D1 and m.config.size == 7
    assert [layer.digest for layer in m.layers] == [D2]


def test_media_type_from_body_or_header() -> None:
    assert media_type_of(manifest(DOCKER_MANIFEST), "text/plain") == DOCKER_MANIFEST
    body = json.dumps({"schemaVersion": 2, "manifests": []}).encode()
    assert media_type_of(body, OCI_INDEX + "; charset=utf-8") == OCI_INDEX


@pytest.mark.parametrize(
    ("data", "media_type", "message"),
    [
        (manifest(), "application/vnd.docker.distribution.manifest.v1+prettyjws", "unsupported"),
        (b"{not json", OCI_MANIFEST, "not valid JSON"),
        (b"[]", OCI_MANIFEST, "not a JSON object"),
        (json.dumps({"config": {}, "layers": []}).encode(), OCI_MANIFEST, "lacks mediaType"),
        (manifest().replace(b'"size": 9', b'"size": -1'), OCI_MANIFEST, "no valid size"),
        (manifest().replace(D2.encode(), b"md5:abc"), OCI_MANIFEST, "unsupported digest"),
        (json.dumps({"config": None}).encode(), OCI_MANIFEST, "no layers"),
    ],
)
def test_bad_manifests(data: bytes, media_type: str, message: str) -> None:
    with pytest.raises(UnsupportedMediaTypeError, match=message):
        parse_manifest(data, media_type)


def test_index_and_platforms() -> None:
    body = json.dumps(
        {
            "manifests": [
                entry(D1, "amd64"),
                entry(D2, "arm64", "v8"),
                entry("sha256:" + "3" * 64, "arm"),
            ]
        }
    ).encode()
    idx = parse_index(body, OCI_INDEX)
    assert select_platform(idx.manifests, Platform("linux", "amd64")).digest == D1
    assert select_platform(idx.manifests, Platform("linux", "arm64", "v8")).digest == D2
    assert select_platform(idx.manifests, Platform("linux", "arm64")).digest == D2
    with pytest.raises(NotFoundError, match="linux/s390x"):
        select_platform(idx.manifests, Platform("linux", "s390x"), "r/x:v1")


def test_variant_falls_back_to_entry_without_variant() -> None:
    candidates = [Descriptor(OCI_MANIFEST, D1, 1, Platform("linux", "arm"))]
    assert select_platform(candidates, Platform("linux", "arm", "v7")).digest == D1


def test_descriptor_json_round_trip() -> None:
    d = Descriptor(OCI_MANIFEST, D1, 5, Platform("linux", "arm64", "v8"), {"a": "b"})
    raw = json.dumps({"manifests": [d.to_json()]}).encode()
    assert parse_index(raw, OCI_INDEX).manifests == (d,)
    assert (
        digest_of(b"") == "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("linux/amd64", Platform("linux", "amd64")),
        ("linux/arm64/v8", Platform("linux", "arm64", "v8")),
    ],
)
def test_platform_parse(text: str, expected: Platform) -> None:
    assert Platform.parse(text) == expected
    assert str(expected) == text


@pytest.mark.parametrize("bad", ["linux", "linux/", "a/b/c/d", ""])
def test_platform_parse_errors(bad: str) -> None:
    with pytest.raises(InvalidReferenceError):
        Platform.parse(bad)


def test_host_platform_uses_oci_names(monkeypatch: pytest.MonkeyPatch) -> None:
    import os  # runtime._base asks uname for the machine's architecture

    real = os.uname()
    for machine, arch in (("x86_64", "amd64"), ("aarch64", "arm64"), ("S390X", "s390x")):
        fields = (real.sysname, real.nodename, real.release, real.version, machine)
        monkeypatch.setattr(os, "uname", lambda f=fields: os.uname_result(f))
        assert Platform.host() == Platform("linux", arch)


def test_auth_repr_hides_secrets() -> None:
    auth = AuthConfig("alice", "hunter2", identity_token="tok-123")
    assert "hunter2" not in repr(auth) and "tok-123" not in repr(auth)
    assert "alice" in repr(auth)
    assert AuthConfig().anonymous and not auth.anonymous
