from __future__ import annotations

import base64
from pathlib import Path

import pytest

from pullwarden.errors import ManifestError
from pullwarden.objects import Secret, iter_documents, load_secrets, secret_from_manifest


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_secret_data_and_string_data(tmp_path: Path) -> None:
    p = tmp_path / "s.yaml"
    p.write_text(
        "apiVersion: v1\nkind: Secret\nmetadata: {name: reg, namespace: a, uid: u1}\n"
        "type: kubernetes.io/dockercfg\n"
        f"data: {{.dockercfg: {b64(b'{}')}, x: {b64(b'1')}}}\n"
        "stringData: {x: two}\n---\nkind: ConfigMap\nmetadata: {name: c}\n"
    )
    (secret,) = load_secrets(p)
    assert secret == Secret(
        "u1", "a", "reg", "kubernetes.io/dockercfg", {".dockercfg": b"{}", "x": b"two"}
    )
    assert "two" not in repr(secret)


def test_list_kind_and_defaults() -> None:
    docs = list(
        iter_documents('{"kind":"List","items":[{"kind":"Secret","metadata":{"name":"a"}}]}', "t")
    )
    assert secret_from_manifest(docs[0]) == Secret("", "default", "a", "Opaque", {})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: Secret\nmetadata: {}\n", "no metadata.name"),
        ("kind: Secret\nmetadata: {name: a}\ndata: [1]\n", "data is not a map"),
        ("kind: Secret\nmetadata: {name: a}\ndata: {k: '@@'}\n", "not valid base64"),
        ("- 1\n- 2\n", "expected an object"),
        ("a: [\n", "not valid YAML"),
    ],
)
def test_bad_manifests(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ManifestError, match=message):
        load_secrets(p)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="cannot read"):
        load_secrets(tmp_path / "missing.yaml")
