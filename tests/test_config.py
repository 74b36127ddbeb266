from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pullwarden.config import (
    KubeletConfig,
    default_kubelet_config,
    format_go_duration,
    load_kubelet_config,
    parse_go_duration,
    parse_kubelet_config,
)
from pullwarden.errors import ConfigError
from pullwarden.policy import VerificationPolicy

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HEADER = "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: KubeletConfiguration\n"

NS = 1
US = 1_000
MS = 1_000_000
S = 1_000_000_000
M = 60 * S
H = 60 * M


def write(tmp_path: Path, text: str, name: str = "kubelet.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, body: str) -> KubeletConfig:
    return load_kubelet_config(write(tmp_path, HEADER + body))


def problems(tmp_path: Path, body: str) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, body)
    return info.value.problems


# --- defaults -------------------------------------------------------------------------------


def test_defaults_are_the_kubelet_v135_defaults() -> None:
    cfg = default_kubelet_config()
    assert cfg == KubeletConfig()
    assert cfg.feature_gate_enabled is True
    assert cfg.verification_policy is VerificationPolicy.NEVER_VERIFY_PRELOADED_IMAGES
    assert cfg.allowlist == ()
    assert cfg.serialize_image_pulls is True
    assert cfg.max_parallel_image_pulls is None
    assert cfg.registry_pull_qps == 5.0
    assert cfg.registry_burst == 10
    assert cfg.image_gc_high_threshold_percent == 85
    assert cfg.image_gc_low_threshold_percent == 80
    assert cfg.image_minimum_gc_age == timedelta(minutes=2)
    assert cfg.image_maximum_gc_age == timedelta(0)
    assert cfg.image_service_endpoint == ""
    assert cfg.container_runtime_endpoint == ""
    assert cfg.parallel_pull_limit == 1
    assert not cfg.image_gc_disabled


def test_empty_configuration_file_gives_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, "") == default_kubelet_config()


def test_realistic_configuration_with_unrelated_fields(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        """
enableServer: true
staticPodPath: /etc/kubernetes/manifests
syncFrequency: 1m0s
fileCheckFrequency: 20s
address: 0.0.0.0
port: 10250
readOnlyPort: 0
tlsCipherSuites: [TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256]
authentication:
  x509: {clientCAFile: /etc/kubernetes/pki/ca.crt}
  webhook: {enabled: true, cacheTTL: 2m0s}
  anonymous: {enabled: false}
authorization:
  mode: Webhook
  webhook: {cacheAuthorizedTTL: 5m0s, cacheUnauthorizedTTL: 30s}
clusterDNS: [10.96.0.10]
clusterDomain: cluster.local
cgroupDriver: systemd
evictionHard: {memory.available: 100Mi, nodefs.available: 10%}
featureGates:
  KubeletEnsureSecretPulledImages: true
  SomeFutureGate: false
  ImageMaximumGCAge: true
imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages
preloadedImagesVerificationAllowlist: [registry.k8s.io/pause, "registry.example/team/*"]
serializeImagePulls: false
maxParallelImagePulls: 4
registryPullQPS: 20
registryBurst: 40
imageGCHighThresholdPercent: 90
imageGCLowThresholdPercent: 70
imageMinimumGCAge: 1h30m
imageMaximumGCAge: 168h
imageServiceEndpoint: unix:///run/images.sock
containerRuntimeEndpoint: unix:///run/containerd/containerd.sock
logging: {format: json, verbosity: 2}
shutdownGracePeriod: 30s
rotateCertificates: true
""",
    )
    assert cfg == KubeletConfig(
        feature_gate_enabled=True,
        verification_policy=VerificationPolicy.NEVER_VERIFY_ALLOWLISTED_IMAGES,
        allowlist=("registry.k8s.io/pause", "registry.example/team/*"),
        serialize_image_pulls=False,
        max_parallel_image_pulls=4,
        registry_pull_qps=20.0,
        registry_burst=40,
        image_gc_high_threshold_percent=90,
        image_gc_low_threshold_percent=70,
        image_minimum_gc_age=timedelta(hours=1, minutes=30),
        image_maximum_gc_age=timedelta(hours=168),
        image_service_endpoint="unix:///run/images.sock",
        container_runtime_endpoint="unix:///run/containerd/containerd.sock",
    )
    assert cfg.parallel_pull_limit == 4


