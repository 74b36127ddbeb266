"""CredentialProviderConfig: strict reading, the kubelet's validation rules, directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from pullwarden.credentials import (
    CredentialProvider,
    CredentialProviderConfig,
    TokenAttributes,
    load_credential_provider_config,
)
from pullwarden.errors import ConfigError

V1 = "credentialprovider.kubelet.k8s.io/v1"
CONFIG_V1 = "kubelet.config.k8s.io/v1"


def provider(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "ecr",
        "matchImages": ["*.dkr.ecr.*.amazonaws.com"],
        "defaultCacheDuration": "12h",
        "apiVersion": V1,
    }
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def token_attributes(**changes: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "serviceAccountTokenAudience": "registry.example",
        "cacheType": "ServiceAccount",
        "requireServiceAccount": True,
    }
    for key, value in changes.items():
        if value is None:
            doc.pop(key, None)
        else:
            doc[key] = value
    return doc


def document(*providers: dict[str, Any], api_version: str = CONFIG_V1) -> dict[str, Any]:
    return {"apiVersion": api_version, "kind": "CredentialProviderConfig", "providers": providers}


def write(path: Path, doc: Any) -> Path:
    path.write_text(json.dumps(doc) if path.suffix == ".json" else _yaml(doc), encoding="utf-8")
    return path


def _yaml(doc: Any) -> str:
    import yaml

    return yaml.safe_dump(doc, sort_keys=False)


def problems_of(path: Path) -> tuple[str, ...]:
    with pytest.raises(ConfigError) as info:
        load_credential_provider_config(path)
    assert info.value.source == str(path)
    assert str(path) in str(info.value)
    return info.value.problems


# --- what a valid file gives -----------------------------------------------------------------


def test_yaml_file_with_every_field(tmp_path: Path) -> None:
    path = tmp_path / "providers.yaml"
    path.write_text(
        f"""\
apiVersion: {CONFIG_V1}
kind: CredentialProviderConfig
providers:
  - name: ecr-credential-provider
    matchImages:
      - "*.dkr.ecr.*.amazonaws.com"
      - "registry.example:5000/team"
    defaultCacheDuration: 12h30m
    apiVersion: {V1}
    args: [get-credentials, --v=2]
    env:
      - name: AWS_PROFILE
        value: example_profile
    tokenAttributes:
      serviceAccountTokenAudience: sts.example
      cacheType: Token
      requireServiceAccount: true
      requiredServiceAccountAnnotationKeys: [example.com/role]
      optionalServiceAccountAnnotationKeys: [example.com/region]
  - name: legacy
    matchImages: ["*.legacy.example"]
    defaultCacheDuration: 0s
    apiVersion: credentialprovider.kubelet.k8s.io/v1beta1
