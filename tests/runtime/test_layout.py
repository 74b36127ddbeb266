"""OCI image layouts: deterministic builds, index.json, media types, read-back, push order."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from pullwarden.runtime._base import AuthConfig, Platform
from pullwarden.runtime._layout import (
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
from pullwarden.runtime._oci import (
    DOCKER_CONFIG,
    DOCKER_LAYER,
    DOCKER_LIST,
    DOCKER_MANIFEST,
    OCI_CONFIG,
    OCI_INDEX,
    OCI_LAYER_GZIP,
    OCI_MANIFEST,
    digest_of,
    parse_index,
    parse_manifest,
)

ARM64 = Platform("linux", "arm64", "v8")


def blob_json(layout: Path, digest: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads(read_blob(layout, digest))
    return document


def index_json(layout: Path) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((layout / "index.json").read_bytes())
    return document


def all_blobs(layout: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in (layout / "blobs" / "sha256").iterdir()}


# --------------------------------------------------------------------------------------------
# determinism


def test_same_input_gives_same_digests_and_bytes(tmp_path: Path) -> None:
    files = {"etc/motd": b"hi\n", "bin/tool": b"\x7fELF"}
    first = build_image(tmp_path / "a", "v1", files=files)
    second = build_image(tmp_path / "b", "v1", files=dict(reversed(files.items())))
    assert first == second
    assert all_blobs(tmp_path / "a") == all_blobs(tmp_path / "b")
    assert (tmp_path / "a" / "index.json").read_bytes() == (
        tmp_path / "b" / "index.json"
    ).read_bytes()


def test_different_content_or_platform_changes_the_digests(tmp_path: Path) -> None:
    base = build_image(tmp_path, "a", files={"x": b"1"})
    other_content = build_image(tmp_path, "b", files={"x": b"2"})
    other_platform = build_image(tmp_path, "c", files={"x": b"1"}, platform=ARM64)
    assert len({base.manifest_digest, other_content.manifest_digest}) == 2
    assert other_platform.layer_digests == base.layer_digests
    assert other_platform.config_digest != base.config_digest


def test_tar_is_reproducible_pax_with_parents(tmp_path: Path) -> None:
    raw = make_tar({"b/c/file.txt": b"data", "a.txt": b""})
    assert raw == make_tar({"a.txt": b"", "b/c/file.txt": b"data"})
    with tarfile.open(fileobj=io.BytesIO(raw)) as tar:
        members = tar.getmembers()
        assert tar.format == tarfile.PAX_FORMAT
        assert [m.name for m in members] == ["a.txt", "b", "b/c", "b/c/file.txt"]
        assert [m.isdir() for m in members] == [False, True, True, False]
        assert {(m.mtime, m.uid, m.gid, m.uname, m.gname) for m in members} == {(0, 0, 0, "", "")}
        extracted = tar.extractfile("b/c/file.txt")
        assert extracted is not None and extracted.read() == b"data"


@pytest.mark.parametrize("bad", ["../escape", "a/../b", "/", ""])
def test_tar_refuses_unsafe_paths(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid path"):
        make_tar({bad: b"x"})


def test_layers_are_gzip_with_zero_mtime_and_diff_ids_of_the_raw_tar(tmp_path: Path) -> None:
    raw = make_tar({"f": b"content"})
    image = build_image(tmp_path, "v1", [raw])
    compressed = read_blob(tmp_path, image.layer_digests[0])
    assert compressed[:2] == b"\x1f\x8b"
    assert compressed[4:8] == b"\0\0\0\0"  # gzip MTIME
    assert gzip.decompress(compressed) == raw
    config = blob_json(tmp_path, image.config_digest)
    assert config["rootfs"] == {"type": "layers", "diff_ids": [digest_of(raw)]}
    assert config["config"] == {"Cmd": ["/bin/true"]}
    assert (config["os"], config["architecture"]) == ("linux", "amd64")


def test_layer_order_and_sizes(tmp_path: Path) -> None:
    layers = [make_tar({"one": b"1"}), make_tar({"two": b"22"}), make_tar({"three": b"333"})]
    image = build_image(tmp_path, "v1", layers, cmd=["/bin/sh", "-c", "true"])
    manifest = parse_manifest(read_blob(tmp_path, image.manifest_digest), OCI_MANIFEST)
    assert tuple(d.digest for d in manifest.layers) == image.layer_digests
    assert tuple(d.size for d in manifest.layers) == image.layer_sizes
    assert manifest.config.size == image.config_size
    assert image.size == len(read_blob(tmp_path, image.manifest_digest))
    assert image.total_size == image.size + image.config_size + sum(image.layer_sizes)
    config = blob_json(tmp_path, image.config_digest)
    assert config["rootfs"]["diff_ids"] == [digest_of(layer) for layer in layers]
    assert config["config"]["Cmd"] == ["/bin/sh", "-c", "true"]


def test_default_layer_names_the_ref(tmp_path: Path) -> None:
    a = build_image(tmp_path, "a")
    b = build_image(tmp_path, "b")
    assert a.layer_digests != b.layer_digests
    layer = gzip.decompress(read_blob(tmp_path, a.layer_digests[0]))
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        member = tar.extractfile("hello.txt")
        assert member is not None and member.read() == b"hello from a\n"


def test_argument_checks(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="either layers or files"):
        build_image(tmp_path, "v1", [make_tar({"a": b""})], files={"b": b""})
    with pytest.raises(ValueError, match="gzip_level"):
        build_image(tmp_path, "v1", gzip_level=10)
    with pytest.raises(ValueError, match="at least one"):
        build_index(tmp_path, "multi", [])
    with pytest.raises(ValueError, match="negative"):
        random_layer(-1, 0)


# --------------------------------------------------------------------------------------------
# layout files


def test_layout_marker_and_index_json(tmp_path: Path) -> None:
    image = build_image(tmp_path, "v1", files={"a": b"a"})
    assert json.loads((tmp_path / "oci-layout").read_bytes()) == {"imageLayoutVersion": "1.0.0"}
    index = index_json(tmp_path)
    assert index["schemaVersion"] == 2
    assert index["mediaType"] == OCI_INDEX
    assert index["manifests"] == [
        {
            "mediaType": OCI_MANIFEST,
            "digest": image.manifest_digest,
            "size": image.size,
            "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {REF_NAME_ANNOTATION: "v1"},
        }
    ]
    names = sorted(p.name for p in (tmp_path / "blobs" / "sha256").iterdir())
    expected = [image.manifest_digest, image.config_digest, *image.layer_digests]
    assert names == sorted(d.removeprefix("sha256:") for d in expected)
    assert not [p for p in tmp_path.rglob(".tmp-*")]


def test_rebuilding_a_ref_replaces_its_entry_and_keeps_others(tmp_path: Path) -> None:
    build_image(tmp_path, "keep", files={"k": b"k"})
    build_image(tmp_path, "v1", files={"a": b"old"})
    newer = build_image(tmp_path, "v1", files={"a": b"new"})
    entries = index_json(tmp_path)["manifests"]
    assert [e["annotations"][REF_NAME_ANNOTATION] for e in entries] == ["keep", "v1"]
    assert entries[1]["digest"] == newer.manifest_digest


def test_images_share_blobs(tmp_path: Path) -> None:
    shared = make_tar({"base": b"base layer"})
    a = build_image(tmp_path, "a", [shared, make_tar({"a": b"a"})])
    b = build_image(tmp_path, "b", [shared, make_tar({"b": b"b"})])
    assert a.layer_digests[0] == b.layer_digests[0]
    assert len(all_blobs(tmp_path)) == 2 * 2 + 3  # 2 manifests, 2 configs, 3 distinct layers


# --------------------------------------------------------------------------------------------
# media types


@pytest.mark.parametrize(
    ("docker", "types"),
    [
        (False, (OCI_MANIFEST, OCI_CONFIG, OCI_LAYER_GZIP)),
        (True, (DOCKER_MANIFEST, DOCKER_CONFIG, DOCKER_LAYER)),
    ],
)
def test_media_types(tmp_path: Path, docker: bool, types: tuple[str, str, str]) -> None:
    manifest_type, config_type, layer_type = types
    image = build_image(tmp_path, "v1", files={"a": b"a"}, docker=docker)
    assert image.media_type == manifest_type
    document = blob_json(tmp_path, image.manifest_digest)
    assert document["schemaVersion"] == 2
    assert document["mediaType"] == manifest_type
    assert document["config"]["mediaType"] == config_type
    assert [layer["mediaType"] for layer in document["layers"]] == [layer_type]
    assert read_layout(tmp_path)["v1"].media_type == manifest_type


def test_docker_and_oci_share_config_and_layers(tmp_path: Path) -> None:
    files = {"same": b"content"}
    oci = build_image(tmp_path, "oci", files=files)
    docker = build_image(tmp_path, "docker", files=files, docker=True)
    assert oci.config_digest == docker.config_digest  # one image id, as containerd reports it
    assert oci.layer_digests == docker.layer_digests
    assert oci.manifest_digest != docker.manifest_digest


def test_index_lists_each_platform(tmp_path: Path) -> None:
    amd64 = build_image(tmp_path, "amd64", files={"arch": b"amd64"})
    arm64 = build_image(tmp_path, "arm64", files={"arch": b"arm64"}, platform=ARM64)
    digest = build_index(tmp_path, "multi", [amd64, arm64])
    raw = read_blob(tmp_path, digest)
    assert digest == digest_of(raw)
    assert json.loads(raw)["mediaType"] == OCI_INDEX
    index = parse_index(raw, OCI_INDEX)
    assert [(d.digest, d.platform, d.media_type, d.size) for d in index.manifests] == [
        (amd64.manifest_digest, Platform("linux", "amd64"), OCI_MANIFEST, amd64.size),
        (arm64.manifest_digest, ARM64, OCI_MANIFEST, arm64.size),
    ]
    arm_config = blob_json(tmp_path, arm64.config_digest)
    assert (arm_config["architecture"], arm_config["variant"]) == ("arm64", "v8")


def test_docker_manifest_list(tmp_path: Path) -> None:
    images = [
        build_image(tmp_path, "x", files={"a": b"x"}, docker=True),
        build_image(tmp_path, "y", files={"a": b"y"}, docker=True, platform=ARM64),
    ]
    digest = build_index(tmp_path, "list", images, docker=True)
    assert read_layout(tmp_path)["list"].media_type == DOCKER_LIST
    assert len(parse_index(read_blob(tmp_path, digest), DOCKER_LIST).manifests) == 2


# --------------------------------------------------------------------------------------------
# read-back


def test_read_layout_round_trip(tmp_path: Path) -> None:
    hello = build_image(tmp_path, "hello", files={"a": b"a"})
    docker = build_image(tmp_path, "docker", files={"a": b"a"}, docker=True)
    arm = build_image(tmp_path, "arm", files={"a": b"b"}, platform=ARM64)
    multi = build_index(tmp_path, "multi", [hello, arm])
    layout = read_layout(tmp_path)
    assert sorted(layout) == ["arm", "docker", "hello", "multi"]
    assert layout["hello"].digest == hello.manifest_digest
    assert layout["hello"].size == hello.size
    assert layout["docker"].digest == docker.manifest_digest
    assert layout["arm"].platform == ARM64
    assert layout["multi"].digest == multi
    assert layout["multi"].media_type == OCI_INDEX
    assert layout["multi"].annotations == {REF_NAME_ANNOTATION: "multi"}


def test_read_layout_skips_unnamed_entries(tmp_path: Path) -> None:
    image = build_image(tmp_path, "v1", files={"a": b"a"})
    index = index_json(tmp_path)
    unnamed = dict(index["manifests"][0])
    unnamed.pop("annotations")
    index["manifests"].append(unnamed)
    (tmp_path / "index.json").write_text(json.dumps(index))
    assert list(read_layout(tmp_path)) == ["v1"]
    assert read_layout(tmp_path)["v1"].digest == image.manifest_digest


def test_read_blob_checks_the_digest(tmp_path: Path) -> None:
    image = build_image(tmp_path, "v1", files={"a": b"a"})
    path = tmp_path / "blobs" / "sha256" / image.config_digest.removeprefix("sha256:")
    path.write_bytes(b"tampered")
    with pytest.raises(ValueError, match="corrupt"):
        read_blob(tmp_path, image.config_digest)
    with pytest.raises(ValueError, match="not a sha256 digest"):
        read_blob(tmp_path, "md5:abc")


def test_random_layer(tmp_path: Path) -> None:
    layer = random_layer(1 << 20, seed=7)
    assert layer == random_layer(1 << 20, seed=7)
    assert layer != random_layer(1 << 20, seed=8)
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        (member,) = tar.getmembers()
        assert member.size == 1 << 20
    image = build_image(tmp_path, "big", [layer], gzip_level=1)
    assert image.layer_sizes[0] > 1 << 20  # random data does not compress
    assert gzip.decompress(read_blob(tmp_path, image.layer_digests[0])) == layer


# --------------------------------------------------------------------------------------------
# push_layout (with a recording stand-in for RegistryClient)


@dataclass
class RecordingClient:
    calls: list[tuple[str, ...]] = field(default_factory=list)
    auths: list[AuthConfig | None] = field(default_factory=list)

    def push_blob(self, name: str, data: bytes | Path, auth: AuthConfig | None = None) -> str:
        content = data if isinstance(data, bytes) else data.read_bytes()
        self.calls.append(("blob", name, digest_of(content)))
        self.auths.append(auth)
        return digest_of(content)

    def push_manifest(
        self,
        name: str,
        reference: str,
        data: bytes,
        media_type: str,
        auth: AuthConfig | None = None,
    ) -> str:
        self.calls.append(("manifest", name, reference, digest_of(data), media_type))
        self.auths.append(auth)
        return digest_of(data)


def blob_calls(image: BuiltImage, name: str) -> list[tuple[str, ...]]:
    return [("blob", name, d) for d in (image.config_digest, *image.layer_digests)]


def test_push_layout_single_image(tmp_path: Path) -> None:
    image = build_image(tmp_path, "v1", [make_tar({"a": b"a"}), make_tar({"b": b"b"})])
    client = RecordingClient()
    auth = AuthConfig("alice", "secret")
    digest = push_layout(client, tmp_path, "v1", "127.0.0.1:5000/ns/hello:v1", auth)  # type: ignore[arg-type]
    assert digest == image.manifest_digest
    name = "127.0.0.1:5000/ns/hello"
    assert client.calls == [
        *blob_calls(image, name),
        ("manifest", name, "v1", image.manifest_digest, OCI_MANIFEST),
    ]
    assert client.auths == [auth] * 4


def test_push_layout_index_pushes_children_first(tmp_path: Path) -> None:
    amd64 = build_image(tmp_path, "amd64", files={"a": b"amd64"}, docker=True)
    arm64 = build_image(tmp_path, "arm64", files={"a": b"arm64"}, platform=ARM64)
    index = build_index(tmp_path, "multi", [amd64, arm64])
    client = RecordingClient()
    name = "localhost:5000/ns/multi"
    assert push_layout(client, tmp_path, "multi", f"{name}:v2") == index  # type: ignore[arg-type]
    assert client.calls == [
        *blob_calls(amd64, name),
        ("manifest", name, amd64.manifest_digest, amd64.manifest_digest, DOCKER_MANIFEST),
        *blob_calls(arm64, name),
        ("manifest", name, arm64.manifest_digest, arm64.manifest_digest, OCI_MANIFEST),
        ("manifest", name, "v2", index, OCI_INDEX),
    ]
    assert client.auths == [None] * len(client.calls)


@pytest.mark.parametrize(
    "target", ["127.0.0.1:5000/ns/hello", "ns/hello:", "h/ns/x@sha256:" + "0" * 64]
)
def test_push_layout_needs_a_tagged_target(tmp_path: Path, target: str) -> None:
    build_image(tmp_path, "v1")
    client = RecordingClient()
    with pytest.raises(ValueError, match="HOST/REPOSITORY:TAG"):
        push_layout(client, tmp_path, "v1", target)  # type: ignore[arg-type]
    assert client.calls == []


def test_push_layout_unknown_ref(tmp_path: Path) -> None:
    build_image(tmp_path, "v1")
    with pytest.raises(KeyError, match="nope"):
        push_layout(RecordingClient(), tmp_path, "nope", "h:1/r:t")  # type: ignore[arg-type]