def test_json_configuration(tmp_path: Path) -> None:
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "imagePullCredentialsVerificationPolicy": "AlwaysVerify",
        "imageMinimumGCAge": "300ms",
        "registryPullQPS": 0,
    }
    cfg = load_kubelet_config(write(tmp_path, json.dumps(doc, indent="\t"), "kubelet.json"))
    assert cfg.verification_policy is VerificationPolicy.ALWAYS_VERIFY
    assert cfg.image_minimum_gc_age == timedelta(milliseconds=300)
    assert cfg.registry_pull_qps == 0.0  # 0 means unlimited and is kept


def test_example_configuration_loads() -> None:
    cfg = load_kubelet_config(EXAMPLES / "kubelet-config.yaml")
    assert cfg.verification_policy is VerificationPolicy.NEVER_VERIFY_ALLOWLISTED_IMAGES
    assert cfg.serialize_image_pulls is False
    assert cfg.max_parallel_image_pulls == 3


@pytest.mark.parametrize(
    ("body", "attr", "expected"),
    [
        # The kubelet's defaulting treats these zero values as "unset".
        ("registryBurst: 0\n", "registry_burst", 10),
        ("imageMinimumGCAge: 0s\n", "image_minimum_gc_age", timedelta(minutes=2)),
        # serializeImagePulls defaults to false when maxParallelImagePulls is 2 or more ...
        ("maxParallelImagePulls: 2\n", "serialize_image_pulls", False),
        # ... and to true otherwise.
        ("maxParallelImagePulls: 1\n", "serialize_image_pulls", True),
        ("registryPullQPS: 0\n", "registry_pull_qps", 0.0),
        ("imageGCHighThresholdPercent: 100\n", "image_gc_disabled", True),
        ("imageMaximumGCAge: 0s\n", "image_maximum_gc_age", timedelta(0)),
        ("serializeImagePulls: null\n", "serialize_image_pulls", True),
        ("registryBurst: 7.0\n", "registry_burst", 7),
        ("imageMinimumGCAge: 1500ns\n", "image_minimum_gc_age", timedelta(microseconds=1)),
    ],
)
def test_kubelet_defaulting(tmp_path: Path, body: str, attr: str, expected: object) -> None:
    assert getattr(load(tmp_path, body), attr) == expected


def test_feature_gate_off(tmp_path: Path) -> None:
    cfg = load(tmp_path, "featureGates: {KubeletEnsureSecretPulledImages: false}\n")
    assert cfg.feature_gate_enabled is False
    assert cfg.verification_policy is None


def test_direct_construction_normalises_and_validates() -> None:
    assert KubeletConfig(feature_gate_enabled=False).verification_policy is None
    assert KubeletConfig(verification_policy=None).verification_policy is (
        VerificationPolicy.NEVER_VERIFY_PRELOADED_IMAGES
    )
    assert KubeletConfig(serialize_image_pulls=False).parallel_pull_limit is None
    with pytest.raises(ConfigError, match="maxParallelImagePulls cannot be larger than 1"):
        KubeletConfig(max_parallel_image_pulls=3)
    with pytest.raises(ConfigError, match="must not be set if KubeletEnsureSecretPulledImages"):
        KubeletConfig(
            feature_gate_enabled=False, verification_policy=VerificationPolicy.ALWAYS_VERIFY
        )
    with pytest.raises(ConfigError, match="imageMinimumGCAge -1s must not be negative"):
        KubeletConfig(image_minimum_gc_age=timedelta(seconds=-1))


