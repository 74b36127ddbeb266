"""Keyring construction, URL matching, lookup order and pod credentials (spec §2.3, §2.5, §2.6)."""

from __future__ import annotations

import base64
import fnmatch
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pullwarden.credentials import (
    AuthEntry,
    DockerKeyring,
    SecretSource,
    ServiceAccountSource,
    TrackedCredential,
    UnionKeyring,
    credential_hash,
    is_docker_hub_image,
    keyring_from_secrets,
    pod_credentials,
    tracked_to_image_pull_credentials,
    url_matches,
)
from pullwarden.credentials._keyring import _compile_glob, _glob_match
from pullwarden.errors import DockerConfigError
from pullwarden.records._model import (
    ImagePullCredentials,
    ImagePullSecret,
    ImagePullServiceAccount,
)

SECRET_A = SecretSource("uid-a", "ns", "secret-a")
SECRET_B = SecretSource("uid-b", "ns", "secret-b")
SA = ServiceAccountSource("uid-sa", "ns", "builder")


def entry(username: str, password: str = "pw") -> AuthEntry:
    return AuthEntry(username, password)


def keyring_of(*locations: str, source: SecretSource | None = None) -> DockerKeyring:
    keyring = DockerKeyring()
    keyring.add({loc: entry(f"user@{loc}") for loc in locations}, source)
    return keyring


def users(creds: list[TrackedCredential]) -> list[str]:
    return [c.username for c in creds]


# --- index keys ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "key"),
    [
        ("https://index.docker.io/v1/", "index.docker.io"),
        ("index.docker.io/v1/", "index.docker.io"),
        ("quay.io/coreos", "quay.io/coreos"),
        ("myreg.io/org/", "myreg.io/org/"),  # trailing slash kept
        ("http://reg.io:5000/v2/foo", "reg.io:5000/foo"),
        ("https://reg.io/v2/", "reg.io"),
        ("reg.io/v1", "reg.io/v1"),  # only "/v1/" and "/v2/" prefixes are dropped
        ("reg.io/v3/", "reg.io/v3/"),
        ("reg.io/", "reg.io"),
        ("reg.io", "reg.io"),
        ("reg.io/a?x=1#frag", "reg.io/a"),  # query and fragment are not part of the key
        ("user:pw@reg.io/x", "reg.io/x"),  # userinfo is not part of the key
        ("reg.io/a%20b", "reg.io/a b"),  # the path is percent-decoded
        ("*.gcr.io", "*.gcr.io"),
        ("[::1]:5000/x", "[::1]:5000/x"),
        ("localhost:", "localhost:"),
        # the scheme test is case-sensitive: "https://" is prefixed, host "HTTPS:", path "//reg.io"
        ("HTTPS://reg.io", "HTTPS://reg.io"),
    ],
)
def test_index_key(location: str, key: str) -> None:
    assert keyring_of(location).keys == (key,)


@pytest.mark.parametrize(
    "location",
    [
        "reg.io:abc",  # port not numeric
        "reg io",  # space in host
        "reg{x}.io",
        "reg.io/%zz",  # bad escape in path
        "reg.io/a\x01",  # control character
        "reg%41.io",  # escaped ASCII in host
        "[not-an-ip]:5000",
        "[1.2.3.4]",  # only IPv6 goes in brackets
        "[::1",
        "us er@reg.io",  # bad userinfo
        "reg.io/#%zz",  # bad escape in fragment
    ],
)
def test_unparsable_locations_are_ignored(location: str, caplog: pytest.LogCaptureFixture) -> None:
    keyring = DockerKeyring()
    with caplog.at_level(logging.WARNING):
        keyring.add({location: entry("u"), "good.io": entry("g")})
    assert keyring.keys == ("good.io",)


def test_ignored_location_log_does_not_leak_userinfo(caplog: pytest.LogCaptureFixture) -> None:
    keyring = DockerKeyring()
    with caplog.at_level(logging.DEBUG):
        keyring.add({"user:hunter2@reg.io:bad": AuthEntry("u", "s3cret")})
    assert keyring.keys == ()
    assert caplog.records
    assert "hunter2" not in caplog.text
    assert "s3cret" not in caplog.text


