"""Tests for pullwarden.reference: the reference grammar and the kubelet's name helpers."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from pullwarden.errors import InvalidReferenceError, PullwardenError
from pullwarden.records._cache import DEFAULT_RECORDS_SIZE
from pullwarden.reference import (
    Reference,
    apply_default_tag,
    default_pull_policy,
    familiar_name,
    parse,
    parse_image_name,
    parse_normalized,
    trim_tag_digest,
    trim_tag_digest_legacy,
)

EMPTY_SHA = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
SHA_A = "sha256:38a8906435c4dd5f4258899d46621bfd8eea3ad6ff494ee3c2f17ef0321625bd"
HEX_A = SHA_A.removeprefix("sha256:")


# --- Reference value object ------------------------------------------------------------------


def test_reference_name_and_str_with_every_part() -> None:
    ref = Reference(domain="reg.example:5000", path="team/app", tag="v1", digest=EMPTY_SHA)
    assert ref.name == "reg.example:5000/team/app"
    assert str(ref) == f"reg.example:5000/team/app:v1@{EMPTY_SHA}"


def test_reference_without_domain_tag_or_digest_is_just_the_path() -> None:
    ref = Reference(domain="", path="busybox", tag="", digest="")
    assert ref.name == "busybox"
    assert str(ref) == "busybox"


def test_reference_with_digest_only() -> None:
    assert str(Reference(domain="", path="busybox", digest=EMPTY_SHA)) == f"busybox@{EMPTY_SHA}"


def test_reference_is_frozen_and_slotted() -> None:
    ref = parse("busybox:1")
    with pytest.raises(dataclasses.FrozenInstanceError):
        ref.tag = "2"  # type: ignore[misc]
    assert not hasattr(ref, "__dict__")


# --- non-normalising parse -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "domain", "path", "tag", "digest"),
    [
        pytest.param("nginx", "", "nginx", "", "", id="familiar"),
        pytest.param("nginx:1.25", "", "nginx", "1.25", "", id="familiar-tag"),
        pytest.param("user/repo", "", "user/repo", "", "", id="org-is-not-a-domain"),
        pytest.param("user/repo:tag", "", "user/repo", "tag", "", id="org-with-tag"),
        pytest.param("a-b/c", "", "a-b/c", "", "", id="dash-org-not-a-domain"),
        pytest.param("quay.io/org/app", "quay.io", "org/app", "", "", id="dotted-domain"),
        pytest.param("localhost/app", "localhost", "app", "", "", id="localhost"),
        pytest.param("localhost:5000/x", "localhost:5000", "x", "", "", id="localhost-port"),
        pytest.param(
            "myregistry:5000/org/img:v1", "myregistry:5000", "org/img", "v1", "", id="port"
        ),
        pytest.param("Registry/app", "Registry", "app", "", "", id="uppercase-first-is-domain"),
        pytest.param("[::1]:5000/app:x", "[::1]:5000", "app", "x", "", id="ipv6"),
        pytest.param(
            "docker.io/library/nginx", "docker.io", "library/nginx", "", "", id="fully-qualified"
        ),
        pytest.param(
            f"reg.io/app:v2@{EMPTY_SHA}", "reg.io", "app", "v2", EMPTY_SHA, id="tag-and-digest"
        ),
        pytest.param(f"app@{EMPTY_SHA}", "", "app", "", EMPTY_SHA, id="digest-only"),
        pytest.param("a_b.c/d", "", "a_b.c/d", "", "", id="dotted-but-not-a-host"),
        pytest.param("localhost:5000", "", "localhost", "5000", "", id="no-slash-port-is-a-tag"),
        pytest.param("a" * 64, "", "a" * 64, "", "", id="hex-id-allowed-unnormalised"),
    ],
)
def test_parse_keeps_the_name_as_written(
    text: str, domain: str, path: str, tag: str, digest: str
) -> None:
    ref = parse(text)
    assert (ref.domain, ref.path, ref.tag, ref.digest) == (domain, path, tag, digest)
    assert str(ref) == text


@pytest.mark.parametrize(
    "name",
    [
        "a.b_c__d-e--f/x",
        "a0/b1/c2/d3",
        "x" * 10 + "/" + "y-z",
    ],
)
def test_parse_accepts_every_separator_kind(name: str) -> None:
    assert parse(name).name == name


# --- normalising parse -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("nginx", "docker.io/library/nginx", id="official"),
        pytest.param("nginx:1.2", "docker.io/library/nginx:1.2", id="official-tag"),
        pytest.param("user/repo", "docker.io/user/repo", id="user"),
        pytest.param("docker.io/nginx", "docker.io/library/nginx", id="hub-single"),
        pytest.param("index.docker.io/nginx", "docker.io/library/nginx", id="legacy-hub"),
        pytest.param("index.docker.io/u/r:t", "docker.io/u/r:t", id="legacy-hub-user"),
        pytest.param("docker.io/library/nginx", "docker.io/library/nginx", id="already"),
        pytest.param("localhost/app", "localhost/app", id="localhost"),
        pytest.param("localhost:5000/app", "localhost:5000/app", id="localhost-port"),
        pytest.param("url:5000/repo", "url:5000/repo", id="host-port"),
        pytest.param("quay.io/a/b/c", "quay.io/a/b/c", id="deep"),
        pytest.param("localhost:5000", "docker.io/library/localhost:5000", id="no-slash"),
        pytest.param(f"busybox@{EMPTY_SHA}", f"docker.io/library/busybox@{EMPTY_SHA}", id="dig"),
    ],
)
def test_parse_normalized(text: str, expected: str) -> None:
    assert str(parse_normalized(text)) == expected


def test_parse_normalized_splits_domain_and_path() -> None:
    ref = parse_normalized("user/repo:tag")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("docker.io", "user/repo", "tag", "")


# --- §1.2(a) ParseImageName --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param("root", ("docker.io/library/root", "latest", ""), id="bare"),
        pytest.param("root:tag", ("docker.io/library/root", "tag", ""), id="tag"),
        pytest.param("user/repo:tag", ("docker.io/user/repo", "tag", ""), id="user-repo-tag"),
        pytest.param(f"url:5000/repo@{EMPTY_SHA}", ("url:5000/repo", "", EMPTY_SHA), id="digest"),
        pytest.param("url:5000/repo", ("url:5000/repo", "latest", ""), id="port-default-tag"),
        pytest.param(
            f"root:v1@{EMPTY_SHA}", ("docker.io/library/root", "v1", EMPTY_SHA), id="both"
        ),
    ],
)
def test_parse_image_name(image: str, expected: tuple[str, str, str]) -> None:
    assert parse_image_name(image) == expected


def test_parse_image_name_wraps_errors_with_the_quoted_image() -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_image_name("http://foo")
    assert str(info.value) == 'couldn\'t parse image name "http://foo": invalid reference format'


def test_parse_image_name_quotes_like_go() -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_image_name('a"b\n')
    assert str(info.value).startswith('couldn\'t parse image name "a\\"b\\n": ')


# --- §1.2(b) applyDefaultImageTag --------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param("root", "root:latest", id="bare-gets-latest"),
        pytest.param("root:tag", "root:tag", id="tagged-unchanged"),
        pytest.param(f"root@{EMPTY_SHA}", f"root@{EMPTY_SHA}", id="digest-unchanged"),
        pytest.param(
            f"root:latest@{EMPTY_SHA}", f"root:latest@{EMPTY_SHA}", id="tag-and-digest-unchanged"
        ),
        pytest.param("root:latest", "root:latest", id="latest-unchanged"),
        pytest.param("user/app", "user/app:latest", id="raw-string-not-normalised"),
        pytest.param("localhost:5000/app", "localhost:5000/app:latest", id="port-not-a-tag"),
    ],
)
def test_apply_default_tag(image: str, expected: str) -> None:
    assert apply_default_tag(image) == expected


def test_apply_default_tag_rejects_invalid_names() -> None:
    with pytest.raises(InvalidReferenceError, match="must be lowercase"):
        apply_default_tag("FAILED_IMAGE")


# --- §1.1 default pull policy ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "policy"),
    [
        pytest.param("nginx", "Always", id="no-tag"),
        pytest.param("nginx:latest", "Always", id="latest"),
        pytest.param("nginx:1.2", "IfNotPresent", id="versioned"),
        pytest.param(f"nginx@{EMPTY_SHA}", "IfNotPresent", id="digest"),
        pytest.param(f"nginx:latest@{EMPTY_SHA}", "Always", id="explicit-latest-with-digest"),
        pytest.param("reg.io:5000/app", "Always", id="port-is-not-a-tag"),
        pytest.param("FAILED_IMAGE", "IfNotPresent", id="unparsable-ignored"),
        pytest.param("", "IfNotPresent", id="empty"),
    ],
)
def test_default_pull_policy(image: str, policy: str) -> None:
    assert default_pull_policy(image) == policy


# --- §1.2(c) trimImageTagDigest (v1.36+) -------------------------------------------------------

TRIM_CASES = [
    pytest.param("myimage", "myimage", id="familiar"),
    pytest.param("myimage:latest", "myimage", id="familiar+tag"),
    pytest.param(f"myimage@{SHA_A}", "myimage", id="familiar+digest"),
    pytest.param(f"myimage:v1@{SHA_A}", "myimage", id="familiar+tag+digest"),
    pytest.param("registry.io/myimage", "registry.io/myimage", id="one-segment"),
    pytest.param("registry.io/myimage:v1.0", "registry.io/myimage", id="one-segment+tag"),
    pytest.param(f"registry.io/myimage@{SHA_A}", "registry.io/myimage", id="one-segment+digest"),
    pytest.param(
        f"registry.io/myimage:latest@{SHA_A}", "registry.io/myimage", id="one-segment+both"
    ),
    pytest.param("registry.io/myorg/myimage", "registry.io/myorg/myimage", id="two-segments"),
    pytest.param(
        "registry.io/myorg/myimage:v2", "registry.io/myorg/myimage", id="two-segments+tag"
    ),
    pytest.param(
        f"registry.io/myorg/myimage@{SHA_A}",
        "registry.io/myorg/myimage",
        id="two-segments+digest",
    ),
    pytest.param(
        f"registry.io/myorg/myimage:v2@{SHA_A}",
        "registry.io/myorg/myimage",
        id="two-segments+both",
    ),
    pytest.param("registry.io/a/b/c/myimage:latest", "registry.io/a/b/c/myimage", id="deep+tag"),
    pytest.param("registry.io/myorg/", None, id="error-trailing-slash"),
    pytest.param("registry.io/myorg/:tag", None, id="error-empty-last-segment+tag"),
    pytest.param(f"registry.io/myorg/@{SHA_A}", None, id="error-empty-last-segment+digest"),
    pytest.param("localhost:5000/myimage:v1", "localhost:5000/myimage", id="port+tag"),
    pytest.param(
        "myregistry:5000/myorg/myimage:v1", "myregistry:5000/myorg/myimage", id="port+org+tag"
    ),
    pytest.param("docker.io/taghere/image:taghere", "docker.io/taghere/image", id="tag-repeated"),
    pytest.param(
        f"registry.io/{HEX_A}/myorg/image@{SHA_A}",
        f"registry.io/{HEX_A}/myorg/image",
        id="digest-hex-repeated",
    ),
]


@pytest.mark.parametrize(("image", "expected"), TRIM_CASES)
def test_trim_tag_digest(image: str, expected: str | None) -> None:
    if expected is None:
        with pytest.raises(InvalidReferenceError):
            trim_tag_digest(image)
    else:
        assert trim_tag_digest(image) == expected


def test_trim_table_has_all_upstream_cases() -> None:
    assert len(TRIM_CASES) == 20


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param("testing@" + SHA_A, "testing", id="record-key-familiar-digest"),
        pytest.param("secretorg/myimage:customtag", "secretorg/myimage", id="record-key-org"),
        pytest.param("nginx:1.2", "nginx", id="no-docker-io-added"),
        pytest.param("index.docker.io/nginx:1", "index.docker.io/nginx", id="no-legacy-rewrite"),
    ],
)
def test_trim_tag_digest_does_not_normalise(image: str, expected: str) -> None:
    assert trim_tag_digest(image) == expected


def test_trim_tag_digest_is_cached() -> None:
    trim_tag_digest.cache_clear()
    trim_tag_digest("cached.example/app:v1")
    trim_tag_digest("cached.example/app:v1")
    info = trim_tag_digest.cache_info()
    # As many names as the record cache holds records: checking each of them in turn hits.
    assert info.maxsize is not None and info.maxsize >= DEFAULT_RECORDS_SIZE
    assert (info.hits, info.misses) == (1, 1)


def test_trim_tag_digest_errors_are_not_cached() -> None:
    trim_tag_digest.cache_clear()
    for _ in range(2):
        with pytest.raises(InvalidReferenceError):
            trim_tag_digest("Not/Valid")
    assert trim_tag_digest.cache_info().currsize == 0


# --- ≤ v1.35 trim ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        pytest.param("nginx:1.2", "docker.io/library/nginx", id="familiar"),
        pytest.param("repo.repo/test/test:v1", "repo.repo/test/test", id="qualified"),
        pytest.param("user/repo:tag", "docker.io/user/repo", id="user"),
        pytest.param("index.docker.io/busybox", "docker.io/library/busybox", id="legacy-hub"),
        pytest.param(f"testing@{SHA_A}", "docker.io/library/testing", id="digest"),
        pytest.param("localhost:5000/x:y", "localhost:5000/x", id="port"),
    ],
)
def test_trim_tag_digest_legacy(image: str, expected: str) -> None:
    assert trim_tag_digest_legacy(image) == expected


def test_trim_tag_digest_legacy_errors() -> None:
    with pytest.raises(InvalidReferenceError, match="couldn't parse image name"):
        trim_tag_digest_legacy("registry.io/myorg/")


# --- invalid references and exact messages ---------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param("", "repository name must have at least one component", id="empty"),
        pytest.param("FAILED_IMAGE", "repository name must be lowercase", id="uppercase"),
        pytest.param("reg.io/Team/app", "repository name must be lowercase", id="upper-path"),
        pytest.param("http://foo", "invalid reference format", id="url"),
        pytest.param("https://reg.io/app", "invalid reference format", id="https-url"),
        pytest.param("a/", "invalid reference format", id="trailing-slash"),
        pytest.param("/a", "invalid reference format", id="leading-slash"),
        pytest.param("a//b", "invalid reference format", id="empty-component"),
        pytest.param("-a", "invalid reference format", id="leading-dash"),
        pytest.param("a-", "invalid reference format", id="trailing-dash"),
        pytest.param("a...b", "invalid reference format", id="triple-dot"),
        pytest.param("a___b", "invalid reference format", id="triple-underscore"),
        pytest.param("a:", "invalid reference format", id="empty-tag"),
        pytest.param("a:-x", "invalid reference format", id="tag-leading-dash"),
        pytest.param("a:" + "t" * 129, "invalid reference format", id="tag-too-long"),
        pytest.param("a@", "invalid reference format", id="empty-digest"),
        pytest.param("a@sha256:abc", "invalid reference format", id="digest-too-short-for-grammar"),
        pytest.param("a b", "invalid reference format", id="space"),
        pytest.param("a\n", "invalid reference format", id="trailing-newline"),
        pytest.param("ünïcode", "invalid reference format", id="non-ascii"),
        pytest.param(
            "a@sha256:" + "0" * 32, "invalid checksum digest length", id="sha256-short-hex"
        ),
        pytest.param(
            "a@sha512:" + "0" * 64, "invalid checksum digest length", id="sha512-wrong-length"
        ),
        pytest.param("a@sha256:" + "A" * 64, "invalid checksum digest format", id="uppercase-hex"),
        pytest.param("a@md5:" + "0" * 32, "unsupported digest algorithm", id="md5"),
        pytest.param(
            "a@SHA256:" + "0" * 64, "invalid checksum digest format", id="uppercase-algorithm"
        ),
        pytest.param(
            "a" * 256, "repository name must not be more than 255 characters", id="name-too-long"
        ),
    ],
)
def test_parse_rejects_with_upstream_message(text: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse(text)
    assert str(info.value) == message


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            "FAILED_IMAGE",
            "invalid reference format: repository name (library/FAILED_IMAGE) must be lowercase",
            id="uppercase-official",
        ),
        pytest.param(
            "reg.io/Team/app:V1",
            "invalid reference format: repository name (Team/app) must be lowercase",
            id="uppercase-path-tag-not-included",
        ),
        pytest.param(
            "f" * 64,
            f"invalid repository name ({'f' * 64}), cannot specify 64-byte hexadecimal strings",
            id="hex-id",
        ),
        pytest.param("", "invalid reference format", id="empty"),
        pytest.param("http://foo", "invalid reference format", id="url"),
        pytest.param(
            "a" * 248,  # the path becomes library/ + 248 = 256 characters
            "repository name must not be more than 255 characters",
            id="too-long-after-normalising",
        ),
    ],
)
def test_parse_normalized_rejects_with_upstream_message(text: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_normalized(text)
    assert str(info.value) == message


def test_invalid_reference_error_is_in_the_tree() -> None:
    with pytest.raises(PullwardenError):
        parse("BAD")
    with pytest.raises(ValueError):
        parse("BAD")


# distribution/reference v0.6.0 (the kubelet's since v1.33) limits the path, not the whole name.
TOO_LONG = "repository name must not be more than 255 characters"
LONG_BUT_VALID = "registry.example.com/" + "a" * 250 + ":v1"  # a name of 271 characters
PATH_TOO_LONG = "registry.example.com/" + "a" * 256


@pytest.mark.parametrize(
    "entry_point",
    [parse, parse_normalized, trim_tag_digest, apply_default_tag, parse_image_name],
    ids=lambda f: f.__name__,
)
def test_name_limit_counts_the_path_only(entry_point: Callable[[str], object]) -> None:
    entry_point(LONG_BUT_VALID)
    entry_point("registry.example.com/" + "a" * 255)
    with pytest.raises(InvalidReferenceError) as info:
        entry_point(PATH_TOO_LONG)
    assert str(info.value).endswith(TOO_LONG)


def test_name_limit_results() -> None:
    assert parse(LONG_BUT_VALID).path == "a" * 250
    assert parse_normalized(LONG_BUT_VALID).path == "a" * 250
    assert trim_tag_digest(LONG_BUT_VALID) == "registry.example.com/" + "a" * 250
    assert apply_default_tag(LONG_BUT_VALID) == LONG_BUT_VALID
    assert parse_image_name(PATH_TOO_LONG.removesuffix("a")) == (
        "registry.example.com/" + "a" * 255,
        "latest",
        "",
    )
    with pytest.raises(InvalidReferenceError) as info:
        parse_image_name(PATH_TOO_LONG)
    assert str(info.value) == f'couldn\'t parse image name "{PATH_TOO_LONG}": {TOO_LONG}'


def test_name_limit_without_a_domain() -> None:
    assert parse("a" * 255).path == "a" * 255
    with pytest.raises(InvalidReferenceError, match=TOO_LONG):
        parse("a" * 256)
    # Normalising adds docker.io/library/ (the domain does not count, library/ does).
    assert parse_normalized("a" * 247).path == "library/" + "a" * 247
    with pytest.raises(InvalidReferenceError, match=TOO_LONG):
        parse_normalized("a" * 248)


def test_name_limit_splits_the_domain_as_the_grammar_does() -> None:
    # The grammar takes any host-like first component as the domain, dots or not.
    name = "foo/" + "a" * 252  # 256 characters, but the path is 252
    assert parse(name).name == name
    assert trim_tag_digest(name + ":v1") == name
    # Normalised, foo is a namespace on docker.io: the path is foo/ + 252 = 256 characters.
    with pytest.raises(InvalidReferenceError, match=TOO_LONG):
        parse_normalized(name)
    with pytest.raises(InvalidReferenceError, match=TOO_LONG):
        apply_default_tag(name)


def test_too_long_is_checked_before_the_digest() -> None:
    with pytest.raises(InvalidReferenceError, match=TOO_LONG):
        parse(PATH_TOO_LONG + "@md5:" + "0" * 32)


# --- uppercase, decided with Go's strings.ToLower ----------------------------------------------

CAPITAL_I_WITH_DOT = "\u0130"  # İ: Go lowers it to "i", Python to "i" + U+0307


def test_only_capital_i_with_dot_lowers_to_more_than_one_code_point() -> None:
    # Python's str.lower applies full case mapping, Go's strings.ToLower the simple one; the
    # only code point where that changes the length (and so whether ASCII comes out) is U+0130.
    longer = [c for c in range(0x110000) if len(chr(c).lower()) != 1]
    assert longer == [0x130]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(CAPITAL_I_WITH_DOT + "mg", "repository name must be lowercase", id="İmg"),
        pytest.param(
            f"registry.example/{CAPITAL_I_WITH_DOT}mg:v1",
            "repository name must be lowercase",
            id="registry.example/İmg:v1",
        ),
        pytest.param(
            f"{CAPITAL_I_WITH_DOT}mg/app", "repository name must be lowercase", id="İmg/app"
        ),
        pytest.param("Img", "repository name must be lowercase", id="Img"),
        pytest.param("\u212aelvin", "repository name must be lowercase", id="kelvin-sign"),
        pytest.param("reg.io/Team/app", "repository name must be lowercase", id="Team"),
        pytest.param("\u03a3\u03a3", "invalid reference format", id="sigma"),
        pytest.param("ünïcode", "invalid reference format", id="non-ascii-lowercase"),
        pytest.param(f"http://{CAPITAL_I_WITH_DOT}", "invalid reference format", id="url"),
    ],
)
def test_uppercase_is_judged_as_go_does(text: str, message: str) -> None:
    for entry_point in (parse, trim_tag_digest):
        with pytest.raises(InvalidReferenceError) as info:
            entry_point(text)
        assert str(info.value) == message, entry_point


@pytest.mark.parametrize(
    ("text", "message"),
    [
        pytest.param(
            CAPITAL_I_WITH_DOT + "mg",
            f"invalid reference format: repository name (library/{CAPITAL_I_WITH_DOT}mg) must "
            "be lowercase",
            id="İmg",
        ),
        pytest.param(
            f"registry.example/{CAPITAL_I_WITH_DOT}mg:v1",
            f"invalid reference format: repository name ({CAPITAL_I_WITH_DOT}mg) must be lowercase",
            id="registry.example/İmg:v1",
        ),
        # İmg looks like a registry (it changes when lowered), but is not a valid host.
        pytest.param(
            f"{CAPITAL_I_WITH_DOT}mg/app", "repository name must be lowercase", id="İmg/app"
        ),
    ],
)
def test_uppercase_when_normalising(text: str, message: str) -> None:
    with pytest.raises(InvalidReferenceError) as info:
        parse_normalized(text)
    assert str(info.value) == message
    with pytest.raises(InvalidReferenceError) as info:
        apply_default_tag(text)
    assert str(info.value) == f'couldn\'t parse image name "{text}": {message}'


def test_tag_length_boundary() -> None:
    assert parse("a:" + "t" * 128).tag == "t" * 128


@pytest.mark.parametrize(
    "digest",
    [
        EMPTY_SHA,
        "sha384:" + "1" * 96,
        "sha512:" + "2" * 128,
    ],
)
def test_supported_digests(digest: str) -> None:
    assert parse(f"app@{digest}").digest == digest


def test_hex_path_component_is_fine_when_normalised() -> None:
    ref = parse_normalized(f"reg.io/{HEX_A}")
    assert ref.path == HEX_A


# --- familiar names --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("docker.io/library/nginx", "nginx", id="official"),
        pytest.param("docker.io/library/nginx:1.2", "nginx", id="official-tag-dropped"),
        pytest.param("nginx", "nginx", id="already-familiar"),
        pytest.param("docker.io/user/repo", "user/repo", id="user"),
        pytest.param("index.docker.io/user/repo", "user/repo", id="legacy-hub"),
        pytest.param("docker.io/library/a/b", "library/a/b", id="nested-library-kept"),
        pytest.param("quay.io/org/app", "quay.io/org/app", id="other-registry"),
        pytest.param("localhost:5000/app", "localhost:5000/app", id="local"),
    ],
)
def test_familiar_name(text: str, expected: str) -> None:
    assert familiar_name(text) == expected


def test_familiar_name_rejects_invalid() -> None:
    with pytest.raises(InvalidReferenceError):
        familiar_name("docker.io/library/")


# --- property tests --------------------------------------------------------------------------

_SEPARATORS = st.sampled_from([".", "_", "__", "-", "--", "---"])
_ALNUM = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=6)


@st.composite
def path_components(draw: st.DrawFn) -> str:
    """One path component: alphanumeric runs joined by separators."""
    runs = draw(st.lists(_ALNUM, min_size=1, max_size=3))
    out = runs[0]
    for run in runs[1:]:
        out += draw(_SEPARATORS) + run
    return out


_LABEL = st.from_regex(r"[a-zA-Z0-9]([a-zA-Z0-9-]{0,6}[a-zA-Z0-9])?", fullmatch=True)
_PORT = st.integers(min_value=1, max_value=65535).map(str)


@st.composite
def domains(draw: st.DrawFn) -> str:
    """A registry domain that Docker's rule recognises as one."""
    kind = draw(st.sampled_from(["dotted", "port", "localhost", "ipv6", "upper"]))
    if kind == "dotted":
        host = ".".join(draw(st.lists(_LABEL, min_size=2, max_size=4)))
        port = draw(st.one_of(st.just(""), _PORT.map(lambda p: ":" + p)))
        return host + port
    if kind == "port":
        return draw(_LABEL) + ":" + draw(_PORT)
    if kind == "localhost":
        return "localhost" + draw(st.one_of(st.just(""), _PORT.map(lambda p: ":" + p)))
    if kind == "ipv6":
        return draw(st.sampled_from(["[::1]", "[fe80::1]", "[2001:DB8::5]"])) + ":" + draw(_PORT)
    label = draw(_LABEL)
    assume(label.lower() != label)
    return label