# --- validation: the kubelet's rules and messages ---------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "imageGCHighThresholdPercent: 101\n",
            "invalid configuration: imageGCHighThresholdPercent (--image-gc-high-threshold) 101 "
            "must be between 0 and 100, inclusive",
        ),
        (
            "imageGCLowThresholdPercent: -1\n",
            "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) -1 "
            "must be between 0 and 100, inclusive",
        ),
        (
            "imageGCLowThresholdPercent: 85\n",
            "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) 85 "
            "must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) 85",
        ),
        (
            "imageMinimumGCAge: -1m\n",
            "invalid configuration: imageMinimumGCAge -1m0s must not be negative",
        ),
        (
            "imageMaximumGCAge: -1h\n",
            "invalid configuration: imageMaximumGCAge -1h0m0s must not be negative",
        ),
        (
            "imageMinimumGCAge: 1h\nimageMaximumGCAge: 30m\n",
            "invalid configuration: imageMaximumGCAge 30m0s must be greater than "
            "imageMinimumGCAge 1h0m0s",
        ),
        (
            "imageMaximumGCAge: 2m\n",  # equal to the default minimum
            "invalid configuration: imageMaximumGCAge 2m0s must be greater than "
            "imageMinimumGCAge 2m0s",
        ),
        (
            "featureGates: {ImageMaximumGCAge: false}\nimageMaximumGCAge: 1h\n",
            "invalid configuration: ImageMaximumGCAge feature gate is required for Kubelet "
            "configuration option imageMaximumGCAge",
        ),
        (
            "registryBurst: -1\n",
            "invalid configuration: registryBurst (--registry-burst) -1 must not be a negative "
            "number",
        ),
        (
            "registryPullQPS: -5\n",
            "invalid configuration: registryPullQPS (--registry-qps) -5 must not be a negative "
            "number",
        ),
        (
            "serializeImagePulls: false\nmaxParallelImagePulls: 0\n",
            "invalid configuration: maxParallelImagePulls 0 must be a positive number",
        ),
        (
            "serializeImagePulls: true\nmaxParallelImagePulls: 2\n",
            "invalid configuration: maxParallelImagePulls cannot be larger than 1 unless "
            "SerializeImagePulls (--serialize-image-pulls) is set to false",
        ),
        (
            "imagePullCredentialsVerificationPolicy: Sometimes\n",
            "invalid configuration: `imagePullCredentialsVerificationPolicy` must be one of "
            "[NeverVerify, NeverVerifyPreloadedImages, NeverVerifyAllowlistedImages, "
            'AlwaysVerify], got "Sometimes"',
        ),
        (
            "preloadedImagesVerificationAllowlist: [registry.k8s.io/pause]\n",
            "`preloadedImagesVerificationAllowlist` must not be set unless "
            "`imagePullCredentialsVerificationPolicy` is NeverVerifyAllowlistedImages",
        ),
        (
            "imagePullCredentialsVerificationPolicy: NeverVerifyAllowlistedImages\n"
            "preloadedImagesVerificationAllowlist: ['registry.k8s.io/pause:3.9']\n",
            "neither tag nor digest is accepted in an image reference",
        ),
        (
            "featureGates: {KubeletEnsureSecretPulledImages: false}\n"
            "imagePullCredentialsVerificationPolicy: AlwaysVerify\n",
            "invalid configuration: `imagePullCredentialsVerificationPolicy` must not be set if "
            "KubeletEnsureSecretPulledImages feature gate is not enabled",
        ),
    ],
)
def test_validation_rule(tmp_path: Path, body: str, message: str) -> None:
    found = problems(tmp_path, body)
    assert len(found) == 1, found
    assert message in found[0]


def test_several_problems_are_reported_together(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        HEADER + "registryBurst: -1\nregistryPullQPS: -1\n"
        "featureGates: {KubeletEnsureSecretPulledImages: false}\n"
        "imagePullCredentialsVerificationPolicy: AlwaysVerify\n"
        "preloadedImagesVerificationAllowlist: [a]\n",
    )
    with pytest.raises(ConfigError) as info:
        load_kubelet_config(path)
    err = info.value
    assert err.source == str(path)
    assert len(err.problems) == 4
    assert [p.split(":")[1].split()[0] for p in err.problems] == [
        "registryBurst",
        "registryPullQPS",
        "`imagePullCredentialsVerificationPolicy`",
        "`preloadedImagesVerificationAllowlist`",
    ]
    assert str(err) == f"{path}: [" + ", ".join(err.problems) + "]"


