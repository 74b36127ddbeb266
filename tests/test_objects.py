from __future__ import annotations

import base64
import io
import json
import re
import uuid
from pathlib import Path

import pytest

from pullwarden.errors import ManifestError
from pullwarden.objects import (
    UID_NAMESPACE,
    Container,
    Objects,
    Pod,
    Secret,
    ServiceAccount,
    derived_uid,
    iter_documents,
    load_objects,
    load_secrets,
    pod_from_manifest,
    secret_from_manifest,
    service_account_from_manifest,
)

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
DIGEST = "sha256:" + "a" * 64


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write(tmp_path: Path, text: str, name: str = "objects.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_text(tmp_path: Path, text: str, name: str = "objects.yaml") -> Objects:
    return load_objects([write(tmp_path, text, name)])


def pod_yaml(name: str = "web", namespace: str = "team-a", containers: str = "") -> str:
    containers = containers or "  - {name: app, image: nginx:1.2}\n"
    return (
        f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {namespace}}}\n"
        f"spec:\n  containers:\n{containers}"
    )


def manifest_error(tmp_path: Path, text: str, name: str = "objects.yaml") -> ManifestError:
    with pytest.raises(ManifestError) as info:
        load_text(tmp_path, text, name)
    return info.value


# --- Secrets (the original behaviour, kept) ---------------------------------------------------


def test_secret_data_and_string_data(tmp_path: Path) -> None:
    p = write(
        tmp_path,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: reg, namespace: a, uid: u1}\n"
        "type: kubernetes.io/dockercfg\n"
        f"data: {{.dockercfg: {b64(b'{}')}, x: {b64(b'1')}}}\n"
        "stringData: {x: two}\n---\nkind: ConfigMap\nmetadata: {name: c}\n",
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
    assert secret_from_manifest(docs[0]) == Secret(
        derived_uid("Secret", "default", "a"), "default", "a", "Opaque", {}
    )
    assert secret_from_manifest(docs[0], derive_uid=False).uid == ""


WRAPPED = base64.b64encode(b"hello world").decode()


def test_secret_data_edge_cases(tmp_path: Path) -> None:
    objects = load_text(
        tmp_path,
        "kind: Secret\nmetadata: {name: s}\n"
        # null data is empty; line breaks inside base64 are ignored as Go's decoder does
        f'data: {{empty: null, wrapped: "{WRAPPED[:8]}\\r\\n{WRAPPED[8:]}"}}\n'
        # an unquoted date stays the string Kubernetes would see
        "stringData: {day: 2024-01-01}\n",
    )
    secret = objects.secrets["default", "s"]
    assert dict(secret.data) == {"empty": b"", "wrapped": b"hello world", "day": b"2024-01-01"}


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"missing\.yaml: cannot read: No such file") as info:
        load_secrets(tmp_path / "missing.yaml")
    assert info.value.file == str(tmp_path / "missing.yaml")


def test_load_secrets_skips_other_kinds_unread(tmp_path: Path) -> None:
    # A broken Pod does not stop the Secret reader (the explain command reads only Secrets).
    p = write(tmp_path, "kind: Pod\nmetadata: {name: p}\n---\nkind: Secret\nmetadata: {name: s}\n")
    (secret,) = load_secrets(p, derive_uids=False)
    assert (secret.name, secret.uid) == ("s", "")
    assert load_secrets(p)[0].uid == derived_uid("Secret", "default", "s")


# --- multi-document files, JSON, Lists --------------------------------------------------------


def test_multi_document_yaml_in_file_order(tmp_path: Path) -> None:
    objects = load_text(
        tmp_path,
        pod_yaml("one")
        + "---\n"
        + "apiVersion: v1\nkind: ServiceAccount\nmetadata: {name: builder, namespace: team-a}\n"
        + "---\n---\n"  # an empty document is skipped
        + pod_yaml("two", "team-b")
        + "---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n"
        + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
        + "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: c2}\n",
    )
    assert [p.key for p in objects.pods] == ["team-a/one", "team-b/two"]
    assert list(objects.service_accounts) == [("team-a", "builder")]
    assert objects.secrets == {}
    assert objects.ignored == 3
    assert objects.ignored_kinds == {"Deployment": 1, "ConfigMap": 2}