""",
        encoding="utf-8",
    )
    config = load_credential_provider_config(path)
    assert config == CredentialProviderConfig(
        (
            CredentialProvider(
                name="ecr-credential-provider",
                match_images=("*.dkr.ecr.*.amazonaws.com", "registry.example:5000/team"),
                default_cache_duration=45000.0,
                api_version=V1,
                args=("get-credentials", "--v=2"),
                env=(("AWS_PROFILE", "example_profile"),),
                token_attributes=TokenAttributes(
                    service_account_token_audience="sts.example",
                    cache_type="Token",
                    require_service_account=True,
                    required_annotation_keys=("example.com/role",),
                    optional_annotation_keys=("example.com/region",),
                ),
                source=str(path),
            ),
            CredentialProvider(
                name="legacy",
                match_images=("*.legacy.example",),
                default_cache_duration=0.0,
                api_version="credentialprovider.kubelet.k8s.io/v1beta1",
                source=str(path),
            ),
        )
    )


@pytest.mark.parametrize(
    "api_version",
    ["kubelet.config.k8s.io/v1", "kubelet.config.k8s.io/v1beta1", "kubelet.config.k8s.io/v1alpha1"],
)
def test_each_config_api_version_is_read(tmp_path: Path, api_version: str) -> None:
    path = write(tmp_path / "c.json", document(provider(), api_version=api_version))
    (only,) = load_credential_provider_config(path).providers
    assert only.name == "ecr" and only.default_cache_duration == 43200.0


def test_env_values_stay_out_of_the_repr(tmp_path: Path) -> None:
    env = [{"name": "AWS_SECRET_ACCESS_KEY", "value": "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"}]
    path = write(tmp_path / "c.yaml", document(provider(env=env)))
    (only,) = load_credential_provider_config(path).providers
    assert only.env == (("AWS_SECRET_ACCESS_KEY", "wJalrXUtnFEMI-K7MDENG-bPxRfiCY"),)
    assert "wJalrXUtnFEMI" not in repr(only) and "AWS_SECRET_ACCESS_KEY" in repr(only)


def test_unquoted_dates_stay_strings(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    text = _yaml(document(provider(args=["x"]))).replace("- x", "- 2024-01-02")
    path.write_text(text, encoding="utf-8")
    (only,) = load_credential_provider_config(path).providers
    assert only.args == ("2024-01-02",)


# --- the kubelet's validation rules, one by one ------------------------------------------------

SUPPORTED = (
    '"credentialprovider.kubelet.k8s.io/v1", "credentialprovider.kubelet.k8s.io/v1alpha1", '
    '"credentialprovider.kubelet.k8s.io/v1beta1"'
)
NAME_PART = (
    "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
    "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for "
    "validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
TA = "providers[0].tokenAttributes"

RULES: list[tuple[str, dict[str, Any], str]] = [
    (
        "name with a slash",
        provider(name="foo/../bar"),
        "providers[0].name: Invalid value: \"foo/../bar\": provider name cannot contain '/'",
    ),
    (
        "name with a space",
        provider(name="foo bar"),
        'providers[0].name: Invalid value: "foo bar": provider name cannot contain spaces',
    ),
    (
        "name .",
        provider(name="."),
        "providers[0].name: Invalid value: \".\": provider name cannot be '.'",
    ),
    (
        "name ..",
        provider(name=".."),
        "providers[0].name: Invalid value: \"..\": provider name cannot be '..'",
    ),
    ("name missing", provider(name=None), "providers[0].name: Required value"),
    ("apiVersion missing", provider(apiVersion=None), "providers[0].apiVersion: Required value"),
    (
        "apiVersion unsupported",
        provider(apiVersion="credentialprovider.kubelet.k8s.io/v1alpha0"),
        'providers[0].apiVersion: Unsupported value: "credentialprovider.kubelet.k8s.io/v1alpha0": '
        f"supported values: {SUPPORTED}",
    ),
    (
        "matchImages missing",
        provider(matchImages=None),
        "providers[0].matchImages: Required value: at least 1 item in matchImages is required",
    ),
    (
        "matchImages empty",
        provider(matchImages=[]),
        "providers[0].matchImages: Required value: at least 1 item in matchImages is required",
    ),
    (
        "matchImages entry that does not parse",
        provider(matchImages=["gcr.io", "%invalid%"]),
        'providers[0].matchImages[1]: Invalid value: "%invalid%": match image is invalid: '
        'parse "https://%invalid%": invalid URL escape',
    ),
    (
        "matchImages entry with a bad port",
        provider(matchImages=["registry.example:port"]),
        'providers[0].matchImages[0]: Invalid value: "registry.example:port": match image is '
        'invalid: parse "https://registry.example:port": invalid port after host',
    ),
    (
        "defaultCacheDuration missing",
        provider(defaultCacheDuration=None),
        "providers[0].defaultCacheDuration: Required value",
    ),
    (
        "defaultCacheDuration negative",
        provider(defaultCacheDuration="-1m"),
        'providers[0].defaultCacheDuration: Invalid value: "-1m0s": must be greater than or '
        "equal to 0",
    ),
    (
        "defaultCacheDuration not a duration",
        provider(defaultCacheDuration="12 hours"),
        'providers[0].defaultCacheDuration: time: unknown unit " hours" in duration "12 hours"',
    ),
    (
        "defaultCacheDuration a number",
        provider(defaultCacheDuration=5),
        'providers[0].defaultCacheDuration: expected a duration string such as "12h" or "5m", '
        "got number 5",
    ),
    (
        "audience missing",
        provider(tokenAttributes=token_attributes(serviceAccountTokenAudience=None)),
        f"{TA}.serviceAccountTokenAudience: Required value",
    ),
    (
        "requireServiceAccount missing",
        provider(tokenAttributes=token_attributes(requireServiceAccount=None)),
        f"{TA}.requireServiceAccount: Required value",
    ),
    (
        "cacheType missing",
        provider(tokenAttributes=token_attributes(cacheType=None)),
        f"{TA}.cacheType: Required value: cacheType is required to be set when tokenAttributes "
        "is specified. Supported values are: ServiceAccount, Token",
    ),
    (
        "cacheType unsupported",
        provider(tokenAttributes=token_attributes(cacheType="invalid-cache-type")),
        f'{TA}.cacheType: Unsupported value: "invalid-cache-type": supported values: '
        '"ServiceAccount", "Token"',
    ),
    (
        "tokenAttributes with the v1beta1 plugin API",
        provider(
            apiVersion="credentialprovider.kubelet.k8s.io/v1beta1",
            tokenAttributes=token_attributes(),
        ),
        f"{TA}: Forbidden: tokenAttributes is only supported for "
        "credentialprovider.kubelet.k8s.io/v1 API version",
    ),
    (
        "required keys without requireServiceAccount",
        provider(
            tokenAttributes=token_attributes(
                requireServiceAccount=False, requiredServiceAccountAnnotationKeys=["a.io/b"]
            )
        ),
        f"{TA}.requiredServiceAccountAnnotationKeys: Forbidden: requireServiceAccount cannot be "
        "false when requiredServiceAccountAnnotationKeys is set",
    ),
    (
        "required key not a qualified name",
        provider(
            tokenAttributes=token_attributes(
                requiredServiceAccountAnnotationKeys=["cantendwithadash-", "now-with-dashes/simple"]
            )
        ),
        f'{TA}.requiredServiceAccountAnnotationKeys[0]: Invalid value: "cantendwithadash-": '
        + NAME_PART,
    ),
    (
        "optional key with a bad prefix",
        provider(tokenAttributes=token_attributes(optionalServiceAccountAnnotationKeys=["a_b/c"])),
        f'{TA}.optionalServiceAccountAnnotationKeys[0]: Invalid value: "a_b/c": prefix part a '
        "lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
        "or '.', and must start and end with an alphanumeric character (e.g. 'example.com', "
        "regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*"
        "[a-z0-9])?)*')",
    ),
    (
        "optional key with two slashes",
        provider(tokenAttributes=token_attributes(optionalServiceAccountAnnotationKeys=["a/b/c"])),
        f'{TA}.optionalServiceAccountAnnotationKeys[0]: Invalid value: "a/b/c": a valid label '
        "key must consist of alphanumeric characters, '-', '_' or '.', and must start and end "
        "with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used "
        "for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]') with an optional DNS "
        "subdomain prefix and '/' (e.g. 'example.com/MyName')",
    ),
    (
        "duplicate required key",
        provider(
            tokenAttributes=token_attributes(
                requiredServiceAccountAnnotationKeys=["now-with-dashes/simple"] * 2
            )
        ),
        f'{TA}.requiredServiceAccountAnnotationKeys[1]: Duplicate value: "now-with-dashes/simple"',
    ),
    (
        "key both required and optional",
        provider(
            tokenAttributes=token_attributes(
                requiredServiceAccountAnnotationKeys=["x.io/s-1", "x.io/s-2"],
                optionalServiceAccountAnnotationKeys=["x.io/s-2", "x.io/s-3"],
            )
        ),
        f'{TA}: Invalid value: ["x.io/s-2"]: annotation keys cannot be both required and optional',
    ),
    (
        "unknown field",
        provider(unknownField="should not be here"),
        "providers[0].unknownField: unknown field",
    ),
    (
        "field names are case-sensitive",
        provider(Args=["x"]),
        "providers[0].Args: unknown field",
    ),
    (
        "unknown field in tokenAttributes",
        provider(tokenAttributes=token_attributes(audience="x")),
        f"{TA}.audience: unknown field",
    ),
    (
        "unknown field in env",
        provider(env=[{"name": "A", "value": "b", "valueFrom": "c"}]),
        "providers[0].env[0].valueFrom: unknown field",
    ),
    (
        "a list where a string goes",
        provider(name=["ecr"]),
        "providers[0].name: expected a string, got a list",
    ),
    (
        "a string where a list goes",
        provider(matchImages="gcr.io"),
        "providers[0].matchImages: expected a list, got a string",
    ),
    (
        "requireServiceAccount not a boolean",
        provider(tokenAttributes=token_attributes(requireServiceAccount="yes please")),
        f"{TA}.requireServiceAccount: expected a boolean (true or false), got a string",
    ),
]


@pytest.mark.parametrize(("doc", "problem"), [r[1:] for r in RULES], ids=[r[0] for r in RULES])
@pytest.mark.parametrize("suffix", [".yaml", ".json"])
def test_each_rule_names_the_field_and_file(
    tmp_path: Path, doc: dict[str, Any], problem: str, suffix: str
) -> None:
    path = write(tmp_path / f"config{suffix}", document(doc))
    assert problems_of(path) == (problem,)


def test_no_providers(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", document())
    assert problems_of(path) == (
        "providers: Required value: at least 1 item in plugins is required",
    )


def test_duplicate_names_in_one_file(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", document(provider(), provider(matchImages=["gcr.io"])))
    assert problems_of(path) == ('providers[1].name: Duplicate value: "ecr"',)


def test_token_attributes_exist_only_in_config_v1(tmp_path: Path) -> None:
    doc = document(
        provider(tokenAttributes=token_attributes()), api_version="kubelet.config.k8s.io/v1beta1"
    )
    path = write(tmp_path / "c.yaml", doc)
    assert problems_of(path) == (
        "providers[0].tokenAttributes: unknown field (tokenAttributes needs apiVersion "
        "kubelet.config.k8s.io/v1)",
    )


def test_every_problem_of_a_file_at_once(tmp_path: Path) -> None:
    doc = document(
        provider(name="a/b", defaultCacheDuration="-5s"),
        provider(name="two", apiVersion=None, matchImages=[]),
    )
    path = write(tmp_path / "c.yaml", doc)
    assert problems_of(path) == (
        "providers[0].name: Invalid value: \"a/b\": provider name cannot contain '/'",
        'providers[0].defaultCacheDuration: Invalid value: "-5s": must be greater than or equal '
        "to 0",
        "providers[1].apiVersion: Required value",
        "providers[1].matchImages: Required value: at least 1 item in matchImages is required",
    )


def test_every_decoding_problem_at_once(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", document(provider(args="x", extra=1), provider(env={})))
    assert problems_of(path) == (
        "providers[0].extra: unknown field",
        "providers[0].args: expected a list, got a string",
        "providers[1].env: expected a list, got a map",
    )


# --- the document -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"kind": "KubeletConfiguration"}, 'kind: Unsupported value: "KubeletConfiguration": '),
        ({"kind": None}, "kind: Required value"),
        ({"apiVersion": None}, "apiVersion: Required value"),
        ({"apiVersion": "kubelet.config.k8s.io/v2"}, 'apiVersion: Unsupported value: "kubelet'),
        ({"providers": {"name": "x"}}, "providers: expected a list, got a map"),
        ({"extra": True}, "extra: unknown field"),
    ],
)
def test_header_problems(tmp_path: Path, changes: dict[str, Any], problem: str) -> None:
    doc = {**document(provider()), **changes}
    doc = {k: v for k, v in doc.items() if v is not None}
    (got,) = problems_of(write(tmp_path / "c.yaml", doc))
    assert got.startswith(problem)


def test_repeated_fields_are_refused_in_yaml_and_json(tmp_path: Path) -> None:
    yaml_path = tmp_path / "c.yaml"
    yaml_path.write_text(
        _yaml(document(provider())).replace("- name: ecr\n", "- name: ecr\n  name: ecr2\n"),
        encoding="utf-8",
    )
    assert problems_of(yaml_path) == ("providers[0].name: duplicate field",)
    json_path = tmp_path / "c.json"
    json_path.write_text(
        json.dumps(document(provider())).replace('"name": "ecr"', '"name": "a", "name": "b"'),
        encoding="utf-8",
    )
    assert problems_of(json_path) == ("providers[0].name: duplicate field",)


@pytest.mark.parametrize(
    ("name", "text", "problem"),
    [
        ("c.yaml", "providers: [\n", "invalid YAML"),
        ("c.json", '{"providers": ', "line 1, column 15: invalid JSON"),
        ("c.yaml", "", "empty file"),
        ("c.yaml", "kind: a\n---\nkind: b\n", "expected one CredentialProviderConfig document"),
        ("c.json", "[" * 300 + "]" * 300, "nested more than 256 levels deep"),
        ("c.yaml", "- " * 300 + "x\n", "nested more than 256 levels deep"),
        ("c.yaml", "[1, 2]\n", "expected a CredentialProviderConfig object, got a list"),
    ],
)
def test_unreadable_documents(tmp_path: Path, name: str, text: str, problem: str) -> None:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    (got,) = problems_of(path)
    assert problem in got


def test_missing_path(tmp_path: Path) -> None:
    assert problems_of(tmp_path / "nope.yaml") == ("cannot read: No such file or directory",)


def test_a_file_of_any_name_is_read(tmp_path: Path) -> None:
    path = tmp_path / "credential-providers.conf"
    path.write_text(json.dumps(document(provider())), encoding="utf-8")
    assert [p.name for p in load_credential_provider_config(path).providers] == ["ecr"]


# --- directories ------------------------------------------------------------------------------


def test_directory_files_merge_in_lexical_order(tmp_path: Path) -> None:
    d = tmp_path / "providers.d"
    d.mkdir()
    write(d / "20-b.yaml", document(provider(name="b1"), provider(name="b2")))
    write(
        d / "10-a.json", document(provider(name="a"), api_version="kubelet.config.k8s.io/v1beta1")
    )
    write(d / "30-c.yml", document(provider(name="c")))
    (d / "40-notes.txt").write_text("not a configuration", encoding="utf-8")
    (d / "50-subdir.yaml").mkdir()
    config = load_credential_provider_config(d)
    assert [(p.name, Path(p.source).name) for p in config.providers] == [
        ("a", "10-a.json"),
        ("b1", "20-b.yaml"),
        ("b2", "20-b.yaml"),
        ("c", "30-c.yml"),
    ]


def test_directory_file_without_providers_is_fine_when_others_have_some(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", document())
    write(tmp_path / "b.yaml", document(provider()))
    assert [p.name for p in load_credential_provider_config(tmp_path).providers] == ["ecr"]


def test_duplicate_names_across_files(tmp_path: Path) -> None:
    first = write(tmp_path / "a.yaml", document(provider(name="dup")))
    second = write(tmp_path / "b.yaml", document(provider(name="other"), provider(name="dup")))
    with pytest.raises(ConfigError) as info:
        load_credential_provider_config(tmp_path)
    assert info.value.source == str(second)
    assert info.value.problems == (
        f'providers[1].name: Duplicate value: "dup": already defined in {first} (provider names '
        "must be unique across the configuration files)",
    )


def test_a_bad_file_in_a_directory_is_named(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", document(provider(name="fine")))
    bad = write(tmp_path / "b.yaml", document(provider(name="bad", defaultCacheDuration=None)))
    with pytest.raises(ConfigError) as info:
        load_credential_provider_config(tmp_path)
    assert info.value.source == str(bad)
    assert info.value.problems == ("providers[0].defaultCacheDuration: Required value",)


def test_directory_without_configuration_files(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_credential_provider_config(tmp_path)
    assert info.value.source == str(tmp_path)
    assert info.value.problems == (
        "no configuration files (*.json, *.yaml, *.yml) found in the directory",
    )


def test_directory_of_empty_files_has_no_providers(tmp_path: Path) -> None:
    write(tmp_path / "a.yaml", document())
    with pytest.raises(ConfigError) as info:
        load_credential_provider_config(tmp_path)
    assert info.value.source == str(tmp_path)
    assert info.value.problems == (
        "providers: Required value: at least 1 item in plugins is required",
    )