def test_a_single_problem_is_not_bracketed(tmp_path: Path) -> None:
    path = write(tmp_path, HEADER + "registryBurst: -1\n")
    with pytest.raises(ConfigError) as info:
        load_kubelet_config(path)
    assert str(info.value) == (
        f"{path}: invalid configuration: registryBurst (--registry-burst) -1 must not be a "
        "negative number"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ('serializeImagePulls: "yes"\n', "serializeImagePulls: expected a boolean"),
        ("serializeImagePulls: 1\n", "serializeImagePulls: expected a boolean"),
        ('registryBurst: "10"\n', 'registryBurst: expected an integer, got string "10"'),
        ("registryPullQPS: 2.5\n", "registryPullQPS: expected an integer, got number 2.5"),
        ("maxParallelImagePulls: true\n", "maxParallelImagePulls: expected an integer"),
        ("imageGCHighThresholdPercent: 4294967296\n", "does not fit in a 32-bit integer"),
        ("imageMinimumGCAge: 120\n", "imageMinimumGCAge: expected a duration string"),
        (
            "imageMinimumGCAge: 2 minutes\n",
            'imageMinimumGCAge: time: unknown unit " minutes" in duration "2 minutes"',
        ),
        ("imageMaximumGCAge: 1d\n", 'imageMaximumGCAge: time: unknown unit "d"'),
        ("imageMaximumGCAge: ''\n", 'imageMaximumGCAge: time: invalid duration ""'),
        (
            "featureGates: {KubeletEnsureSecretPulledImages: 'true'}\n",
            "featureGates.KubeletEnsureSecretPulledImages: expected a boolean",
        ),
        ("featureGates: [a]\n", "featureGates: expected a map"),
        ("imagePullCredentialsVerificationPolicy: 1\n", "expected a string, got number 1"),
        ("preloadedImagesVerificationAllowlist: abc\n", "expected a list of strings"),
        ("preloadedImagesVerificationAllowlist: [1]\n", "Allowlist[0]: expected a string"),
        ("containerRuntimeEndpoint: [x]\n", "containerRuntimeEndpoint: expected a string"),
    ],
)
def test_wrong_types_name_the_field(tmp_path: Path, body: str, message: str) -> None:
    (found,) = problems(tmp_path, body)
    assert message in found


def test_all_type_errors_are_reported(tmp_path: Path) -> None:
    found = problems(tmp_path, "registryBurst: x\nserializeImagePulls: x\n")
    assert [p.split(":")[0] for p in found] == ["serializeImagePulls", "registryBurst"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("kind: KubeletConfiguration\n", "apiVersion: expected kubelet.config.k8s.io/v1beta1"),
        (
            "apiVersion: kubelet.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n",
            'got "kubelet.config.k8s.io/v1alpha1"',
        ),
        (
            "apiVersion: kubelet.config.k8s.io/v1beta1\nkind: CredentialProviderConfig\n",
            'kind: expected KubeletConfiguration, got "CredentialProviderConfig"',
        ),
        ("- a\n", "expected a KubeletConfiguration object, got a list"),
        ("", "empty file"),
        (HEADER + "---\n" + HEADER, "expected one KubeletConfiguration document, found 2"),
        (HEADER + "maxPods: [1\n", "line 4, column 1: invalid YAML"),
        ("{kind: KubeletConfiguration, apiVersion: v1}", 'got "v1"'),  # YAML flow style
    ],
)
def test_bad_files(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_kubelet_config(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_broken_json_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, '{"kind": "KubeletConfiguration",\n "x": }', "kubelet.json")
    with pytest.raises(ConfigError, match=r"kubelet.json: line 2, column 7: invalid JSON"):
        load_kubelet_config(path)


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"missing\.yaml: cannot read: No such file"):
        load_kubelet_config(tmp_path / "missing.yaml")


def test_parse_uses_source_in_messages() -> None:
    with pytest.raises(ConfigError, match=r"^inline: kind: expected"):
        parse_kubelet_config({"apiVersion": "kubelet.config.k8s.io/v1beta1"}, "inline")