def test_json_single_and_stream(tmp_path: Path) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p", "namespace": "n"},
        "spec": {"containers": [{"name": "c", "image": "nginx"}]},
    }
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s", "namespace": "n"}}
    single = write(tmp_path, json.dumps(pod, indent="\t"), "pod.json")  # tabs: not YAML
    stream = write(tmp_path, json.dumps(secret) + "\n" + json.dumps(pod), "stream.json")
    objects = load_objects([single])
    assert objects.pods[0].containers == (Container("c", "nginx", "Always"),)
    objects = load_objects([stream])
    assert list(objects.secrets) == [("n", "s")]
    assert [p.key for p in objects.pods] == ["n/p"]


def test_lists_of_any_kind_and_nesting(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "v1",
        "kind": "List",
        "items": [
            {"kind": "Secret", "metadata": {"name": "a"}},
            {
                "kind": "PodList",
                "items": [
                    {
                        "kind": "Pod",
                        "metadata": {"name": "p"},
                        "spec": {"containers": [{"name": "c", "image": "x:1"}]},
                    }
                ],
            },
            {"kind": "DeploymentList", "items": None},
            {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"}},
        ],
    }
    objects = load_text(tmp_path, json.dumps(doc), "list.json")
    assert list(objects.secrets) == [("default", "a")]
    assert [p.key for p in objects.pods] == ["default/p"]
    assert objects.ignored_kinds == {"Deployment": 1}


def test_several_files_stdin_and_directories(tmp_path: Path) -> None:
    d = tmp_path / "dir"
    d.mkdir()
    write(d, pod_yaml("b"), "b.yaml")
    write(d, pod_yaml("a"), "a.yml")
    write(d, "not: a manifest", "notes.txt")
    first = write(tmp_path, pod_yaml("first"), "first.yaml")
    objects = load_objects([first, d, Path("-")], stdin=io.StringIO(pod_yaml("piped", "other")))
    assert [p.key for p in objects.pods] == ["team-a/first", "team-a/a", "team-a/b", "other/piped"]


SECRET_BYTE = b"apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {password: pw\xff}\n"


@pytest.mark.parametrize(
    "stdin",
    [
        io.TextIOWrapper(io.BytesIO(SECRET_BYTE), errors="surrogateescape"),  # a C locale's stdin
        io.StringIO(SECRET_BYTE.decode("utf-8", "surrogateescape")),
    ],
    ids=["bytes", "text"],
)
def test_a_manifest_that_is_no_utf8_is_refused_without_showing_the_byte(
    tmp_path: Path, stdin: io.TextIOBase
) -> None:
    (tmp_path / "m.yaml").write_bytes(SECRET_BYTE)
    for path, source in ((Path("-"), "<stdin>"), (tmp_path / "m.yaml", str(tmp_path / "m.yaml"))):
        with pytest.raises(ManifestError) as info:
            load_objects([path], stdin=stdin)  # type: ignore[arg-type]
        at = SECRET_BYTE.index(b"\xff")
        assert str(info.value) == f"{source}: cannot read: not valid UTF-8 (at character {at})"
        assert "ff" not in str(info.value).replace(source, "")


def test_objects_of_other_api_groups_are_ignored(tmp_path: Path) -> None:
    objects = load_text(
        tmp_path,
        "apiVersion: example.com/v1\nkind: Secret\nmetadata: {name: s}\n---\n"
        "apiVersion: example.com/v1\nkind: Pod\nmetadata: {name: p}\n",
    )
    assert objects.secrets == {} and objects.pods == []
    assert objects.ignored_kinds == {"Secret": 1, "Pod": 1}


def test_example_manifests_load() -> None:
    objects = load_objects([EXAMPLES / "pods.yaml"])
    assert [p.key for p in objects.pods] == ["team-a/app", "team-b/app"]
    assert objects.pods[0].image_pull_secrets == ("regcred",)
    assert objects.secrets["team-a", "regcred"].type == "kubernetes.io/dockerconfigjson"


# --- Pods -----------------------------------------------------------------------------------


def test_pod_fields_and_defaults(tmp_path: Path) -> None:
    (pod,) = load_text(
        tmp_path,
        "apiVersion: v1\nkind: Pod\n"
        "metadata:\n  name: web\n  uid: pod-uid\n  annotations: {a: b}\n"
        "spec:\n"
        "  serviceAccountName: builder\n"
        "  imagePullSecrets: [{name: one}, {name: ''}, {}, {name: two}, {name: one}]\n"
        "  initContainers:\n  - {name: init-b, image: busybox}\n  - {name: init-a, image: alpine}\n"
        "  containers:\n"
        "  - {name: app, image: 'registry.example/app:v2', imagePullPolicy: Never}\n",
    ).pods
    assert pod == Pod(
        uid="pod-uid",
        namespace="default",
        name="web",
        containers=(Container("app", "registry.example/app:v2", "Never"),),
        init_containers=(
            Container("init-b", "busybox", "Always"),
            Container("init-a", "alpine", "Always"),
        ),
        image_pull_secrets=("one", "two", "one"),  # empty names skipped, order and repeats kept
        service_account_name="builder",
        annotations={"a": "b"},
    )


@pytest.mark.parametrize(
    ("spec_extra", "expected"),
    [
        ("", "default"),
        ("  serviceAccount: legacy\n", "legacy"),
        ("  serviceAccount: legacy\n  serviceAccountName: new\n", "new"),
    ],
)
def test_service_account_name_defaulting(tmp_path: Path, spec_extra: str, expected: str) -> None:
    text = "kind: Pod\nmetadata: {name: p}\nspec:\n" + spec_extra
    text += "  containers: [{name: c, image: x}]\n"
    assert load_text(tmp_path, text).pods[0].service_account_name == expected


@pytest.mark.parametrize(
    ("image", "policy", "expected"),
    [
        ("nginx", None, "Always"),
        ("nginx:latest", None, "Always"),
        ("nginx:1.2", None, "IfNotPresent"),
        (f"nginx@{DIGEST}", None, "IfNotPresent"),
        (f"nginx:latest@{DIGEST}", None, "Always"),
        ("registry.example:5000/team/app", None, "Always"),
        ("registry.example:5000/team/app:v1", None, "IfNotPresent"),
        ("Invalid_Image:latest", None, "IfNotPresent"),  # unparsable: no tag, so IfNotPresent
        ("nginx", "", "Always"),  # empty means unset
        ("nginx", "IfNotPresent", "IfNotPresent"),
        ("nginx:1.2", "Always", "Always"),
        ("nginx:latest", "Never", "Never"),
    ],
)
def test_pull_policy_defaulting(
    tmp_path: Path, image: str, policy: str | None, expected: str
) -> None:
    container: dict[str, str] = {"name": "c", "image": image}
    if policy is not None:
        container["imagePullPolicy"] = policy
    doc = {"kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [container]}}
    (pod,) = load_text(tmp_path, json.dumps(doc), "pod.json").pods
    assert pod.containers[0].image_pull_policy == expected
    assert pod.containers[0].image == image  # never rewritten


def test_invalid_image_is_accepted_for_the_node_to_reject(tmp_path: Path) -> None:
    (pod,) = load_text(tmp_path, pod_yaml(containers="  - {name: c, image: 'FAILED_IMAGE'}\n")).pods
    assert pod.containers[0].image == "FAILED_IMAGE"


def test_pod_inherits_service_account_pull_secrets(tmp_path: Path) -> None:
    objects = load_text(
        tmp_path,
        pod_yaml("inherits")
        + "---\n"
        + pod_yaml("own").replace("spec:\n", "spec:\n  imagePullSecrets: [{name: mine}]\n")
        + "---\n"
        + pod_yaml("other-sa").replace("spec:\n", "spec:\n  serviceAccountName: other\n")
        + "---\napiVersion: v1\nkind: ServiceAccount\n"
        "metadata: {name: default, namespace: team-a, uid: sa-uid, annotations: {k: v}}\n"
        "imagePullSecrets: [{name: from-sa}]\n",
    )
    assert [p.image_pull_secrets for p in objects.pods] == [("from-sa",), ("mine",), ()]
    assert objects.service_accounts["team-a", "default"] == ServiceAccount(
        "sa-uid", "team-a", "default", {"k": "v"}, ("from-sa",)
    )


def test_from_manifest_helpers() -> None:
    pod = pod_from_manifest(
        {
            "kind": "Pod",
            "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c", "image": "i"}]},
        }
    )
    assert pod.uid == derived_uid("Pod", "default", "p")
    account = service_account_from_manifest(
        {"kind": "ServiceAccount", "metadata": {"name": "a"}}, derive_uid=False
    )
    assert account.uid == ""
    with pytest.raises(ManifestError, match="is not a Pod"):
        pod_from_manifest({"kind": "Secret"})
    with pytest.raises(ManifestError, match="is not a ServiceAccount"):
        service_account_from_manifest({"kind": "Pod"})
    with pytest.raises(ManifestError, match="is not a Secret"):
        secret_from_manifest({"kind": "Pod"})


