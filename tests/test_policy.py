"""Tests for pullwarden.policy: verification policies, the allowlist and config validation."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pullwarden.errors import (
    ConfigError,
    InvalidAllowlistError,
    PolicyError,
    UnknownPolicyError,
)
from pullwarden.policy import (
    DEFAULT_POLICY,
    Allowlist,
    PolicyEnforcer,
    VerificationPolicy,
    check_kubelet_config,
    validate_allowlist,
    validate_kubelet_config,
)
from pullwarden.reference import trim_tag_digest

DIGEST = "sha256:b5bb9d8014a0f9b1d61e21e796d78dccdf1352f23cd32812f4850b878ae4944c"
POD_IMAGE = "registry.example/payments/api:2.4.1"  # the image every enforcer scenario asks for

NEVER = VerificationPolicy.NEVER_VERIFY
PRELOADED = VerificationPolicy.NEVER_VERIFY_PRELOADED_IMAGES
ALLOWLISTED = VerificationPolicy.NEVER_VERIFY_ALLOWLISTED_IMAGES
ALWAYS = VerificationPolicy.ALWAYS_VERIFY


# --- the policy enum -------------------------------------------------------------------------


def test_policy_values_are_the_kubelet_strings() -> None:
    assert [p.value for p in VerificationPolicy] == [
        "NeverVerify",
        "NeverVerifyPreloadedImages",
        "NeverVerifyAllowlistedImages",
        "AlwaysVerify",
    ]
    assert str(ALWAYS) == "AlwaysVerify"
    assert ALWAYS == "AlwaysVerify"


def test_default_policy() -> None:
    assert DEFAULT_POLICY is PRELOADED


@pytest.mark.parametrize("policy", list(VerificationPolicy))
def test_policy_parse_round_trips(policy: VerificationPolicy) -> None:
    assert VerificationPolicy.parse(policy.value) is policy


@pytest.mark.parametrize("value", ["", "alwaysverify", "Always", "AlwaysVerify ", "Never"])
def test_policy_parse_rejects_unknown_values(value: str) -> None:
    with pytest.raises(UnknownPolicyError) as info:
        VerificationPolicy.parse(value)
    assert str(info.value) == f"unknown image pull credential verification policy: {value}"
    assert isinstance(info.value, PolicyError)


# --- allowlist validation --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("patterns", "absolute", "prefixes"),
    [
        pytest.param(
            ["mirror.local/base/alpine", "mirror.local/base/debian", "mirror.local/base/ubi"],
            {"mirror.local/base/alpine", "mirror.local/base/debian", "mirror.local/base/ubi"},
            (),
            id="three-exact-names",
        ),
        pytest.param(
            [
                "mirror.local/base/a",
                "mirror.local/base/c",
                "mirror.local/base/b",
                "mirror.local/base/c",
            ],
            {"mirror.local/base/a", "mirror.local/base/b", "mirror.local/base/c"},
            (),
            id="duplicate-names-collapse",
        ),
        pytest.param(
            ["mirror.local/base/a", "mirror.local/base/b", "other.registry/base/*"],
            {"mirror.local/base/a", "mirror.local/base/b"},
            ("other.registry/base/",),
            id="names-and-a-wildcard",
        ),
        pytest.param(["mirror.local/*"], set(), ("mirror.local/",), id="registry-wildcard"),
        pytest.param(["ubuntu"], {"ubuntu"}, (), id="familiar-name-kept-as-written"),
        pytest.param(["team/tool"], {"team/tool"}, (), id="familiar-org-name"),
        pytest.param(["docker.io/library/*"], set(), ("docker.io/library/",), id="hub-wildcard"),
        pytest.param(["localhost:5000/dev"], {"localhost:5000/dev"}, (), id="port"),
        pytest.param([], set(), (), id="empty-list"),
    ],
)
def test_validate_allowlist_accepts(
    patterns: list[str], absolute: set[str], prefixes: tuple[str, ...]
) -> None:
    allowlist = validate_allowlist(patterns)
    assert allowlist.absolute == frozenset(absolute)
    assert allowlist.prefixes == prefixes


@pytest.mark.parametrize(
    ("pattern", "message"),
    [
        pytest.param(
            "mirror.local/ba*se/alpine",
            "not a valid wildcard pattern, only patterns ending with '/*' are allowed: "
            "mirror.local/ba*se/alpine",
            id="wildcard-inside-a-segment",
        ),
        pytest.param(
            "mirror.local/base*",
            "not a valid wildcard pattern, only patterns ending with '/*' are allowed: "
            "mirror.local/base*",
            id="trailing-partial-segment-wildcard",
        ),
        pytest.param(
            "mirror.local/*/alpine",
            "not a valid wildcard pattern, only patterns ending with '/*' are allowed: "
            "mirror.local/*/alpine",
            id="wildcard-segment-in-the-middle",
        ),
        pytest.param(
            "mirror.local/*/*",
            "not a valid wildcard pattern, only patterns ending with '/*' are allowed: "
            "mirror.local/*/*",
            id="two-wildcards",
        ),
        pytest.param("/*", "at least registry hostname is required", id="wildcard-only"),
        pytest.param(
            "mirror.local/",
            "failed to parse as an image name: invalid reference format",
            id="ends-with-slash",
        ),
        pytest.param("", "the supplied pattern is too short: ", id="empty"),
        pytest.param(
            "*",
            "not a valid wildcard pattern, only patterns ending with '/*' are allowed: *",
            id="bare-asterisk",
        ),
        pytest.param(
            "mirror.local/base/alpine:3.20",
            "neither tag nor digest is accepted in an image reference: "
            "mirror.local/base/alpine:3.20",
            id="tag",
        ),
        pytest.param(
            f"mirror.local/base/alpine@{DIGEST}",
            f"neither tag nor digest is accepted in an image reference: "
            f"mirror.local/base/alpine@{DIGEST}",
            id="digest",
        ),
        pytest.param(
            "mirror.local/base/alpine ",
            "leading/trailing spaces are not allowed: mirror.local/base/alpine ",
            id="trailing-space",
        ),
        pytest.param(
            "\tmirror.local/*",
            "leading/trailing spaces are not allowed: \tmirror.local/*",
            id="leading-tab",
        ),
        pytest.param(
            "alpine\u00a0",
            "leading/trailing spaces are not allowed: alpine\u00a0",
            id="trailing-nbsp",
        ),
        pytest.param(
            "Mirror.local/Base",
            "failed to parse as an image name: repository name must be lowercase",
            id="uppercase-path",
        ),
        pytest.param(
            "http://mirror.local/app",
            "failed to parse as an image name: invalid reference format",
            id="url",
        ),
    ],
)
def test_validate_allowlist_rejects_with_kubelet_message(pattern: str, message: str) -> None:
    with pytest.raises(InvalidAllowlistError) as info:
        validate_allowlist(["fine.example/app", pattern])
    assert str(info.value) == message


def test_validate_allowlist_keeps_non_go_whitespace() -> None:
    # U+001F is whitespace to Python's str.strip() but not to Go's strings.TrimSpace; the
    # pattern is then rejected by the reference grammar instead of the whitespace rule.
    with pytest.raises(InvalidAllowlistError, match=r"^failed to parse as an image name"):
        validate_allowlist(["alpine\x1f"])


def test_validate_allowlist_rejects_a_bare_string() -> None:
    with pytest.raises(TypeError):
        validate_allowlist("mirror.local/*")


def test_validate_allowlist_accepts_any_iterable() -> None:
    allowlist = validate_allowlist(p for p in ("a.io/x", "b.io/*"))
    assert allowlist == Allowlist(absolute=frozenset({"a.io/x"}), prefixes=("b.io/",))


def test_allowlist_is_frozen() -> None:
    allowlist = validate_allowlist(["a.io/x"])
    with pytest.raises(AttributeError):
        allowlist.prefixes = ("x/",)  # type: ignore[misc]


# --- allowlist matching (v1.36+) -------------------------------------------------------------

MATCH_CASES = [
    # A tagged qualified image against names and wildcards.
    ("test.io/test/test-image:tag", ["test.io/test/test-image"], True),
    ("test.io/test/test-image:tag", ["test.io/test/*"], True),
    ("test.io/test/test-image:tag", ["test.io/*"], True),
    ("test.io/test/test-image:tag", ["different.repo/test/*"], False),
    ("test.io/test/test-image:tag", ["test.io/test/image1", "test.io/test/image2"], False),
    # Familiar names match only familiar entries, never their docker.io spelling.
    ("ubuntu", ["ubuntu"], True),
    ("ubuntu:tagged", ["ubuntu"], True),
    (f"ubuntu@{DIGEST}", ["ubuntu"], True),
    (f"ubuntu:24.04@{DIGEST}", ["ubuntu"], True),
    ("ubuntu", ["docker.io/library/ubuntu"], False),
    ("ubuntu", ["docker.io/library/*"], False),
    ("docker.io/library/ubuntu:24.04", ["ubuntu"], False),
    ("docker.io/library/ubuntu:24.04", ["docker.io/library/*"], True),
    # Prefixes keep their slash: a sibling repository with the same leading text is excluded.
    ("test.io/testing/app", ["test.io/test/*"], False),
    ("test.io/test", ["test.io/test/*"], False),
    ("test.iox/app", ["test.io/*"], False),
    # Exact names are exact: a sub-repository is not covered.
    ("test.io/test/test-image/sub:1", ["test.io/test/test-image"], False),
    # Images that cannot be parsed never match.
    ("TEST.io/Test/Image:tag", ["TEST.io/*"], False),
    ("test.io/test/", ["test.io/*"], False),
    ("", ["test.io/*"], False),
    # Nothing matches an empty allowlist.
    ("test.io/test/test-image:tag", [], False),
]


@pytest.mark.parametrize(("image", "patterns", "expected"), MATCH_CASES)
def test_allowlist_matches(image: str, patterns: list[str], expected: bool) -> None:
    assert validate_allowlist(patterns).matches(image) is expected


def test_matching_pattern_reports_the_configured_pattern() -> None:
    allowlist = validate_allowlist(["test.io/test/test-image", "test.io/*", "ubuntu"])
    assert allowlist.matching_pattern("test.io/test/test-image:tag") == "test.io/test/test-image"
    assert allowlist.matching_pattern("test.io/other/thing@" + DIGEST) == "test.io/*"
    assert allowlist.matching_pattern("ubuntu:22.04") == "ubuntu"
    assert allowlist.matching_pattern("debian") is None
    assert allowlist.matching_pattern("Not/Valid") is None


# --- the enforcer: every policy x pulled_by_kubelet x allowlisted -----------------------------

# (policy, image is on the allowlist, pulled by kubelet) -> verification required
DECISIONS: dict[tuple[VerificationPolicy, bool, bool], bool] = {
    (NEVER, False, False): False,
    (NEVER, False, True): False,
    (NEVER, True, False): False,
    (NEVER, True, True): False,
    (PRELOADED, False, False): False,
    (PRELOADED, False, True): True,
    (PRELOADED, True, False): False,
    (PRELOADED, True, True): True,
    (ALLOWLISTED, False, False): True,
    (ALLOWLISTED, False, True): True,
    (ALLOWLISTED, True, False): False,
    (ALLOWLISTED, True, True): False,
    (ALWAYS, False, False): True,
    (ALWAYS, False, True): True,
    (ALWAYS, True, False): True,
    (ALWAYS, True, True): True,
}


@pytest.mark.parametrize(
    ("policy", "allowlisted", "pulled", "expected"),
    [(p, a, k, v) for (p, a, k), v in DECISIONS.items()],
    ids=[
        f"{p.value}-{'allowlisted' if a else 'not-allowlisted'}-"
        f"{'kubelet-pulled' if k else 'preloaded'}"
        for (p, a, k) in DECISIONS
    ],
)
def test_policy_matrix(
    policy: VerificationPolicy, allowlisted: bool, pulled: bool, expected: bool
) -> None:
    patterns = ["registry.example/payments/*"] if allowlisted else ["registry.example/other/*"]
    if policy is not ALLOWLISTED:
        patterns = []  # the allowlist only exists alongside NeverVerifyAllowlistedImages
    enforcer = PolicyEnforcer(policy, patterns)
    assert enforcer.require_credential_verification(POD_IMAGE, pulled) is expected


def test_decision_table_is_complete() -> None:
    combos = set(itertools.product(list(VerificationPolicy), [False, True], [False, True]))
    assert set(DECISIONS) == combos


@pytest.mark.parametrize(
    ("pulled", "expected"),
    [
        pytest.param(False, False, id="no-records-preloaded-image"),
        pytest.param(True, True, id="records-exist-kubelet-pulled"),
    ],
)
def test_never_verify_preloaded_scenarios(pulled: bool, expected: bool) -> None:
    enforcer = PolicyEnforcer()
    assert enforcer.policy is PRELOADED
    assert enforcer.require_credential_verification("tools/jq:1.7", pulled) is expected


@pytest.mark.parametrize(
    ("image", "patterns", "n_abs", "n_wild", "pulled", "expected"),
    [
        pytest.param(
            POD_IMAGE,
            ["registry.example/payments/web", "registry.example/payments/db"],
            2,
            0,
            False,
            True,
            id="no-records-not-in-allowlist",
        ),
        pytest.param(
            POD_IMAGE,
            ["registry.example/payments/web", "registry.example/payments/db"] * 2,
            2,
            0,
            True,
            True,
            id="records-not-in-allowlist-duplicates",
        ),
        pytest.param(
            POD_IMAGE,
            ["registry.example/payments/web", "registry.example/payments/api"],
            2,
            0,
            False,
            False,
            id="no-records-in-allowlist",
        ),
        pytest.param(
            POD_IMAGE,
            ["registry.example/payments/web", "registry.example/payments/api"],
            2,
            0,
            True,
            False,
            id="records-in-allowlist",
        ),
        pytest.param(
            POD_IMAGE,
            ["registry.example/payments/web", "elsewhere.example/payments/*"],
            1,
            1,
            False,
            True,
            id="different-registry-wildcard",
        ),
        pytest.param(
            POD_IMAGE,
            ["registry.example/payments/web", "registry.example/payments/*"],
            1,
            1,
            False,
            False,
            id="org-wildcard",
        ),
        pytest.param(
            POD_IMAGE,
            ["registry.example/payments/web", "registry.example/*"],
            1,
            1,
            False,
            False,
            id="registry-wildcard",
        ),
        pytest.param(
            "alpine", ["docker.io/library/alpine"], 1, 0, False, True, id="familiar-vs-fqdn"
        ),
        pytest.param(
            "alpine", ["docker.io/library/*"], 0, 1, False, True, id="familiar-vs-hub-wildcard"
        ),
        pytest.param("alpine", ["alpine"], 1, 0, False, False, id="familiar-vs-familiar"),
        pytest.param("alpine:3.20", ["alpine"], 1, 0, False, False, id="familiar-tag-vs-familiar"),
        pytest.param(
            f"alpine@{DIGEST}", ["alpine"], 1, 0, False, False, id="familiar-digest-vs-familiar"
        ),
    ],
)
def test_never_verify_allowlisted_scenarios(
    image: str,
    patterns: list[str],
    n_abs: int,
    n_wild: int,
    pulled: bool,
    expected: bool,
) -> None:
    enforcer = PolicyEnforcer(ALLOWLISTED, patterns)
    assert len(enforcer.allowlist.absolute) == n_abs
    assert len(enforcer.allowlist.prefixes) == n_wild
    assert enforcer.require_credential_verification(image, pulled) is expected


@pytest.mark.parametrize(
    "pattern",
    [
        "mirror.local/ba*se/alpine",
        "mirror.local/base*",
        "mirror.local/*/alpine",
        "/*",
        "mirror.local/",
        "",
        "*",
        "mirror.local/alpine:3",
        f"mirror.local/alpine@{DIGEST}",
        "mirror.local/alpine ",
    ],
)
def test_enforcer_rejects_invalid_allowlist(pattern: str) -> None:
    with pytest.raises(InvalidAllowlistError):
        PolicyEnforcer(ALLOWLISTED, [pattern])


def test_enforcer_parses_string_policies() -> None:
    enforcer = PolicyEnforcer("AlwaysVerify")
    assert enforcer.policy is ALWAYS
    assert enforcer.allowlist.is_empty


def test_enforcer_rejects_unknown_policy() -> None:
    with pytest.raises(UnknownPolicyError, match=r"^unknown image pull credential verification"):
        PolicyEnforcer("SometimesVerify")


def test_empty_allowlist_with_allowlisted_policy_verifies_everything() -> None:
    enforcer = PolicyEnforcer(ALLOWLISTED)
    assert enforcer.require_credential_verification("alpine", False) is True
    assert enforcer.require_credential_verification("alpine", True) is True


def test_unparsable_image_is_never_allowlisted() -> None:
    enforcer = PolicyEnforcer(ALLOWLISTED, ["registry.example/*"])
    assert enforcer.require_credential_verification("registry.example/Payments/api", False)


def test_hot_path_reuses_the_trim_cache() -> None:
    enforcer = PolicyEnforcer(ALLOWLISTED, ["registry.example/*"])
    trim_tag_digest.cache_clear()
    for _ in range(5):
        enforcer.require_credential_verification(POD_IMAGE, True)
    info = trim_tag_digest.cache_info()
    assert (info.misses, info.hits) == (1, 4)


def test_repr_names_policy_and_patterns() -> None:
    text = repr(PolicyEnforcer(ALLOWLISTED, ["b.io/x", "a.io/*"]))
    assert "NeverVerifyAllowlistedImages" in text
    assert "b.io/x" in text
    assert "a.io/" in text


# --- explanations ----------------------------------------------------------------------------


# Sorted by policy name, so the test ids come in the same order in every run.
BY_POLICY_NAME = sorted(DECISIONS, key=lambda k: (k[0].value, k[1:]))


@pytest.mark.parametrize(("policy", "allowlisted", "pulled"), BY_POLICY_NAME)
def test_explain_agrees_with_the_decision(
    policy: VerificationPolicy, allowlisted: bool, pulled: bool
) -> None:
    patterns = ["registry.example/payments/*"] if allowlisted else ["registry.example/other/*"]
    enforcer = PolicyEnforcer(policy, patterns)
    text = enforcer.explain(POD_IMAGE, pulled)
    required = enforcer.require_credential_verification(POD_IMAGE, pulled)
    assert text.startswith(f"policy {policy.value}: ")
    assert "\n" not in text
    if policy in (NEVER, ALWAYS):
        assert ("always verified" in text) is required
        assert ("never verified" in text) is not required
    else:
        assert ("must be verified" in text) is required
        assert ("need not be verified" in text) is not required


def test_explain_preloaded_exact_sentence() -> None:
    enforcer = PolicyEnforcer(PRELOADED)
    assert enforcer.explain("nginx", True) == (
        "policy NeverVerifyPreloadedImages: the image was pulled by the kubelet, "
        "so credentials must be verified"
    )
    assert "not pulled by the kubelet" in enforcer.explain("nginx", False)


def test_explain_names_the_matching_pattern() -> None:
    enforcer = PolicyEnforcer(ALLOWLISTED, ["registry.example/payments/*"])
    assert enforcer.explain(POD_IMAGE, True) == (
        'policy NeverVerifyAllowlistedImages: "registry.example/payments/api" matches '
        'allowlist entry "registry.example/payments/*", so credentials need not be verified'
    )


def test_explain_unmatched_and_invalid_images() -> None:
    enforcer = PolicyEnforcer(ALLOWLISTED, ["registry.example/other/*"])
    assert '"registry.example/payments/api" matches no allowlist entry' in enforcer.explain(
        POD_IMAGE, False
    )
    text = enforcer.explain("BAD:image", False)
    assert "not a valid reference" in text
    assert "must be verified" in text
    assert "allowlist is empty" in PolicyEnforcer(ALLOWLISTED).explain("alpine", False)


# --- kubelet configuration validation --------------------------------------------------------

GATE_OFF_POLICY = (
    "invalid configuration: `imagePullCredentialsVerificationPolicy` must not be set if "
    "KubeletEnsureSecretPulledImages feature gate is not enabled"
)
GATE_OFF_ALLOWLIST = (
    "invalid configuration: `preloadedImagesVerificationAllowlist` must not be set if "
    "KubeletEnsureSecretPulledImages feature gate is not enabled"
)


@pytest.mark.parametrize(
    ("gate", "policy", "allowlist", "expected"),
    [
        pytest.param(False, None, None, None, id="gate-off-nothing-set"),
        pytest.param(False, "", [], None, id="gate-off-empty-values-count-as-unset"),
        pytest.param(True, None, None, PRELOADED, id="gate-on-default"),
        pytest.param(True, "", [], PRELOADED, id="gate-on-empty-policy-defaults"),
        pytest.param(True, "NeverVerify", None, NEVER, id="never"),
        pytest.param(True, "AlwaysVerify", [], ALWAYS, id="always"),
        pytest.param(True, "NeverVerifyPreloadedImages", None, PRELOADED, id="preloaded"),
        pytest.param(
            True,
            "NeverVerifyAllowlistedImages",
            ["mirror.local/*", "alpine"],
            ALLOWLISTED,
            id="allowlisted-with-list",
        ),
        pytest.param(
            True, "NeverVerifyAllowlistedImages", None, ALLOWLISTED, id="allowlisted-empty-list"
        ),
        pytest.param(True, ALWAYS, None, ALWAYS, id="enum-member-accepted"),
    ],
)
def test_validate_kubelet_config_accepts(
    gate: bool,
    policy: str | None,
    allowlist: list[str] | None,
    expected: VerificationPolicy | None,
) -> None:
    assert validate_kubelet_config(gate, policy, allowlist) is expected


@pytest.mark.parametrize(
    ("gate", "policy", "allowlist", "message"),
    [
        pytest.param(False, "AlwaysVerify", None, GATE_OFF_POLICY, id="gate-off-policy"),
        pytest.param(False, None, ["mirror.local/*"], GATE_OFF_ALLOWLIST, id="gate-off-list"),
        pytest.param(
            False,
            "NeverVerifyAllowlistedImages",
            ["mirror.local/*"],
            f"[{GATE_OFF_POLICY}, {GATE_OFF_ALLOWLIST}]",
            id="gate-off-both-aggregated",
        ),
        pytest.param(
            True,
            "SometimesVerify",
            None,
            "invalid configuration: `imagePullCredentialsVerificationPolicy` must be one of "
            "[NeverVerify, NeverVerifyPreloadedImages, NeverVerifyAllowlistedImages, "
            'AlwaysVerify], got "SometimesVerify"',
            id="unknown-policy",
        ),
        pytest.param(
            True,
            "AlwaysVerify",
            ["mirror.local/*"],
            "invalid configuration: `preloadedImagesVerificationAllowlist` must not be set "
            "unless `imagePullCredentialsVerificationPolicy` is NeverVerifyAllowlistedImages "
            "(it is AlwaysVerify)",
            id="list-with-other-policy",
        ),
        pytest.param(
            True,
            None,
            ["mirror.local/*"],
            "invalid configuration: `preloadedImagesVerificationAllowlist` must not be set "
            "unless `imagePullCredentialsVerificationPolicy` is NeverVerifyAllowlistedImages "
            "(it is NeverVerifyPreloadedImages)",
            id="list-with-defaulted-policy",
        ),
        pytest.param(
            True,
            "NeverVerifyAllowlistedImages",
            ["mirror.local/*", "mirror.local/base*"],
            "invalid configuration: `preloadedImagesVerificationAllowlist` is invalid: "
            "not a valid wildcard pattern, only patterns ending with '/*' are allowed: "
            "mirror.local/base*",
            id="bad-pattern",
        ),
    ],
)
def test_validate_kubelet_config_rejects(
    gate: bool, policy: str | None, allowlist: list[str] | None, message: str
) -> None:
    with pytest.raises(ConfigError) as info:
        validate_kubelet_config(gate, policy, allowlist)
    assert str(info.value) == message


def test_validate_kubelet_config_names_both_fields_when_both_wrong() -> None:
    with pytest.raises(ConfigError) as info:
        validate_kubelet_config(True, "Bogus", ["/*"])
    text = str(info.value)
    assert text.startswith("[") and text.endswith("]")
    assert "imagePullCredentialsVerificationPolicy" in text
    assert "preloadedImagesVerificationAllowlist` is invalid: at least registry hostname" in text


# --- property tests --------------------------------------------------------------------------

_COMPONENT = st.from_regex(r"[a-z0-9]{1,6}([._-][a-z0-9]{1,6}){0,2}", fullmatch=True)
_REGISTRY = st.sampled_from(["", "reg.example/", "localhost:5000/", "mirror.local/"])


@st.composite
def repositories(draw: st.DrawFn) -> str:
    """A repository name without tag or digest, familiar or qualified."""
    registry = draw(_REGISTRY)
    parts = draw(st.lists(_COMPONENT, min_size=1, max_size=3))
    if not registry and len(parts) > 1:
        parts[0] = parts[0].replace(".", "-")  # keep it from reading as a registry
    return registry + "/".join(parts)


_SUFFIXES = st.sampled_from(["", ":v1", ":latest", f"@{DIGEST}", f":1.0@{DIGEST}"])


@given(repositories(), _SUFFIXES, st.booleans())
def test_property_a_listed_repository_is_allowlisted_whatever_its_tag(
    repo: str, suffix: str, pulled: bool
) -> None:
    enforcer = PolicyEnforcer(ALLOWLISTED, [repo])
    assert enforcer.require_credential_verification(repo + suffix, pulled) is False


_PATHS = st.lists(_COMPONENT, min_size=1, max_size=3).map("/".join)


@given(repositories(), _PATHS, _SUFFIXES)
def test_property_wildcard_covers_everything_below_it(base: str, below: str, suffix: str) -> None:
    allowlist = validate_allowlist([base + "/*"])
    image = f"{base}/{below}{suffix}"
    assert allowlist.matches(image)
    assert allowlist.matching_pattern(image) == base + "/*"


@given(st.lists(repositories(), max_size=5), repositories(), _SUFFIXES, st.booleans())
def test_property_policies_relate_as_documented(
    patterns: list[str], repo: str, suffix: str, pulled: bool
) -> None:
    image = repo + suffix
    allowlisted = PolicyEnforcer(ALLOWLISTED, patterns)
    decision = allowlisted.require_credential_verification(image, pulled)
    assert decision is not allowlisted.allowlist.matches(image)
    assert decision is allowlisted.require_credential_verification(image, not pulled)
    assert decision is (repo not in patterns)  # only exact names here, so only an exact hit
    assert PolicyEnforcer(PRELOADED).require_credential_verification(image, pulled) is pulled
    assert PolicyEnforcer(NEVER).require_credential_verification(image, pulled) is False
    assert PolicyEnforcer(ALWAYS).require_credential_verification(image, pulled) is True


@given(repositories(), repositories())
def test_property_exact_entries_do_not_cover_other_names(listed: str, asked: str) -> None:
    allowlist = validate_allowlist([listed])
    assert allowlist.matches(asked + ":tag") is (asked == listed)


def test_check_kubelet_config_lists_every_problem_in_the_kubelet_order() -> None:
    effective, problems = check_kubelet_config(True, "Bogus", ["/*"])
    assert effective is None
    assert len(problems) == 2
    assert problems[0].startswith("invalid configuration: `imagePullCredentialsVerificationPolicy`")
    assert "at least registry hostname" in problems[1]
    with pytest.raises(ConfigError) as info:
        validate_kubelet_config(True, "Bogus", ["/*"])
    assert info.value.problems == tuple(problems)
    assert str(info.value) == "[" + ", ".join(problems) + "]"


@pytest.mark.parametrize(
    ("gate", "policy", "allowlist", "expected"),
    [
        (False, None, None, None),
        (True, None, None, VerificationPolicy.NEVER_VERIFY_PRELOADED_IMAGES),
        (
            True,
            "NeverVerifyAllowlistedImages",
            ["a.io/*"],
            VerificationPolicy.NEVER_VERIFY_ALLOWLISTED_IMAGES,
        ),
    ],
)
def test_check_kubelet_config_without_problems(
    gate: bool, policy: str | None, allowlist: list[str] | None, expected: VerificationPolicy | None
) -> None:
    assert check_kubelet_config(gate, policy, allowlist) == (expected, [])


def test_check_kubelet_config_with_the_gate_off_names_each_set_field() -> None:
    effective, problems = check_kubelet_config(False, "AlwaysVerify", ["a.io/*"])
    assert effective is None
    assert [p.split("`")[1] for p in problems] == [
        "imagePullCredentialsVerificationPolicy",
        "preloadedImagesVerificationAllowlist",
    ]