def test_index_is_deduplicated_and_reverse_sorted() -> None:
    keyring = DockerKeyring()
    keyring.add({"quay.io": entry("q"), "https://index.docker.io/v1/": entry("d")})
    keyring.add({"quay.io/coreos": entry("c"), "quay.io": entry("q2")})
    keyring.add({"a.io": entry("a"), "index.docker.io": entry("d2")})
    assert keyring.keys == ("quay.io/coreos", "quay.io", "index.docker.io", "a.io")


def test_reverse_sort_is_bytewise() -> None:
    keyring = keyring_of("b.io", "B.io", "\u00e9.io", "b.io/x", "b.io:5000")
    assert keyring.keys == ("\u00e9.io", "b.io:5000", "b.io/x", "b.io", "B.io")


def test_credentials_accumulate_per_key_in_insertion_order() -> None:
    keyring = DockerKeyring()
    keyring.add({"https://index.docker.io/v1/": entry("first")}, SECRET_A)
    keyring.add({"index.docker.io": entry("second"), "quay.io": entry("q")}, SECRET_B)
    creds = keyring.lookup("docker.io/library/nginx")
    assert users(creds) == ["first", "second"]
    assert [c.source for c in creds] == [SECRET_A, SECRET_B]


def test_tracked_credential_carries_source_and_hash() -> None:
    keyring = DockerKeyring()
    keyring.add({"r.io": AuthEntry("user", "password", "e@x")}, SECRET_A)
    (cred,) = keyring.lookup("r.io/app")
    assert cred == TrackedCredential(
        "user", "password", "e@x", SECRET_A, credential_hash("user", "password", "e@x")
    )


def test_hashes_not_tracked_when_gate_off() -> None:
    keyring = DockerKeyring()
    keyring.add({"r.io": AuthEntry("user", "password")}, SECRET_A, track_hashes=False)
    assert keyring.lookup("r.io/app")[0].credential_hash == ""


# --- URL matching ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "image"),
    [
        # documented examples (Interpretation of config.json)
        ("*.kubernetes.io", "abc.kubernetes.io"),
        ("*.*.kubernetes.io", "abc.def.kubernetes.io"),
        ("prefix.*.io", "prefix.kubernetes.io"),
        ("*-good.kubernetes.io", "prefix-good.kubernetes.io"),
        ("my-registry.example/images", "my-registry.example/images/my-image"),
        # more
        ("quay.io", "quay.io/coreos/etcd"),
        ("quay.io/coreos", "quay.io/coreos/etcd"),
        ("r.io/foo", "r.io/foobar"),  # plain string prefix, not segment-aware
        ("reg.io:5000", "reg.io:5000/app"),
        ("*.io:5000", "reg.io:5000/app"),
        ("docker.io", "docker.io/library/nginx"),
        ("r[a-c]g.io", "rbg.io/x"),
        ("r[!a]g.io", "r!g.io/x"),  # "!" does not negate in Go globs
        ("r*g.io", "rg.io/x"),
        ("*", "localhost/x"),
        ("[::1]:5000", "[::1]:5000/x"),
        ("localhost:", "localhost/x"),  # "host:" splits into host and an empty port
    ],
)
def test_matches(key: str, image: str) -> None:
    assert url_matches(key, image)