# --- stable UIDs ----------------------------------------------------------------------------


def test_derived_uids_are_documented_uuid5() -> None:
    assert derived_uid("Secret", "team-a", "reg") == str(
        uuid.uuid5(UID_NAMESPACE, "Secret/team-a/reg")
    )
    # Pinned: changing the namespace or the formula would break records written earlier.
    assert str(UID_NAMESPACE) == "6a685630-df4f-4bfd-965e-7529937407e0"
    assert derived_uid("Secret", "team-a", "reg") == str(
        uuid.uuid5(uuid.UUID("6a685630-df4f-4bfd-965e-7529937407e0"), "Secret/team-a/reg")
    )


def test_derived_uids_are_stable_and_distinct(tmp_path: Path) -> None:
    text = (
        "kind: Secret\nmetadata: {name: x, namespace: a}\n---\n"
        "kind: Secret\nmetadata: {name: x, namespace: b}\n---\n"
        "kind: Secret\nmetadata: {name: y, namespace: a}\n---\n"
        "kind: ServiceAccount\nmetadata: {name: x, namespace: a}\n---\n"
        + pod_yaml("x", "a")
        + "---\nkind: Secret\nmetadata: {name: given, namespace: a, uid: real-uid}\n"
    )
    first = load_text(tmp_path, text)
    second = load_objects([write(tmp_path, text, "copy.yaml")])
    uids = [s.uid for s in first.secrets.values()]
    uids += [first.service_accounts["a", "x"].uid, first.pods[0].uid]
    assert uids == [s.uid for s in second.secrets.values()] + [
        second.service_accounts["a", "x"].uid,
        second.pods[0].uid,
    ]
    derived = uids[:3] + uids[4:]
    assert len(set(derived)) == len(derived) == 5
    assert uids[3] == "real-uid"
    assert first.secrets["a", "x"].uid == derived_uid("Secret", "a", "x")
    without = load_objects([write(tmp_path, text, "copy.yaml")], derive_uids=False)
    assert [s.uid for s in without.secrets.values()] == ["", "", "", "real-uid"]


