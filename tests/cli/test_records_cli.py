"""``pullwarden records``: the operator commands, on directories laid out as a kubelet lays them."""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from pullwarden.cli import main
from pullwarden.credentials import credential_hash
from pullwarden.objects import derived_uid
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
)
from pullwarden.records._codec import V1ALPHA1, encode

IMAGE = "registry.example/team-a/app:v1"
KEY = "registry.example/team-a/app"
REF = "sha256:" + "3c" * 32
OTHER_REF = "sha256:" + "4d" * 32
T = datetime(2025, 3, 4, 5, 6, 7, tzinfo=UTC)
HASH = credential_hash("team-a-robot", "s3cr3t")
ROTATED = credential_hash("team-a-robot", "n3w-s3cr3t")
POD_A = ImagePullSecret("uid-a", "team-a", "regcred", HASH)


def snapshot(root: Path) -> dict[str, tuple[bytes, int, int]]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            p = os.path.join(dirpath, name)
            st = os.stat(p)
            out[p] = (Path(p).read_bytes(), st.st_mtime_ns, st.st_mode)
    return out


@pytest.fixture
def kubelet(tmp_path: Path) -> Path:
    store = FileRecordStore(tmp_path)
    store.write_pulled_record(
        ImagePulledRecord(REF, T, {KEY: ImagePullCredentials(kubernetes_secrets=(POD_A,))})
    )
    store.write_pulled_record(
        ImagePulledRecord(
            OTHER_REF,
            T,
            {
                "docker.io/library/busybox": ImagePullCredentials(node_pods_accessible=True),
                "registry.example/ci/tool": ImagePullCredentials(
                    kubernetes_service_accounts=(ImagePullServiceAccount("sa-1", "ci", "builder"),)
                ),
            },
        )
    )
    store.write_intent(ImagePullIntent("nginx"))
    return tmp_path


def run(*args: str, code: int = 0) -> str:
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return result.output


def explain(kubelet: Path, *extra: str) -> dict[str, object]:
    out = run(
        "records",
        "explain",
        "--kubelet-dir",
        str(kubelet),
        "--image",
        IMAGE,
        "--image-ref",
        REF,
        *extra,
        "-o",
        "json",
    )
    data = json.loads(out)
    assert set(data) == {"mustPull", "result", "reason"}
    return data


# -- explain: the blog's story ---------------------------------------------------------------------


def test_explain_pod_a_secret_is_allowed(kubelet: Path) -> None:
    before = snapshot(kubelet)
    got = explain(kubelet, "--secret", f"team-a/regcred/uid-a={HASH}")
    assert got["mustPull"] is False and got["result"] == "credentialRecordFound"
    assert snapshot(kubelet) == before


def test_explain_pod_without_secret_must_pull(kubelet: Path) -> None:
    got = explain(kubelet)
    assert got["mustPull"] is True and got["result"] == "mustAuthenticate"


def test_explain_same_credentials_in_another_secret_allowed_by_hash(kubelet: Path) -> None:
    before = snapshot(kubelet)
    got = explain(kubelet, "--secret", f"team-b/copied/uid-b={HASH}")
    assert got["mustPull"] is False and got["result"] == "credentialRecordFound"
    assert "credential hash" in str(got["reason"])
    assert snapshot(kubelet) == before  # a kubelet would add the secret; explain does not


def test_explain_rotated_secret_allowed_by_coordinates(kubelet: Path) -> None:
    before = snapshot(kubelet)
    got = explain(kubelet, "--secret", f"team-a/regcred/uid-a={ROTATED}")
    assert got["mustPull"] is False
    assert "coordinates" in str(got["reason"])
    assert snapshot(kubelet) == before


def test_explain_recreated_secret_must_pull(kubelet: Path) -> None:
    got = explain(kubelet, "--secret", f"team-a/regcred/uid-new={ROTATED}")
    assert got["mustPull"] is True