@pytest.mark.parametrize(
    ("key", "image"),
    [
        ("*.kubernetes.io", "kubernetes.io"),
        ("*.*.kubernetes.io", "abc.kubernetes.io"),
        ("my-registry.example/images", "my-registry.example/other/my-image"),
        ("quay.io/coreos", "quay.io/other"),
        ("quay.io/coreos/", "quay.io/coreos"),
        ("reg.io", "reg.io:5000/app"),  # ports must be identical
        ("reg.io:5000", "reg.io/app"),
        ("reg.io:5000", "reg.io:5001/app"),
        ("Quay.io", "quay.io/x"),  # case-sensitive
        ("quay.io", "QUAY.io/x"),
        ("r[!a]g.io", "rbg.io/x"),
        ("r[a-c]g.io", "rdg.io/x"),
        # "?" in a key starts the URL query, a leading "[" makes an IPv6 literal and "^" is not
        # allowed in a host, so none of them works as a glob in a host (Go behaves the same)
        ("r[^a-c]g.io", "rdg.io/x"),
        ("re?.io", "reg.io/x"),
        ("[a-c]eg.io", "beg.io/x"),
        ("a[b.io", "a[b.io/x"),  # malformed glob never matches, even itself
        ("index.docker.io", "docker.io/library/nginx"),  # label count differs
        ("reg.io:abc", "reg.io:abc/x"),  # unparsable
        ("reg.io", "reg io/x"),
    ],
)
def test_does_not_match(key: str, image: str) -> None:
    assert not url_matches(key, image)


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("\\*", "*", True),
        ("\\*", "a", False),
        ("a\\", "a", None),  # trailing backslash: malformed
        ("[]a]", "a", None),
        ("[a-]", "a", None),
        ("[-a]", "a", None),
        ("[^]", "a", None),
        ("[a", "a", None),
        ("[\\]]", "]", True),
        ("[*]", "*", True),
        ("[*]", "a", False),
        ("[a-cx-z]", "y", True),
        ("[c-a]", "b", False),  # a reversed range is allowed but matches nothing
        ("*", "", True),
        ("a*b*c", "aXbYc", True),
        ("a*b*c", "aXbY", False),
        ("*?", "", False),
        ("?", "\u00e9", True),
        ("*", "a/b", False),  # wildcards do not cross a separator
        ("?", "/", False),
        ("[/]", "/", True),
    ],
)
def test_glob_semantics(pattern: str, name: str, expected: bool | None) -> None:
    tokens = _compile_glob(pattern)
    if expected is None:
        assert tokens is None
    else:
        assert tokens is not None
        assert _glob_match(tokens, name) is expected


@given(
    pattern=st.text(alphabet="ab*?", max_size=8),
    name=st.text(alphabet="ab", max_size=8),
)
def test_glob_agrees_with_fnmatch_on_simple_patterns(pattern: str, name: str) -> None:
    tokens = _compile_glob(pattern)
    assert tokens is not None
    assert _glob_match(tokens, name) is fnmatch.fnmatchcase(name, pattern)


# --- lookup ----------------------------------------------------------------------------------


def test_lookup_walks_keys_most_specific_first() -> None:
    keyring = DockerKeyring()
    keyring.add({"quay.io": entry("general"), "quay.io/coreos": entry("coreos")})
    assert users(keyring.lookup("quay.io/coreos/etcd")) == ["coreos", "general"]
    assert users(keyring.lookup("quay.io/other/app")) == ["general"]


def test_lookup_collects_every_matching_key_including_globs() -> None:
    keyring = DockerKeyring()
    keyring.add({"*.gcr.io": entry("glob"), "eu.gcr.io": entry("exact"), "gcr.io": entry("bare")})
    # reverse byte order: "gcr.io" > "eu.gcr.io" > "*.gcr.io"; "gcr.io" has fewer labels
    assert users(keyring.lookup("eu.gcr.io/proj/app")) == ["exact", "glob"]


def test_docker_hub_fallback() -> None:
    keyring = DockerKeyring()
    keyring.add({"https://index.docker.io/v1/": entry("hub"), "quay.io": entry("q")})
    assert users(keyring.lookup("docker.io/library/nginx")) == ["hub"]
    assert users(keyring.lookup("docker.io/someone/app")) == ["hub"]
    assert keyring.lookup("gcr.io/proj/app") == []
    assert keyring.lookup("localhost:5000/app") == []


def test_fallback_only_when_nothing_matched() -> None:
    keyring = DockerKeyring()
    keyring.add({"https://index.docker.io/v1/": entry("hub"), "docker.io": entry("direct")})
    assert users(keyring.lookup("docker.io/library/nginx")) == ["direct"]


def test_no_match_no_fallback_key() -> None:
    keyring = keyring_of("quay.io")
    assert keyring.lookup("docker.io/library/nginx") == []
    assert DockerKeyring().lookup("quay.io/x") == []