# --- errors name the file, the document and the field ------------------------------------------


@pytest.mark.parametrize(
    ("text", "document", "field", "message"),
    [
        (
            "kind: ConfigMap\n---\n"
            + pod_yaml(containers="  - {name: a, image: x}\n  - {name: b}\n"),
            2,
            "spec.containers[1].image",
            "document 2 (Pod team-a/web): spec.containers[1].image: required",
        ),
        (
            pod_yaml(containers="  - {name: a, image: ''}\n"),
            1,
            "spec.containers[0].image",
            "spec.containers[0].image: required",
        ),
        (
            pod_yaml(containers="  - {name: a, image: [x]}\n"),
            1,
            "spec.containers[0].image",
            "spec.containers[0].image: expected a string, got a list",
        ),
        (
            pod_yaml(containers="  - {name: a, image: ' nginx'}\n"),
            1,
            "spec.containers[0].image",
            "must not have leading or trailing whitespace",
        ),
        (
            pod_yaml(containers="  - {image: x}\n"),
            1,
            "spec.containers[0].name",
            "(Pod team-a/web): spec.containers[0].name: required",
        ),
        (
            pod_yaml(containers="  - {name: a, image: x, imagePullPolicy: Sometimes}\n"),
            1,
            "spec.containers[0].imagePullPolicy",
            'spec.containers[0].imagePullPolicy: unsupported value "Sometimes": supported '
            'values: "Always", "IfNotPresent", "Never"',
        ),
        (
            pod_yaml(containers="  - {name: a, image: x}\n  - {name: a, image: y}\n"),
            1,
            "spec.containers[1].name",
            'spec.containers[1].name: duplicate value "a" (see spec.containers[0].name)',
        ),
        (
            pod_yaml(containers="  - x\n"),
            1,
            "spec.containers[0]",
            "spec.containers[0]: expected an object, got a string",
        ),
        (
            "kind: Pod\nmetadata: {name: p}\nspec: {containers: []}\n",
            1,
            "spec.containers",
            "(Pod default/p): spec.containers: required",
        ),
        (
            "kind: Pod\nmetadata: {name: p}\nspec:\n  initContainers: {a: b}\n"
            "  containers: [{name: c, image: x}]\n",
            1,
            "spec.initContainers",
            "spec.initContainers: expected a list, got a map",
        ),
        ("kind: Pod\nmetadata: {name: p}\n", 1, "spec", "(Pod default/p): spec: required"),
        (
            "kind: Pod\nmetadata: {name: p}\nspec:\n  imagePullSecrets: [reg]\n"
            "  containers: [{name: c, image: x}]\n",
            1,
            "spec.imagePullSecrets[0]",
            "spec.imagePullSecrets[0]: expected an object",
        ),
        (
            "kind: Pod\nmetadata: {namespace: a}\n",
            1,
            "metadata.name",
            "(Pod): metadata.name: required",
        ),
        ("kind: Pod\nmetadata: [a]\n", 1, "metadata", "(Pod): metadata: expected a map"),
        (
            "kind: Pod\nmetadata: {name: p, annotations: {a: 1}}\n",
            1,
            "metadata.annotations[a]",
            "metadata.annotations[a]: expected a string, got number 1",
        ),
        (
            "kind: Pod\nmetadata: {name: 5}\n",
            1,
            "metadata.name",
            "metadata.name: expected a string",
        ),
        ("metadata: {name: p}\n", 1, "kind", "document 1: kind: required"),
        ("- 1\n- 2\n", 1, "", "document 1: expected a Kubernetes object (a map), got a list"),
        (
            "kind: List\nitems:\n- kind: Secret\n  metadata: {name: ok}\n- kind: Pod\n"
            "  metadata: {name: p, namespace: n}\n  spec: {containers: [{name: c}]}\n",
            1,
            "items[1].spec.containers[0].image",
            "document 1 (Pod n/p): items[1].spec.containers[0].image: required",
        ),
        ("kind: List\nitems: [3]\n", 1, "items[0]", "document 1: items[0]: expected a Kubernetes"),
        ("kind: List\nitems: {a: b}\n", 1, "items", "items: expected a list"),
        # Secrets
        ("kind: Secret\nmetadata: {}\n", 1, "metadata.name", "(Secret): metadata.name: required"),
        (
            "kind: Secret\nmetadata: {name: a}\ndata: [1]\n",
            1,
            "data",
            "(Secret default/a): data: expected a map, got a list",
        ),
        (
            "kind: Secret\nmetadata: {name: a}\ndata: {k: '@@@@'}\n",
            1,
            "data[k]",
            "(Secret default/a): data[k]: not valid base64",
        ),
        ("kind: Secret\nmetadata: {name: a}\ndata: {k: 'YQ'}\n", 1, "data[k]", "not valid base64"),
        ("kind: Secret\nmetadata: {name: a}\ndata: {k: 'YQ==YQ=='}\n", 1, "data[k]", "base64"),
        ("kind: Secret\nmetadata: {name: a}\ndata: {k: 5}\n", 1, "data[k]", "expected a base64"),
        (
            "kind: Secret\nmetadata: {name: a}\ndata: {'a/b': ''}\n",
            1,
            "data[a/b]",
            "a valid key must consist of alphanumeric characters",
        ),
        (
            "kind: Secret\nmetadata: {name: a}\nstringData: {port: 5000}\n",
            1,
            "stringData[port]",
            "stringData[port]: expected a string, got number 5000",
        ),
        ("kind: Secret\nmetadata: {name: a}\ntype: 3\n", 1, "type", "type: expected a string"),
        (
            "kind: Secret\nmetadata: {name: a}\ntype: kubernetes.io/dockerconfigjson\n"
            "stringData: {.dockercfg: '{}'}\n",
            1,
            "data[.dockerconfigjson]",
            "data[.dockerconfigjson]: required for a Secret of type kubernetes.io/dockerconfigjson",
        ),
        (
            "kind: Secret\nmetadata: {name: a}\ntype: kubernetes.io/dockerconfigjson\n"
            "stringData: {.dockerconfigjson: '{\"auths\": '}\n",
            1,
            "data[.dockerconfigjson]",
            "data[.dockerconfigjson]: not a valid docker config: Expecting value",
        ),
        (
            "kind: Secret\nmetadata: {name: a}\ntype: kubernetes.io/dockercfg\n"
            "stringData: {.dockercfg: '[]'}\n",
            1,
            "data[.dockercfg]",
            "not a valid docker config: expected a JSON object",
        ),
        (
            "kind: ServiceAccount\nmetadata: {name: a}\nimagePullSecrets: x\n",
            1,
            "imagePullSecrets",
            "(ServiceAccount default/a): imagePullSecrets: expected a list",
        ),
    ],
)
def test_errors_name_file_document_and_field(
    tmp_path: Path, text: str, document: int, field: str, message: str
) -> None:
    err = manifest_error(tmp_path, text)
    path = str(tmp_path / "objects.yaml")
    assert str(err).startswith(path + ": ")
    assert message in str(err)
    assert (err.file, err.document, err.field) == (path, document, field)
    assert isinstance(err, ValueError)