_TAGS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)
_DIGESTS = st.one_of(
    st.from_regex(r"[a-f0-9]{64}", fullmatch=True).map(lambda h: "sha256:" + h),
    st.from_regex(r"[a-f0-9]{128}", fullmatch=True).map(lambda h: "sha512:" + h),
)


@st.composite
def references(draw: st.DrawFn) -> Reference:
    """A valid reference built from the grammar, as the expected parse result."""
    domain = draw(st.one_of(st.just(""), domains()))
    components = draw(st.lists(path_components(), min_size=1, max_size=4))
    if not domain and len(components) > 1:
        # Without a registry the first element must not look like one, or it would become it.
        assume("." not in components[0])
    path = "/".join(components)
    tag = draw(st.one_of(st.just(""), _TAGS))
    digest = draw(st.one_of(st.just(""), _DIGESTS))
    ref = Reference(domain=domain, path=path, tag=tag, digest=digest)
    assume(len(ref.name) <= 200)
    return ref


@given(references())
def test_property_parse_round_trips(expected: Reference) -> None:
    text = str(expected)
    parsed = parse(text)
    assert parsed == expected
    assert str(parsed) == text


@given(references())
def test_property_normalisation_is_idempotent(ref: Reference) -> None:
    once = parse_normalized(str(ref))
    assert parse_normalized(str(once)) == once
    assert once.tag == ref.tag
    assert once.digest == ref.digest