def test_explain_text_says_why(kubelet: Path) -> None:
    out = run(
        "records",
        "explain",
        "-d",
        str(kubelet),
        "--image",
        IMAGE,
        "--image-ref",
        REF,
        "--secret",
        f"team-b/copied/uid-b={HASH}",
    )
    assert "NeverVerifyPreloadedImages" in out
    assert f"Looked up:  {KEY}" in out
    assert "team-b/copied" in out and "team-a/regcred" in out
    assert "ALLOWED (credentialRecordFound)" in out
    assert HASH not in out


def test_explain_preloaded_and_policies(kubelet: Path) -> None:
    args = ["records", "explain", "-d", str(kubelet), "--image", "quay.io/x/y:1"]
    args += ["--image-ref", "sha256:" + "99" * 32, "-o", "json"]
    assert json.loads(run(*args))["result"] == "credentialPolicyAllowed"
    assert json.loads(run(*args, "--policy", "AlwaysVerify"))["mustPull"] is True
    allow = ["--policy", "NeverVerifyAllowlistedImages", "--allowlist", "quay.io/x/*"]
    assert json.loads(run(*args, *allow))["mustPull"] is False


@pytest.mark.parametrize(
    "bad",
    [
        ["--secret", "team-a/regcred"],
        ["--service-account", "only-one-part"],
        ["--policy", "Sometimes"],
        ["--policy", "NeverVerifyAllowlistedImages", "--allowlist", "registry.example/*/x"],
    ],
)
def test_explain_bad_input_is_a_clear_error(kubelet: Path, bad: list[str]) -> None:
    result = CliRunner().invoke(
        main,
        ["records", "explain", "-d", str(kubelet), "--image", IMAGE, "--image-ref", REF, *bad],
    )
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def test_missing_kubelet_dir_is_a_clear_error(tmp_path: Path) -> None:
    out = CliRunner().invoke(main, ["records", "ls", "-d", str(tmp_path / "nope")])
    assert out.exit_code == 2
    assert "image_manager does not exist" in out.output
    assert not (tmp_path / "nope").exists()


# -- ls / show ---------------------------------------------------------------------------------


def test_ls_text(kubelet: Path) -> None:
    out = run("records", "ls", "-d", str(kubelet))
    lines = out.splitlines()
    assert lines[0].split() == [
        "IMAGE", "REF", "NAMES", "SECRETS", "SERVICE", "ACCOUNTS", "NODE-WIDE", "LAST", "UPDATED"
    ]  # fmt: skip
    row = next(line for line in lines if line.startswith(REF))
    assert row.split() == [REF, KEY, "1", "0", "no", "2025-03-04T05:06:07Z"]
    other = next(line for line in lines if line.startswith(OTHER_REF))
    assert other.split()[2:5] == ["0", "1", "yes"]
    assert "PENDING PULL INTENTS" in out and "  nginx" in out


@pytest.mark.parametrize("fmt", ["json", "yaml"])
def test_ls_structured(kubelet: Path, fmt: str) -> None:
    out = run("records", "ls", "-d", str(kubelet), "-o", fmt)
    data = json.loads(out) if fmt == "json" else yaml.safe_load(out)
    refs = {r["imageRef"]: r for r in data["pulledRecords"]}
    assert set(refs) == {REF, OTHER_REF}
    assert refs[REF]["credentialMapping"][KEY]["kubernetesSecrets"][0]["name"] == "regcred"
    assert [i["image"] for i in data["pullIntents"]] == ["nginx"]
    assert data["errors"] == []