def test_bad_base64_never_shows_the_value(tmp_path: Path) -> None:
    err = manifest_error(
        tmp_path, "kind: Secret\nmetadata: {name: a}\ndata: {token: 'c2VjcmV0!!'}\n"
    )
    assert "token" in str(err)
    assert "c2VjcmV0" not in str(err)


def test_malformed_yaml_names_file_document_and_line(tmp_path: Path) -> None:
    err = manifest_error(tmp_path, pod_yaml() + "---\nkind: Secret\nmetadata: {name: [\n")
    assert str(err).startswith(str(tmp_path / "objects.yaml") + ": document 2: line 10, column 1")
    assert "not valid YAML" in str(err)
    assert err.document == 2


def test_malformed_json_names_line_and_column(tmp_path: Path) -> None:
    err = manifest_error(tmp_path, '{"kind": "Pod",\n "metadata": }', "pod.json")
    assert (
        str(err) == f"{tmp_path / 'pod.json'}: line 2, column 14: not valid JSON: Expecting value"
    )


def test_yaml_flow_style_is_not_mistaken_for_json(tmp_path: Path) -> None:
    objects = load_text(tmp_path, "{kind: Secret, metadata: {name: s}}")
    assert list(objects.secrets) == [("default", "s")]


def test_duplicate_objects_are_rejected(tmp_path: Path) -> None:
    err = manifest_error(tmp_path, pod_yaml() + "---\n" + pod_yaml())
    assert "document 2 (Pod team-a/web): defined twice (first in " in str(err)
    assert str(err).endswith("objects.yaml: document 1)")
    # The same name in another namespace, or of another kind, is a different object.
    objects = load_text(
        tmp_path,
        pod_yaml()
        + "---\n"
        + pod_yaml("web", "team-b")
        + "---\nkind: Secret\nmetadata: {name: web, namespace: team-a}\n",
    )
    assert len(objects.pods) == 2 and len(objects.secrets) == 1