@given(references())
def test_property_normalisation_only_adds_prefixes(ref: Reference) -> None:
    normalised = parse_normalized(str(ref)).name
    assert normalised.endswith(ref.path)
    if ref.domain and ref.domain != "index.docker.io":
        assert normalised.startswith(ref.domain + "/")


@given(references())
def test_property_familiar_name_normalises_back(ref: Reference) -> None:
    full = parse_normalized(str(ref)).name
    assert parse_normalized(familiar_name(str(ref))).name == full


@given(references())
def test_property_trim_is_stable(ref: Reference) -> None:
    text = str(ref)
    trimmed = trim_tag_digest(text)
    assert trimmed == ref.name
    assert trim_tag_digest(trimmed) == trimmed


@given(references(), _TAGS, _DIGESTS)
def test_property_trim_ignores_tag_and_digest(ref: Reference, tag: str, digest: str) -> None:
    name = ref.name
    assert trim_tag_digest(f"{name}:{tag}") == trim_tag_digest(name)
    assert trim_tag_digest(f"{name}@{digest}") == trim_tag_digest(name)
    assert trim_tag_digest(f"{name}:{tag}@{digest}") == trim_tag_digest(name)


@given(references())
def test_property_legacy_trim_is_the_normalised_name(ref: Reference) -> None:
    assert trim_tag_digest_legacy(str(ref)) == parse_normalized(ref.name).name


@given(references())
def test_property_apply_default_tag_is_idempotent(ref: Reference) -> None:
    once = apply_default_tag(str(ref))
    assert apply_default_tag(once) == once
    assert parse_image_name(once) == parse_image_name(str(ref))


@given(st.text(max_size=40))
def test_property_arbitrary_text_parses_or_raises_invalid_reference(text: str) -> None:
    try:
        ref = parse(text)
    except InvalidReferenceError:
        return
    assert str(ref) == text
