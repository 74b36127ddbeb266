"""``records who-can``: who may use a cached image without a registry round-trip.

Every answer is cross-checked against ``records explain`` run for the same credential, so the
two commands cannot drift apart: each secret and service account who-can lists, a rotated copy
of each listed secret, a secret it does not list, and a pod with no credentials at all, under
several policies.  The credential hashes explain needs are read from ``records show``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.cli._records_support import (
    HASH,
    IMAGE,
    NGINX_REF,
    REF,
    TOOL_REF,
    make_root,
    one_error_line,
    pw,
    pw_json,
    tree,
)

UNKNOWN_REF = "sha256:" + "9a" * 32
STRANGER = "team-z/stranger/uid-z=" + "0" * 64
IMAGES = [
    IMAGE,
    "registry.example/team-a/other:v1",
    "nginx",
    "docker.io/library/nginx:1.27",
    "registry.example/ci/tool:v3",
]
POLICIES: list[list[str]] = [
    ["--policy", "NeverVerifyPreloadedImages"],
    ["--policy", "AlwaysVerify"],
    ["--policy", "NeverVerify"],
    ["--policy", "NeverVerifyAllowlistedImages", "--allowlist", "registry.example/ci/*"],
]


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return make_root(tmp_path / "node")


def who_can(root: Path, image: str, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = pw_json("records", "who-can", image, "--root", str(root), *args)
    return data


def explain(root: Path, image: str, ref: str, *args: str) -> dict[str, Any]:
    data: dict[str, Any] = pw_json(
        "records", "explain", "--root", str(root), "--image", image, "--image-ref", ref, *args
    )
    return data


def recorded_hashes(root: Path, ref: str) -> dict[tuple[str, str, str], str]:
    """(namespace, name, uid) → credential hash of every secret in the record, per `show`."""
    record = pw_json("records", "show", ref, "--root", str(root))
    return {
        (s["namespace"], s["name"], s["uid"]): s["credentialHash"]
        for entry in record["credentialMapping"].values()
        for s in entry.get("kubernetesSecrets", [])
    }


@pytest.mark.parametrize("policy", POLICIES, ids=lambda p: "+".join(p[1::2]))
def test_who_can_agrees_with_explain_for_every_credential(root: Path, policy: list[str]) -> None:
    checked = 0
    for image in IMAGES:
        answer = who_can(root, image, "--secret", STRANGER, *policy)
        assert answer["policy"] == policy[1]
        for ref_answer in answer["imageRefs"]:
            ref = ref_answer["imageRef"]
            nobody = explain(root, image, ref, *policy)
            assert ref_answer["everyPod"] is (not nobody["mustPull"])
            assert (ref_answer["result"], ref_answer["reason"]) == (
                nobody["result"],
                nobody["reason"],
            )
            hashes = recorded_hashes(root, ref)
            for s in ref_answer["secrets"]:
                coords = f"{s['namespace']}/{s['name']}/{s['uid']}"
                full = hashes[(s["namespace"], s["name"], s["uid"])]
                got = explain(root, image, ref, "--secret", f"{coords}={full}", *policy)
                assert s["allowed"] is (not got["mustPull"]) and s["reason"] == got["reason"]
                rotated = explain(root, image, ref, "--secret", f"{coords}={'1' * 64}", *policy)
                assert s["rotatedAllowed"] is (not rotated["mustPull"])
                checked += 1
            for a in ref_answer["serviceAccounts"]:
                account = f"{a['namespace']}/{a['name']}/{a['uid']}"
                got = explain(root, image, ref, "--service-account", account, *policy)
                assert a["allowed"] is (not got["mustPull"]) and a["reason"] == got["reason"]
                checked += 1
            [asked] = ref_answer["asked"]  # the stranger, whom no record names
            got = explain(root, image, ref, "--secret", STRANGER, *policy)
            assert asked["allowed"] is (not got["mustPull"]) and asked["reason"] == got["reason"]
            assert asked["allowed"] is ref_answer["everyPod"]
    assert checked >= 4


def test_the_recorded_credentials_are_listed_and_others_are_not(root: Path) -> None:
    answer = who_can(root, IMAGE, "--secret", STRANGER)
    [ref_answer] = answer["imageRefs"]
    assert ref_answer["imageRef"] == REF and ref_answer["everyPod"] is False
    # team-d/deploy is recorded for another name of the same image ref: not for this one
    assert [(s["namespace"], s["name"], s["allowed"]) for s in ref_answer["secrets"]] == [
        ("team-a", "regcred", True)
    ]
    assert ref_answer["secrets"][0]["rotatedAllowed"] is True
    assert ref_answer["asked"][0]["allowed"] is False
    assert ref_answer["asked"][0]["result"] == "mustAuthenticate"
    tool = who_can(root, "registry.example/ci/tool")["imageRefs"]
    assert [(a["namespace"], a["name"]) for a in tool[0]["serviceAccounts"]] == [("ci", "builder")]
    assert tool[0]["imageRef"] == TOOL_REF


@pytest.mark.parametrize(
    ("image", "every_pod"),
    [("nginx", False), ("docker.io/library/nginx", True), ("library/nginx:2", False)],
)
def test_every_spelling_finds_the_image_ref_but_answers_for_its_own_key(
    root: Path, image: str, every_pod: bool
) -> None:
    # the record holds "nginx" (a secret) and "docker.io/library/nginx" (node-wide)
    [ref_answer] = who_can(root, image, "--policy", "AlwaysVerify")["imageRefs"]
    assert ref_answer["imageRef"] == NGINX_REF
    assert ref_answer["everyPod"] is every_pod
    assert explain(root, image, NGINX_REF, "--policy", "AlwaysVerify")["mustPull"] is not every_pod


@pytest.mark.parametrize(
    ("policy", "image", "every_pod"),
    [
        ("NeverVerifyPreloadedImages", "quay.io/x/preloaded:1", True),
        ("AlwaysVerify", "quay.io/x/preloaded:1", False),
        ("NeverVerify", "quay.io/x/preloaded:1", True),
        # a pull intent names it: it counts as pulled by the kubelet
        ("NeverVerifyPreloadedImages", "nginx:1.27", False),
    ],
)
def test_an_image_ref_without_a_record(
    root: Path, policy: str, image: str, every_pod: bool
) -> None:
    answer = who_can(root, image, "--image-ref", UNKNOWN_REF, "--policy", policy)
    [ref_answer] = answer["imageRefs"]
    assert ref_answer["recordFound"] is False and ref_answer["everyPod"] is every_pod
    assert ref_answer["secrets"] == [] and ref_answer["serviceAccounts"] == []
    got = explain(root, image, UNKNOWN_REF, "--policy", policy)
    assert got["mustPull"] is not every_pod and got["reason"] == ref_answer["reason"]


def test_an_image_no_record_knows(root: Path) -> None:
    assert who_can(root, "quay.io/x/unknown")["imageRefs"] == []
    out = pw("records", "who-can", "quay.io/x/unknown", "--root", str(root)).stdout
    assert "No record holds credentials" in out and "--image-ref" in out


def test_the_table_says_who_and_why_and_the_rotation_rule(root: Path) -> None:
    before = tree(root)
    out = pw("records", "who-can", IMAGE, "--root", str(root), "--secret", STRANGER).stdout
    assert f"{REF}:" in out
    assert "every pod on the node: no" in out
    assert "secret team-a/regcred (uid uid-a): yes" in out
    assert "rotated (same namespace/name/uid, another hash): yes, by coordinates" in out
    assert "same credentials (a recorded hash): yes, by hash" in out
    assert "asked, secret team-z/stranger (uid uid-z): no, must pull" in out
    assert HASH not in out
    assert tree(root) == before  # who-can never writes (a kubelet would learn the rotation)


def test_the_json_shape_is_stable(root: Path) -> None:
    answer = who_can(root, IMAGE, "--secret", STRANGER)
    assert list(answer) == ["image", "policy", "imageRefs"]
    [ref_answer] = answer["imageRefs"]
    assert list(ref_answer) == [
        "imageRef",
        "recordFound",
        "mappingKey",
        "everyPod",
        "result",
        "reason",
        "secrets",
        "serviceAccounts",
        "asked",
    ]
    assert list(ref_answer["secrets"][0]) == [
        "namespace",
        "name",
        "uid",
        "allowed",
        "result",
        "reason",
        "rotatedAllowed",
    ]
    assert next(iter(ref_answer["asked"][0])) == "kind"
    as_yaml = yaml.safe_load(
        pw(
            "records", "who-can", IMAGE, "--root", str(root), "--secret", STRANGER, "-o", "yaml"
        ).stdout
    )
    assert as_yaml == answer


def providers(path: Path, *, token: bool) -> Path:
    provider: dict[str, object] = {
        "name": "cloud",
        "matchImages": ["*.example"],
        "defaultCacheDuration": "10m",
        "apiVersion": "credentialprovider.kubelet.k8s.io/v1",
    }
    if token:
        provider["tokenAttributes"] = {
            "serviceAccountTokenAudience": "registry.example",
            "cacheType": "ServiceAccount",
            "requireServiceAccount": True,
        }
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1",
        "kind": "CredentialProviderConfig",
        "providers": [provider],
    }
    path.write_text(yaml.safe_dump(doc))
    return path


@pytest.mark.parametrize("token", [True, False])
def test_service_accounts_count_only_through_a_token_provider_as_in_explain(
    root: Path, tmp_path: Path, token: bool
) -> None:
    config = str(providers(tmp_path / "providers.yaml", token=token))
    image = "registry.example/ci/tool:v3"
    flag = "--image-credential-provider-config"
    answer = who_can(root, image, flag, config)
    [account] = answer["imageRefs"][0]["serviceAccounts"]
    got = explain(root, image, TOOL_REF, "--service-account", "ci/builder/sa-1", flag, config)
    assert account["allowed"] is token is (not got["mustPull"])
    assert answer["providers"] == got["providers"]


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["Not A Name"], "invalid image name"),
        ([IMAGE, "--secret", "team-a/regcred"], "expected NAMESPACE/NAME/UID=HASH"),
        ([IMAGE, "--service-account", "ci/builder"], "expected NAMESPACE/NAME/UID"),
        ([IMAGE, "--policy", "AlwaysVerify", "--allowlist", "x/*"], "--policy/--allowlist"),
    ],
)
def test_bad_input_is_one_line(root: Path, args: list[str], words: str) -> None:
    line = one_error_line(pw("records", "who-can", *args, "--root", str(root), code=None))
    assert words in line


def test_an_unreadable_record_is_a_warning_and_exit_1(root: Path) -> None:
    (root / "image_manager" / "pulled" / ("sha256-" + "0" * 64)).write_bytes(b"{broken")
    result = pw("records", "who-can", IMAGE, "--root", str(root), "-o", "json", code=1)
    assert "warning:" in result.stderr
    # the readable records still answer
    assert [r["imageRef"] for r in json.loads(result.stdout)["imageRefs"]] == [REF]
    # with --image-ref nothing is listed, so nothing is missed
    pw("records", "who-can", IMAGE, "--root", str(root), "--image-ref", REF)