def test_lookup_returns_a_fresh_list() -> None:
    keyring = keyring_of("r.io")
    first = keyring.lookup("r.io/x")
    first.clear()
    assert len(keyring.lookup("r.io/x")) == 1


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        ("", False),
        ("/foo", False),
        ("nginx", True),
        ("library/nginx", True),
        ("docker.io/library/nginx", True),
        ("index.docker.io/library/nginx", True),
        ("localhost/foo", True),  # no "." or ":" in the first segment
        ("localhost:5000/foo", False),
        ("quay.io/foo", False),
        ("registry.example/foo/bar", False),
    ],
)
def test_is_docker_hub_image(image: str, expected: bool) -> None:
    assert is_docker_hub_image(image) is expected


def test_union_keyring_concatenates_in_order() -> None:
    pod = DockerKeyring()
    pod.add({"r.io": entry("pod")}, SECRET_A)
    node = DockerKeyring()
    node.add({"r.io/app": entry("node-specific"), "r.io": entry("node")})
    plugins = DockerKeyring()
    plugins.add({"*.io": entry("plugin")}, SA)
    union = UnionKeyring(pod, node, plugins)
    assert users(union.lookup("r.io/app")) == ["pod", "node-specific", "node", "plugin"]
    assert UnionKeyring().lookup("r.io/app") == []


# --- secrets → keyring -----------------------------------------------------------------------


@dataclass(frozen=True)
class FakeSecret:
    uid: str
    namespace: str
    name: str
    type: str
    data: Mapping[str, bytes] = field(default_factory=dict)


def dockerconfigjson(name: str, auths: dict[str, dict[str, str]]) -> FakeSecret:
    doc = json.dumps({"auths": auths}).encode()
    return FakeSecret(
        f"uid-{name}", "ns", name, "kubernetes.io/dockerconfigjson", {".dockerconfigjson": doc}
    )


def test_keyring_from_secrets_none_when_nothing_accepted() -> None:
    assert keyring_from_secrets([]) is None
    ignored = [
        FakeSecret("1", "ns", "opaque", "Opaque", {".dockerconfigjson": b"{}"}),
        FakeSecret("2", "ns", "wrong-key", "kubernetes.io/dockercfg", {".dockerconfigjson": b"{}"}),
        FakeSecret(
            "3", "ns", "empty", "kubernetes.io/dockerconfigjson", {".dockerconfigjson": b""}
        ),
    ]
    assert keyring_from_secrets(ignored) is None


def test_keyring_from_secrets_sources_and_order() -> None:
    first = dockerconfigjson("first", {"r.io": {"username": "a", "password": "1"}})
    legacy = FakeSecret(
        "uid-legacy",
        "ns",
        "legacy",
        "kubernetes.io/dockercfg",
        {".dockercfg": json.dumps({"r.io": {"username": "b", "password": "2"}}).encode()},
    )
    keyring = keyring_from_secrets([first, legacy])
    assert keyring is not None
    creds = keyring.lookup("r.io/app")
    assert users(creds) == ["a", "b"]
    assert creds[0].source == SecretSource("uid-first", "ns", "first")
    assert creds[1].source == SecretSource("uid-legacy", "ns", "legacy")
    assert creds[0].credential_hash == credential_hash("a", "1")


def test_keyring_from_secrets_accepts_empty_document() -> None:
    keyring = keyring_from_secrets([dockerconfigjson("empty", {})])
    assert keyring is not None
    assert keyring.lookup("r.io/app") == []


def test_keyring_from_secrets_decode_error_fails_whole_lookup() -> None:
    good = dockerconfigjson("good", {"r.io": {"username": "a"}})
    bad = FakeSecret(
        "uid-bad",
        "ns",
        "bad",
        "kubernetes.io/dockerconfigjson",
        {".dockerconfigjson": b'{"auths":{"r.io":{"auth":"not base64!"}}}'},
    )
    with pytest.raises(DockerConfigError) as info:
        keyring_from_secrets([good, bad])
    assert "not base64" not in str(info.value)
    assert "image pull secret ns/bad" in (info.value.__notes__ or [])


def test_keyring_from_secrets_without_hashes() -> None:
    keyring = keyring_from_secrets(
        [dockerconfigjson("s", {"r.io": {"username": "a"}})], track_hashes=False
    )
    assert keyring is not None
    assert keyring.lookup("r.io/x")[0].credential_hash == ""


# --- pod credentials (spec §2.6) -------------------------------------------------------------