# --- Go durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ns"),
    [
        ("0", 0),
        ("0s", 0),
        ("-0", 0),
        ("+5s", 5 * S),
        ("2m", 2 * M),
        ("1h30m", H + 30 * M),
        ("300ms", 300 * MS),
        ("1.5h", H + 30 * M),
        ("-1.5h", -(H + 30 * M)),
        (".5s", 500 * MS),
        ("5.s", 5 * S),
        ("1h2m3s4ms5us6ns", H + 2 * M + 3 * S + 4 * MS + 5 * US + 6 * NS),
        ("3µs", 3 * US),  # micro sign
        ("3μs", 3 * US),  # greek mu
        ("3us", 3 * US),
        ("1.0000000001s", S),  # beyond nanoseconds: truncated
        ("0.000000001s", 1),
        ("100000000000000000ns", 10**17),
        ("9223372036854775807ns", 2**63 - 1),
        ("-9223372036854775808ns", -(2**63)),
        ("2562047h47m16.854775807s", 2**63 - 1),
        ("1.00000000000000000000000000001s", S),  # a very long fraction is cut, not an error
    ],
)
def test_go_duration_valid(text: str, ns: int) -> None:
    assert parse_go_duration(text) == ns


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", 'time: invalid duration ""'),
        ("s", 'time: invalid duration "s"'),
        (".", 'time: invalid duration "."'),
        (".s", 'time: invalid duration ".s"'),
        ("-", 'time: invalid duration "-"'),
        ("+-1s", 'time: invalid duration "+-1s"'),
        ("1", 'time: missing unit in duration "1"'),
        ("1h2", 'time: missing unit in duration "1h2"'),
        ("1.5.5s", 'time: missing unit in duration "1.5.5s"'),
        ("1d", 'time: unknown unit "d" in duration "1d"'),
        ("1S", 'time: unknown unit "S" in duration "1S"'),
        ("1 s", 'time: unknown unit " s" in duration "1 s"'),
        ("1e3s", 'time: unknown unit "e" in duration "1e3s"'),
        (" 1s", 'time: invalid duration " 1s"'),
        ("1s ", 'time: unknown unit "s " in duration "1s "'),
        ("9223372036854775808ns", 'time: invalid duration "9223372036854775808ns"'),
        ("2562048h", 'time: invalid duration "2562048h"'),
        ("3000000h", 'time: invalid duration "3000000h"'),
        ("99999999999999999999s", 'time: invalid duration "99999999999999999999s"'),
        ("1x\n", 'time: unknown unit "x\\x0a" in duration "1x\\x0a"'),
        ('1"', 'time: unknown unit "\\"" in duration "1\\""'),
        ("٣s", 'time: invalid duration "\\xd9\\xa3s"'),  # a non-ASCII digit is not a digit
    ],
)
def test_go_duration_invalid(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_go_duration(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (0, "0s"),
        (1, "1ns"),
        (999, "999ns"),
        (1_500, "1.5µs"),
        (1_000, "1µs"),
        (1_500_000, "1.5ms"),
        (300 * MS, "300ms"),
        (S, "1s"),
        (S + 1, "1.000000001s"),
        (2 * M, "2m0s"),
        (H, "1h0m0s"),
        (H + 30 * M, "1h30m0s"),
        (168 * H, "168h0m0s"),
        (-M, "-1m0s"),
        (-1, "-1ns"),
        (2**63 - 1, "2562047h47m16.854775807s"),
        (-(2**63), "-2562047h47m16.854775808s"),
        (timedelta(minutes=2), "2m0s"),
        (timedelta(microseconds=-1), "-1µs"),
    ],
)
def test_go_duration_format(ns: int | timedelta, text: str) -> None:
    assert format_go_duration(ns) == text


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_go_duration_round_trip(ns: int) -> None:
    assert parse_go_duration(format_go_duration(ns)) == ns


