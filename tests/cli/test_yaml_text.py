"""``-o yaml`` text (cli._common.yaml_text): always what PyYAML's pure-Python emitter writes.

libyaml's emitter writes the same text only for some values; yaml_text uses it for those alone
(cli._common._libyaml_alike).  The property tests hold both halves: yaml_text equals the pure
emitter on any document, and on documents inside the fast domain libyaml does as well.
"""

from __future__ import annotations

import string
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from pullwarden.cli._common import _libyaml_alike, yaml_text


def pure(value: object) -> str:
    text: str = yaml.safe_dump(value, sort_keys=False, allow_unicode=True)
    return text


# Strings inside the fast domain, weighted towards what YAML reads as something else.
TRICKY = ["true", "null", "~", "yes", "no", "on", "off", "1", "1.5", "0x1f", "1e3", "-", "?"]
TRICKY += [":", "a:", "#x", "'", '"', "!x", "&a", "*a", "%", "@", "`", "|", ">", "[a]", "{a}"]
TRICKY += [",", ".inf", ".nan", "0o17", "+1", "1_000", "12:30:00", "2025-01-01", "<<", "---"]
VISIBLE = st.text(alphabet=[c for c in string.printable if "!" <= c <= "~"], max_size=300)
ALIKE_TEXT = st.one_of(VISIBLE, st.sampled_from(TRICKY), st.just(""))
ALIKE_KEY = st.one_of(
    st.text(alphabet=[c for c in string.printable if "!" <= c <= "~"], min_size=1, max_size=100),
    st.sampled_from([t for t in TRICKY if t]),
)
ALIKE_SCALAR = st.one_of(ALIKE_TEXT, st.integers(), st.booleans(), st.none())
ALIKE = st.recursive(
    ALIKE_SCALAR,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(ALIKE_KEY, inner, max_size=4)
    ),
    max_leaves=20,
)
ANY_TEXT = st.one_of(st.text(max_size=200), st.text(alphabet=string.printable, max_size=300))
ANY = st.recursive(
    st.one_of(ANY_TEXT, st.integers(), st.booleans(), st.none(), st.floats()),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(ANY_TEXT, inner, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=400, deadline=None)
@given(ALIKE)
def test_inside_the_fast_domain_libyaml_writes_what_the_pure_emitter_writes(doc: Any) -> None:
    assert _libyaml_alike(doc)
    doc = [doc]  # yaml_text writes mappings and lists (a bare scalar ends apart)
    assert yaml.dump(doc, Dumper=yaml.CSafeDumper, sort_keys=False, allow_unicode=True) == pure(doc)
    assert yaml_text(doc) == pure(doc)


@settings(max_examples=400, deadline=None)
@given(ANY)
def test_yaml_text_is_the_pure_emitter_s_text_for_any_document(doc: Any) -> None:
    assert yaml_text(doc) == pure(doc)


@pytest.mark.parametrize(
    "doc",
    [
        "a b",
        "caf\u00e9",
        "a\tb",
        "a\nb",
        {"": "x"},
        {"k" * 101: "x"},
        {"a b": "x"},
        [1.5],
        {"k": [{"k": "x y"}]},
        b"bytes",
    ],
    ids=repr,
)
def test_what_the_emitters_may_write_apart_goes_the_pure_way(doc: object) -> None:
    assert not _libyaml_alike(doc)


def test_a_record_goes_the_fast_way() -> None:
    record = {
        "file": "/var/lib/kubelet/image_manager/pulled/sha256-" + "ab" * 32,
        "imageRef": "sha256:" + "cd" * 32,
        "lastUpdatedTime": "2026-12-03T16:15:20Z",
        "credentialMapping": {
            "registry.example/team-a/app": {
                "kubernetesSecrets": [
                    {"uid": "u-1", "namespace": "team-a", "name": "regcred", "credentialHash": ""}
                ],
                "kubernetesServiceAccounts": [],
                "nodePodsAccessible": False,
            }
        },
    }
    assert _libyaml_alike([record]) and yaml_text([record]) == pure([record])