# --- documents nested too deeply ------------------------------------------------------------

DEEP = 100_000


@pytest.mark.parametrize(
    ("name", "text", "start"),
    [
        ("pods.json", "[" * DEEP, "line 1, column 257: not valid JSON: nested more than 256"),
        ("pods.json", '{"kind": "Pod", "x": ' + "[" * DEEP, "line 1, column 277: not valid JSON"),
        # libyaml >= 0.2.6 stops at its own limit (column 1001) before ours is reached
        (
            "pods.yaml",
            "[" * DEEP + "]" * DEEP,
            "document 1: line 1, column (257|1001): not",
        ),
        # YAML flow style: libyaml's composer would recurse on the C stack and crash.
        (
            "pods.yaml",
            "kind: Pod\nx: " + "[" * DEEP,
            "document 1: line 2, column (259|1003)",
        ),
        ("pods.yaml", "kind: Pod\nx:\n" + "- " * 300 + "x\n", "document 1: line 3, column 511"),
        ("pods.yaml", "kind: Pod\n---\nkind: List\nitems: " + "[" * 300, "document 2: line 4"),
    ],
    ids=["json", "json-unclosed", "json-in-yaml-file", "yaml-flow", "yaml-block", "second-doc"],
)
def test_deeply_nested_documents_are_manifest_errors(
    tmp_path: Path, name: str, text: str, start: str
) -> None:
    err = manifest_error(tmp_path, text, name)
    assert re.match(re.escape(f"{tmp_path / name}: ") + start.replace("[", r"\["), str(err))
    assert "nested more than 256 levels deep" in str(err)
    assert err.file == str(tmp_path / name)