# --- documents nested too deeply ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("kubelet.json", '{"x": ' + "[" * 100_000, "line 1, column 262: invalid JSON: nested more"),
        ("kubelet.yaml", '{"a": ' + "[" * 100_000, "line 1, column 262: invalid YAML: nested"),
        ("kubelet.yaml", "[" * 100_000, "line 1, column 257: invalid YAML: nested more than 256"),
        ("kubelet.yaml", HEADER + "x: " + "[" * 100_000, "line 3, column 259: invalid YAML"),
        ("kubelet.yaml", HEADER + "x:\n" + "- " * 300 + "a\n", "line 4, column 511: invalid YAML"),
        ("kubelet.yaml", HEADER + "x: &a [*a]\n", "line 3, column 8: invalid YAML: an alias"),
    ],
    ids=["json", "json-in-yaml-file", "yaml-flow", "yaml-flow-value", "yaml-block", "alias-loop"],
)
def test_deeply_nested_files_are_config_errors(
    tmp_path: Path, name: str, text: str, message: str
) -> None:
    path = write(tmp_path, text, name)
    with pytest.raises(ConfigError) as info:
        load_kubelet_config(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_brackets_in_yaml_strings_do_not_count(tmp_path: Path) -> None:
    # Flow style starting with "{" is tried as JSON first, where single quotes mean nothing.
    quoted = "'" + "[" * 300 + "'"
    text = "{apiVersion: kubelet.config.k8s.io/v1beta1, kind: KubeletConfiguration, x: "
    assert load_kubelet_config(write(tmp_path, text + quoted + "}")) == KubeletConfig()


def test_a_pattern_that_reads_like_two_messages_is_one_problem(tmp_path: Path) -> None:
    # The problems are carried as a list end to end, never split back out of the joined text.
    body = (
        "imagePullCredentialsVerificationPolicy: Bogus\n"
        "preloadedImagesVerificationAllowlist: ['a, invalid configuration: b/*x']\n"
    )
    found = problems(tmp_path, body)
    assert len(found) == 2
    assert found[1].endswith("are allowed: a, invalid configuration: b/*x")


def test_problems_of_a_directly_built_config() -> None:
    with pytest.raises(ConfigError) as info:
        KubeletConfig(registry_burst=-1, registry_pull_qps=-1.0)
    err = info.value
    assert err.source == ""
    assert [p.split()[2] for p in err.problems] == ["registryBurst", "registryPullQPS"]
    assert str(err) == "[" + ", ".join(err.problems) + "]"


def test_config_error_message_from_problems() -> None:
    assert str(ConfigError(problems=["one"])) == "one"
    assert str(ConfigError(problems=["one", "two"], source="f.yaml")) == "f.yaml: [one, two]"
    assert ConfigError(problems=iter(["a", "b"])).problems == ("a", "b")
    explicit = ConfigError("as given", source="f.yaml")
    assert str(explicit) == "as given" and explicit.problems == ("as given",)
    with pytest.raises(TypeError):
        ConfigError()


def test_unknown_fields_are_listed_not_errors() -> None:
    doc = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "maxPods": 110,  # a real field pullwarden does not use: not unknown
        "imageGCHighThresholdPercnt": 90,  # a typo
        "registryBurst": 3,
        "newerField": {"x": 1},
    }
    config = parse_kubelet_config(doc)
    assert config.unknown_fields == ("imageGCHighThresholdPercnt", "newerField")
    assert config.registry_burst == 3
    known = parse_kubelet_config({k: v for k, v in doc.items() if k not in config.unknown_fields})
    assert known == config and known.unknown_fields == ()
    assert default_kubelet_config().unknown_fields == ()
    with pytest.raises(ConfigError, match="registryBurst"):  # wrong types stay errors
        parse_kubelet_config(doc | {"registryBurst": "three"})


def test_repeated_fields_at_any_depth_are_listed_and_the_last_value_counts(
    tmp_path: Path,
) -> None:
    config = load(
        tmp_path,
        "registryBurst: 3\n"
        "featureGates:\n"
        "  KubeletEnsureSecretPulledImages: true\n"
        "  KubeletEnsureSecretPulledImages: false\n"
        "registryBurst: 4\n"
        "registryBurst: 5\n",
    )
    assert config.duplicate_fields == (
        "registryBurst",
        "featureGates.KubeletEnsureSecretPulledImages",
    )
    assert config.registry_burst == 5 and not config.feature_gate_enabled
    assert config.verification_policy is None

    listed = load(
        tmp_path, "imagePullCredentialsVerificationPolicy: NeverVerify\nx: [{a: 1, a: 2}]\n"
    )
    assert listed.duplicate_fields == ("x[0].a",)

    as_json = write(
        tmp_path,
        '{"apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration", '
        '"registryBurst": 3, "registryBurst": 7}',
        "kubelet.json",
    )
    config = load_kubelet_config(as_json)
    assert config.duplicate_fields == ("registryBurst",) and config.registry_burst == 7
    assert load(tmp_path, "registryBurst: 3\n").duplicate_fields == ()