def test_ls_reports_broken_files_and_exits_1(kubelet: Path) -> None:
    (kubelet / "image_manager/pulled" / ("sha256-" + "0" * 64)).write_bytes(b"{broken")
    result = CliRunner().invoke(main, ["records", "ls", "-d", str(kubelet), "-o", "json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert len(data["pulledRecords"]) == 2 and len(data["errors"]) == 1


def test_show_by_ref_and_by_file(kubelet: Path) -> None:
    out = run("records", "show", REF, "-d", str(kubelet))
    assert "secret:      team-a/regcred uid=uid-a" in out
    assert HASH not in out  # shortened in human output
    path = FileRecordStore(kubelet, migrate=False).record_path(REF)
    data = json.loads(run("records", "show", path, "-o", "json"))
    assert data["credentialMapping"][KEY]["kubernetesSecrets"][0]["credentialHash"] == HASH
    assert "ImagePullIntent" in run("records", "show", "nginx", "-d", str(kubelet))


def test_show_unknown_ref(kubelet: Path) -> None:
    result = CliRunner().invoke(main, ["records", "show", "sha256:nope", "-d", str(kubelet)])
    assert result.exit_code == 1
    assert "no pulled record or pull intent" in result.output


# -- check / migrate / prune ----------------------------------------------------------------------


def test_check_clean_and_dirty(kubelet: Path) -> None:
    assert "ok:" in run("records", "check", "-d", str(kubelet))
    pulled = kubelet / "image_manager/pulled"
    (pulled / ("sha256-" + "1" * 64)).write_bytes(b"not json")
    shutil.copy(
        FileRecordStore(kubelet, migrate=False).record_path(REF), pulled / ("sha256-" + "2" * 64)
    )
    (pulled / ("sha256-" + "3" * 64 + ".tmp")).write_bytes(b"half")
    result = CliRunner().invoke(main, ["records", "check", "-d", str(kubelet), "-o", "json"])
    assert result.exit_code == 1
    problems = json.loads(result.stdout)
    assert len(problems) == 3
    assert {Path(p["path"]).name for p in problems} == {
        "sha256-" + "1" * 64,
        "sha256-" + "2" * 64,
        "sha256-" + "3" * 64 + ".tmp",
    }


def test_migrate_dry_run_then_apply(tmp_path: Path) -> None:
    store = FileRecordStore(tmp_path)
    old = ImagePulledRecord(REF, T, {KEY: ImagePullCredentials(kubernetes_secrets=(POD_A,))})
    path = Path(store.record_path(REF))
    path.write_bytes(encode(old, V1ALPHA1))
    before = snapshot(tmp_path)
    out = run("records", "migrate", "-d", str(tmp_path))
    assert "would rewrite" in out and "1 file(s) to migrate" in out
    assert snapshot(tmp_path) == before
    run("records", "migrate", "-d", str(tmp_path), "--apply")
    assert path.read_bytes() == encode(old)
    assert "0 file(s) to migrate" in run("records", "migrate", "-d", str(tmp_path))


def test_prune_dry_run_then_apply(kubelet: Path) -> None:
    before = snapshot(kubelet)
    until = (T + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    out = run("records", "prune", "-d", str(kubelet), "--keep-image-ref", REF, "--until", until)
    assert f"would remove {OTHER_REF}" in out and REF + "\n" not in out
    assert snapshot(kubelet) == before
    run(
        "records", "prune", "-d", str(kubelet), "--keep-image-ref", REF, "--until", until, "--apply"
    )
    left = FileRecordStore(kubelet, migrate=False).list_pulled_records().items
    assert [r.image_ref for r in left] == [REF]


def test_prune_until_guard(kubelet: Path) -> None:
    out = run("records", "prune", "-d", str(kubelet), "--all", "--until", "2025-03-04T05:06:07Z")
    assert "0 record(s) to remove" in out


def test_prune_bad_time(kubelet: Path) -> None:
    result = CliRunner().invoke(main, ["records", "prune", "-d", str(kubelet), "--until", "soon"])
    assert result.exit_code == 2 and "RFC 3339" in result.output


def test_console_script_help() -> None:
    exe = shutil.which("pullwarden")
    cmd = [exe] if exe else [sys.executable, "-c", "from pullwarden.cli import main; main()"]
    out = subprocess.run([*cmd, "records", "--help"], capture_output=True, text=True, check=True)
    for sub in ("ls", "show", "explain", "check", "migrate", "prune"):
        assert sub in out.stdout


# -- explain from Secret manifests ------------------------------------------------------------


def secret_manifest(
    path: Path, registry: str, user: str, password: str, uid: str = "uid-b"
) -> Path:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    config = json.dumps({"auths": {registry: {"auth": auth}}}).encode()
    meta = {"name": "copied", "namespace": "team-b"} | ({"uid": uid} if uid else {})
    doc = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": meta,
        "type": "kubernetes.io/dockerconfigjson",
        "data": {".dockerconfigjson": base64.b64encode(config).decode()},
    }
    path.write_text(yaml.safe_dump(doc))
    return path


def test_explain_secret_file_hashes_like_the_kubelet(kubelet: Path, tmp_path: Path) -> None:
    secret = secret_manifest(tmp_path / "s.yaml", "registry.example", "team-a-robot", "s3cr3t")
    got = explain(kubelet, "--secret-file", str(secret))
    assert got["mustPull"] is False and "credential hash" in str(got["reason"])


def test_explain_secret_file_for_other_registry_does_not_count(
    kubelet: Path, tmp_path: Path
) -> None:
    secret = secret_manifest(tmp_path / "s.yaml", "other.example", "team-a-robot", "s3cr3t")
    assert explain(kubelet, "--secret-file", str(secret))["mustPull"] is True


def test_explain_secret_file_without_uid(kubelet: Path, tmp_path: Path) -> None:
    secret = secret_manifest(tmp_path / "s.yaml", "registry.example", "u", "p", uid="")
    result = CliRunner().invoke(
        main,
        [
            "records",
            "explain",
            "-d",
            str(kubelet),
            "--image",
            IMAGE,
            "--image-ref",
            REF,
            "--secret-file",
            str(secret),
        ],
    )
    # Different credentials under a UID no record holds: a registry check is needed.
    assert result.exit_code == 0 and "MUST PULL" in result.stdout
    assert "metadata.uid" in result.stderr
    assert "s3cr3t" not in result.output


def test_explain_broken_secret_file(kubelet: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: Secret\nmetadata: {name: x, uid: u}\ndata: {a: '%%%'}\n")
    result = CliRunner().invoke(
        main,
        [
            "records",
            "explain",
            "-d",
            str(kubelet),
            "--image",
            IMAGE,
            "--image-ref",
            REF,
            "--secret-file",
            str(bad),
        ],
    )
    assert result.exit_code == 2 and "not valid base64" in result.output


# -- prune: keep lists are checked, and an empty one is never assumed --------------------------

UNTIL = (T + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%SZ")


def prune(kubelet: Path, *args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main, ["records", "prune", "-d", str(kubelet), "--until", UNTIL, *args]
    )
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("bad", "shown"),
    [
        ("garbage", "'garbage'"),
        ("3c" * 32, "'" + "3c" * 32 + "'"),  # bare hex: the sha256: prefix is missing
        ("sha256:" + "3C" * 32, "'sha256:" + "3C" * 32 + "'"),
        ("sha256:" + "3c" * 31, "'sha256:" + "3c" * 31 + "'"),
        ("sha512:" + "3c" * 64, "'sha512:" + "3c" * 64 + "'"),
        (" " + REF, "'" + " " + REF + "'"),
    ],
    ids=["garbage", "bare-hex", "uppercase", "short", "sha512", "leading-space"],
)
def test_prune_rejects_malformed_keep_refs(kubelet: Path, bad: str, shown: str) -> None:
    before = snapshot(kubelet)
    code, out, err = prune(kubelet, "--keep-image-ref", REF, "--keep-image-ref", bad, "--apply")
    assert code == 2
    assert err.startswith(f"error: --keep-image-ref {shown}: ")
    assert "sha256:<64 lowercase hex digits>" in err
    assert out == ""
    assert snapshot(kubelet) == before


def test_prune_rejects_malformed_keep_from_lines_by_number(kubelet: Path, tmp_path: Path) -> None:
    keep = tmp_path / "keep.txt"
    keep.write_text(f"{REF}\n\n   \n3c3c\n")
    before = snapshot(kubelet)
    code, out, err = prune(kubelet, "--keep-from", str(keep), "--apply")
    assert code == 2
    assert err.startswith(f"error: --keep-from {keep}, line 4: '3c3c': ")
    assert out == "" and snapshot(kubelet) == before


def test_prune_keep_from_that_is_not_text(kubelet: Path, tmp_path: Path) -> None:
    keep = tmp_path / "keep.bin"
    keep.write_bytes(REF.encode() + b"\n\xff\xfe\n")
    before = snapshot(kubelet)
    code, out, err = prune(kubelet, "--keep-from", str(keep), "--apply")
    assert code == 2 and out == "" and err.startswith(f"error: --keep-from {keep}: cannot read")
    assert snapshot(kubelet) == before


def test_prune_keep_from_accepts_blank_lines_and_surrounding_space(
    kubelet: Path, tmp_path: Path
) -> None:
    keep = tmp_path / "keep.txt"
    keep.write_text(f"\n  {REF}  \r\n\n")
    code, out, _ = prune(kubelet, "--keep-from", str(keep))
    assert code == 0
    assert f"would remove {OTHER_REF}" in out and f"would remove {REF}" not in out


def test_prune_keep_from_stdin(kubelet: Path) -> None:
    result = CliRunner().invoke(
        main,
        ["records", "prune", "-d", str(kubelet), "--until", UNTIL, "--keep-from", "-"],
        input=f"{OTHER_REF}\n",
    )
    assert result.exit_code == 0, result.output
    assert f"would remove {REF}" in result.stdout


def test_prune_without_keep_source_refuses(kubelet: Path) -> None:
    before = snapshot(kubelet)
    code, out, err = prune(kubelet, "--apply")
    assert code == 2 and out == ""
    assert "--keep-image-ref" in err and "--keep-from" in err and "--all" in err
    assert snapshot(kubelet) == before


def test_prune_with_an_empty_keep_file_refuses(kubelet: Path, tmp_path: Path) -> None:
    # `crictl images -q > keep.txt` failing must not mean "remove every record".
    keep = tmp_path / "keep.txt"
    keep.write_text("\n")
    before = snapshot(kubelet)
    code, out, err = prune(kubelet, "--keep-from", str(keep), "--apply")
    assert code == 2 and out == ""
    assert f"{keep} lists no imageRef" in err and "--all" in err
    assert snapshot(kubelet) == before


def test_prune_all(kubelet: Path) -> None:
    before = snapshot(kubelet)
    code, out, _ = prune(kubelet, "--all")
    assert code == 0
    assert f"would remove {REF}" in out and f"would remove {OTHER_REF}" in out
    assert "2 record(s) to remove" in out
    assert snapshot(kubelet) == before
    code, out, _ = prune(kubelet, "--all", "--apply")
    assert code == 0 and "2 record(s) removed" in out
    assert FileRecordStore(kubelet, migrate=False).list_pulled_records().items == []


def test_prune_all_with_keep_refs_is_contradictory(kubelet: Path) -> None:
    code, out, err = prune(kubelet, "--all", "--keep-image-ref", REF)
    assert code == 2 and out == "" and "--all" in err


def test_prune_says_what_removing_a_record_means(kubelet: Path) -> None:
    preloaded = (
        "if the image is still on the node it now counts as preloaded: under the default "
        "policy NeverVerifyPreloadedImages any pod may use it"
    )
    code, out, _ = prune(kubelet, "--keep-image-ref", REF)
    assert code == 0
    assert out.splitlines() == [
        f"would remove {OTHER_REF}: {preloaded.replace('now counts', 'would count')}",
        "1 record(s) to remove",
    ]
    code, out, _ = prune(kubelet, "--keep-image-ref", REF, "--apply")
    assert out.splitlines() == [f"removed {OTHER_REF}: {preloaded}", "1 record(s) removed"]


# -- explain: the image, the policy and the allowlist are checked as a kubelet would ---------


def explain_result(kubelet: Path, *args: str, image: str = IMAGE) -> tuple[int, str, str]:
    result = CliRunner().invoke(
        main,
        ["records", "explain", "-d", str(kubelet), "--image", image, "--image-ref", REF, *args],
    )
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    return result.exit_code, result.stdout, result.stderr


@pytest.mark.parametrize(
    ("image", "message"),
    [
        ("registry.example/Team-A/app:v1", "repository name (Team-A/app) must be lowercase"),
        ("FOO/Bar", "must be lowercase"),
        ("http://registry.example/app", "invalid reference format"),
        ("app@sha256:abc", "invalid reference format"),
        ("", "invalid reference format"),
    ],
)
def test_explain_rejects_invalid_images_as_run_does(
    kubelet: Path, image: str, message: str
) -> None:
    for output in ("text", "json"):
        code, out, err = explain_result(kubelet, "-o", output, image=image)
        assert code == 2 and out == ""
        assert err.startswith(f"error: --image {image!r}: invalid image name: ")
        assert message in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--policy", "AlwaysVerify", "--allowlist", "quay.io/x/*"],
            "must not be set unless `imagePullCredentialsVerificationPolicy` is "
            "NeverVerifyAllowlistedImages (it is AlwaysVerify)",
        ),
        (["--allowlist", "quay.io/x/*"], "(it is NeverVerifyPreloadedImages)"),
        (
            ["--policy", "NeverVerifyAllowlistedImages", "--allowlist", "quay.io/x/ "],
            "leading/trailing spaces are not allowed",
        ),
    ],
    ids=["allowlist-with-always", "allowlist-with-default", "bad-pattern"],
)
def test_explain_checks_policy_and_allowlist_together(
    kubelet: Path, args: list[str], message: str
) -> None:
    code, out, err = explain_result(kubelet, *args, "-o", "json")
    assert code == 2 and out == ""
    assert err.startswith("error: --policy/--allowlist: ") and message in err


def kubelet_config(path: Path, body: str) -> Path:
    path.write_text(
        "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n" + body
    )
    return path


PRELOADED = ("--image", "quay.io/x/y:1", "--image-ref", "sha256:" + "99" * 32)


def explain_preloaded(kubelet: Path, *args: str) -> tuple[int, dict[str, object] | str]:
    result = CliRunner().invoke(
        main, ["records", "explain", "-d", str(kubelet), *PRELOADED, *args, "-o", "json"]
    )
    assert "Traceback" not in result.output
    if result.exit_code:
        return result.exit_code, result.stderr
    data = json.loads(result.stdout)
    assert set(data) == {"mustPull", "result", "reason"}
    return 0, data


def test_explain_takes_policy_and_allowlist_from_a_kubelet_config(
    kubelet: Path, tmp_path: Path
) -> None:
    always = kubelet_config(
        tmp_path / "always.yaml", "imagePullCredentialsVerificationPolicy: AlwaysVerify\n"
    )
    code, data = explain_preloaded(kubelet, "--config", str(always))
    assert code == 0 and isinstance(data, dict)
    assert data["mustPull"] is True
    allow = kubelet_config(
        tmp_path / "allow.yaml",
        "imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages\n"
        "preloadedImagesVerificationAllowlist: [quay.io/x/*]\n",
    )
    code, data = explain_preloaded(kubelet, "--config", str(allow))
    assert code == 0 and isinstance(data, dict) and data["mustPull"] is False
    assert data["result"] == "credentialPolicyAllowed"
    other = kubelet_config(
        tmp_path / "other.yaml",
        "imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages\n"
        "preloadedImagesVerificationAllowlist: [quay.io/other/*]\n",
    )
    code, data = explain_preloaded(kubelet, "--config", str(other))
    assert code == 0 and isinstance(data, dict) and data["mustPull"] is True


def test_explain_command_line_overrides_the_config_file(kubelet: Path, tmp_path: Path) -> None:
    always = kubelet_config(
        tmp_path / "always.yaml", "imagePullCredentialsVerificationPolicy: AlwaysVerify\n"
    )
    code, data = explain_preloaded(
        kubelet, "--config", str(always), "--policy", "NeverVerifyPreloadedImages"
    )
    assert code == 0 and isinstance(data, dict) and data["mustPull"] is False
    allow = kubelet_config(
        tmp_path / "allow.yaml",
        "imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages\n"
        "preloadedImagesVerificationAllowlist: [quay.io/other/*]\n",
    )
    code, data = explain_preloaded(kubelet, "--config", str(allow), "--allowlist", "quay.io/x/*")
    assert code == 0 and isinstance(data, dict) and data["mustPull"] is False
    # The overridden combination is validated as a whole.
    code, err = explain_preloaded(kubelet, "--config", str(allow), "--policy", "AlwaysVerify")
    assert code == 2 and isinstance(err, str)
    assert "must not be set unless" in err and "(it is AlwaysVerify)" in err


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("imagePullCredentialsVerificationPolicy: Sometimes\n", 'got "Sometimes"'),
        ("imageGCHighThresholdPercent: 101\n", "must be between 0 and 100"),
        ("maxPods: [1\n", "invalid YAML"),
        (
            "featureGates: {KubeletEnsureSecretPulledImages: false}\n",
            "turns the KubeletEnsureSecretPulledImages feature gate off",
        ),
    ],
    ids=["bad-policy", "bad-other-field", "broken-yaml", "gate-off"],
)
def test_explain_bad_kubelet_config(kubelet: Path, tmp_path: Path, body: str, message: str) -> None:
    config = kubelet_config(tmp_path / "kubelet.yaml", body)
    code, err = explain_preloaded(kubelet, "--config", str(config))
    assert code == 2 and isinstance(err, str)
    assert err.startswith("error: ") and message in err


def test_explain_missing_kubelet_config(kubelet: Path, tmp_path: Path) -> None:
    code, err = explain_preloaded(kubelet, "--config", str(tmp_path / "nope.yaml"))
    assert code == 2 and isinstance(err, str) and "nope.yaml" in err


def test_explain_help_says_the_command_line_wins() -> None:
    out = run("records", "explain", "--help")
    assert "--config" in out
    assert "override" in out


def test_explain_secret_file_without_uid_uses_the_derived_uid(
    tmp_path: Path,
) -> None:
    # A node run by `pullwarden run` recorded the Secret under its derived UID; explain must
    # find the same coordinates for the same manifest (here with rotated credentials).
    uid = derived_uid("Secret", "team-b", "copied")
    store = FileRecordStore(tmp_path)
    secret = ImagePullSecret(uid, "team-b", "copied", HASH)
    store.write_pulled_record(
        ImagePulledRecord(REF, T, {KEY: ImagePullCredentials(kubernetes_secrets=(secret,))})
    )
    manifest = secret_manifest(tmp_path / "s.yaml", "registry.example", "u", "n3w-pa55", uid="")
    code, out, err = explain_result(tmp_path, "--secret-file", str(manifest), "-o", "json")
    assert code == 0, err
    data = json.loads(out)
    assert data["mustPull"] is False and "coordinates" in str(data["reason"])
    assert f"note: Secret team-b/copied: using UID {uid}, the one `pullwarden run` derives" in err
    assert "n3w-pa55" not in out + err