def test_nesting_up_to_the_limit_is_fine(tmp_path: Path) -> None:
    deep = "[" * 254 + "]" * 254  # the document is level 1, spec.x level 2
    pod = '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, '
    pod += '"spec": {"containers": [{"name": "a", "image": "nginx"}], "x": ' + deep + "}}"
    assert len(load_text(tmp_path, pod, "pod.json").pods) == 1
    err = manifest_error(tmp_path, pod.replace("[" * 254, "[" * 255), "pod.json")
    assert "nested more than 256 levels deep" in str(err)


def test_brackets_in_yaml_strings_do_not_count(tmp_path: Path) -> None:
    # Flow style starting with "{" is tried as JSON first, where single quotes mean nothing.
    text = "{kind: Secret, metadata: {name: s, annotations: {a: '" + "[" * 300 + "'}}}"
    assert list(load_text(tmp_path, text).secrets) == [("default", "s")]


def test_iter_documents_rejects_deep_nesting() -> None:
    with pytest.raises(ManifestError, match="nested more than 256 levels deep"):
        list(iter_documents("[" * DEEP + "]" * DEEP, "stdin"))


def test_yaml_alias_inside_itself_is_an_error(tmp_path: Path) -> None:
    # A List whose items hold the List itself: infinitely deep once constructed.
    err = manifest_error(tmp_path, "&a {kind: List, items: [*a]}\n")
    assert "an alias is used inside the node it names" in str(err)
    # Aliases of finished nodes are ordinary YAML.
    shared = pod_yaml() + "  - &c {name: side, image: busybox}\n---\n" + pod_yaml("b")
    assert len(load_text(tmp_path, shared).pods) == 2


def test_deeply_nested_docker_config_in_a_secret(tmp_path: Path) -> None:
    config = base64.b64encode(b"[" * DEEP).decode()
    text = json.dumps(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s"},
            "type": "kubernetes.io/dockerconfigjson",
            "data": {".dockerconfigjson": config},
        }
    )
    err = manifest_error(tmp_path, text, "secret.json")
    assert "data[.dockerconfigjson]: not a valid docker config: nested more than 256" in str(err)
    with pytest.raises(ManifestError, match="nested more than 256"):
        load_secrets(write(tmp_path, text, "secret.json"))


def test_credential_refs_say_whose_access_without_secrets() -> None:
    from pullwarden.objects import CredentialRef

    cases = [
        (
            CredentialRef("secret", "a", "pull"),
            {"kind": "secret", "namespace": "a", "name": "pull"},
            "secret a/pull",
        ),
        (
            CredentialRef("serviceAccount", "a", "builder", "ecr"),
            {"kind": "serviceAccount", "namespace": "a", "name": "builder", "provider": "ecr"},
            "service account a/builder from credential provider ecr",
        ),
        (CredentialRef("node"), {"kind": "node"}, "node credentials"),
        (
            CredentialRef("node", provider="gcr"),
            {"kind": "node", "provider": "gcr"},
            "node-wide credentials from credential provider gcr",
        ),
        (CredentialRef("anonymous"), {"kind": "anonymous"}, "anonymous"),
    ]
    for ref, doc, words in cases:
        assert (ref.to_json(), ref.describe()) == (doc, words)


def test_objects_of_other_kinds_are_listed_as_skipped(tmp_path: Path) -> None:
    path = tmp_path / "mixed.yaml"
    path.write_text(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {namespace: a, name: web}\n---\n"
        "kind: List\nitems:\n- {kind: ConfigMap, apiVersion: v1, metadata: {name: cm}}\n"
        "- {kind: Pod, apiVersion: v1, metadata: {name: p},\n"
        "   spec: {containers: [{name: c, image: x}]}}\n"
    )
    objects = load_objects([path])
    assert [p.name for p in objects.pods] == ["p"]
    assert [(s.kind, s.namespace, s.name, s.document) for s in objects.skipped] == [
        ("Deployment", "a", "web", 1),
        ("ConfigMap", "", "cm", 2),
    ]
    assert objects.skipped[0].describe() == f"Deployment a/web (apps/v1) in {path}, document 1"
    assert objects.ignored == 2 and objects.ignored_kinds == {"Deployment": 1, "ConfigMap": 1}