def test_secret_with_several_matching_entries_gives_several_items() -> None:
    secret = dockerconfigjson(
        "multi",
        {
            "quay.io": {"username": "general", "password": "g"},
            "quay.io/coreos": {"username": "coreos", "password": "c"},
            "gcr.io": {"username": "other", "password": "o"},
        },
    )
    keyring = keyring_from_secrets([secret])
    assert keyring is not None
    secrets, service_account = pod_credentials(keyring.lookup("quay.io/coreos/etcd"))
    assert secrets == [
        ImagePullSecret("uid-multi", "ns", "multi", credential_hash("coreos", "c")),
        ImagePullSecret("uid-multi", "ns", "multi", credential_hash("general", "g")),
    ]
    assert service_account is None


def test_first_service_account_wins_and_sourceless_are_ignored() -> None:
    other_sa = ServiceAccountSource("uid-other", "ns", "other")
    creds = [
        TrackedCredential("node", "p"),
        TrackedCredential("sa1", "p", source=SA),
        TrackedCredential("s", "p", source=SECRET_A, credential_hash="h1"),
        TrackedCredential("sa2", "p", source=other_sa),
        TrackedCredential("node2", "p", source=None, credential_hash="ignored"),
    ]
    secrets, service_account = pod_credentials(creds)
    assert secrets == [ImagePullSecret("uid-a", "ns", "secret-a", "h1")]
    assert service_account == ImagePullServiceAccount("uid-sa", "ns", "builder")


def test_pod_credentials_empty() -> None:
    assert pod_credentials([]) == ([], None)
    assert pod_credentials([TrackedCredential("node", "p")]) == ([], None)


def test_pod_secret_for_another_registry_plays_no_role() -> None:
    keyring = keyring_from_secrets([dockerconfigjson("s", {"gcr.io": {"username": "a"}})])
    assert keyring is not None
    assert pod_credentials(keyring.lookup("quay.io/x")) == ([], None)


@pytest.mark.parametrize(
    ("cred", "expected"),
    [
        (None, ImagePullCredentials(node_pods_accessible=True)),
        (TrackedCredential("u", "p"), ImagePullCredentials(node_pods_accessible=True)),
        (
            TrackedCredential("u", "p", source=SECRET_A, credential_hash="abc"),
            ImagePullCredentials(
                kubernetes_secrets=(ImagePullSecret("uid-a", "ns", "secret-a", "abc"),)
            ),
        ),
        (
            TrackedCredential("u", "p", source=SA, credential_hash="abc"),
            ImagePullCredentials(
                kubernetes_service_accounts=(ImagePullServiceAccount("uid-sa", "ns", "builder"),)
            ),
        ),
    ],
)
def test_tracked_to_image_pull_credentials(
    cred: TrackedCredential | None, expected: ImagePullCredentials
) -> None:
    assert tracked_to_image_pull_credentials(cred) == expected


# --- secrets never leak ----------------------------------------------------------------------


def test_tracked_credential_repr_shows_username_and_source_only() -> None:
    cred = TrackedCredential("alice", "s3cr3t-pw", "a@x", SECRET_A, credential_hash("a", "b"))
    text = repr(cred)
    assert text == (
        "TrackedCredential(username='alice', password=<redacted>, "
        "source=SecretSource(uid='uid-a', namespace='ns', name='secret-a'))"
    )
    assert str(cred) == text
    assert "s3cr3t-pw" not in repr([cred])
    assert repr(TrackedCredential("n", "")) == (
        "TrackedCredential(username='n', password='', source=None)"
    )


def test_keyring_reprs_do_not_leak() -> None:
    auth = base64.b64encode(b"bob:topsecret").decode()
    secret = FakeSecret(
        "u",
        "ns",
        "s",
        "kubernetes.io/dockerconfigjson",
        {".dockerconfigjson": json.dumps({"auths": {"r.io": {"auth": auth}}}).encode()},
    )
    keyring = keyring_from_secrets([secret])
    assert keyring is not None
    union = UnionKeyring(keyring)
    for text in (repr(keyring), repr(union), repr(union.lookup("r.io/x"))):
        assert "topsecret" not in text
        assert auth not in text
