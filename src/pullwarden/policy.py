"""Image pull credential verification policies and the preloaded-images allowlist (spec §6).

A node decides, for an image that is already present, whether the pod asking for it must
prove it holds credentials for it.  The decision depends on the configured
:class:`VerificationPolicy` and on whether the kubelet itself pulled the image:

================================  =====================================================
policy                            verification required when
================================  =====================================================
``NeverVerify``                   never
``NeverVerifyPreloadedImages``    the kubelet pulled the image (the default)
``NeverVerifyAllowlistedImages``  the image does not match the allowlist
``AlwaysVerify``                  always
================================  =====================================================

Allowlist entries are either repository names without tag or digest (``registry.io/app``,
or a familiar ``ubuntu``) or prefixes ending in ``/*`` (``registry.io/team/*``).  Matching
follows kubelet v1.36+: the pod image with its tag and digest stripped, *not* normalised,
is compared literally (so ``ubuntu`` does not match ``docker.io/library/ubuntu``).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Sequence

from pullwarden._gofmt import GO_SPACE
from pullwarden._values import frozen
from pullwarden.errors import (
    ConfigError,
    InvalidAllowlistError,
    InvalidReferenceError,
    UnknownPolicyError,
)
from pullwarden.reference import parse, trim_tag_digest

__all__ = [
    "ALLOWLIST_FIELD",
    "DEFAULT_POLICY",
    "FEATURE_GATE",
    "POLICY_FIELD",
    "Allowlist",
    "PolicyEnforcer",
    "VerificationPolicy",
    "check_kubelet_config",
    "validate_allowlist",
    "validate_kubelet_config",
]

FEATURE_GATE = "KubeletEnsureSecretPulledImages"
POLICY_FIELD = "imagePullCredentialsVerificationPolicy"
ALLOWLIST_FIELD = "preloadedImagesVerificationAllowlist"


class VerificationPolicy(enum.StrEnum):
    """The four values of ``imagePullCredentialsVerificationPolicy``."""

    NEVER_VERIFY = "NeverVerify"
    NEVER_VERIFY_PRELOADED_IMAGES = "NeverVerifyPreloadedImages"
    NEVER_VERIFY_ALLOWLISTED_IMAGES = "NeverVerifyAllowlistedImages"
    ALWAYS_VERIFY = "AlwaysVerify"

    @classmethod
    def parse(cls, value: str) -> VerificationPolicy:
        """Return the policy whose kubelet spelling is exactly ``value``."""
        try:
            return cls(value)
        except ValueError:
            raise UnknownPolicyError(
                f"unknown image pull credential verification policy: {value}"
            ) from None


DEFAULT_POLICY = VerificationPolicy.NEVER_VERIFY_PRELOADED_IMAGES


# --- allowlist -------------------------------------------------------------------------------


@frozen
class Allowlist:
    """Validated allowlist: exact repository names plus ``/*`` prefixes (kept with the ``/``)."""

    absolute: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when no pattern was given; such a list matches nothing."""
        return not self.absolute and not self.prefixes

    def matching_pattern(self, image: str) -> str | None:
        """The allowlist pattern (as configured) that ``image`` matches, or None."""
        try:
            name = trim_tag_digest(image)
        except InvalidReferenceError:
            return None
        if name in self.absolute:
            return name
        for prefix in self.prefixes:
            if name.startswith(prefix):
                return prefix + "*"
        return None

    def matches(self, image: str) -> bool:
        """Whether the pod image ``image`` (tag/digest allowed) is on the allowlist."""
        try:
            name = trim_tag_digest(image)
        except InvalidReferenceError:
            return False
        return name in self.absolute or name.startswith(self.prefixes)


def _check_pattern(pattern: str) -> tuple[str, bool]:
    """Validate one pattern; return (name or prefix, is_wildcard) or raise."""
    if pattern != pattern.strip(GO_SPACE):
        raise InvalidAllowlistError(f"leading/trailing spaces are not allowed: {pattern}")
    wildcard = pattern.endswith("/*")
    value = pattern[:-1] if wildcard else pattern
    if not value:
        raise InvalidAllowlistError(f"the supplied pattern is too short: {pattern}")
    if "*" in value:
        raise InvalidAllowlistError(
            "not a valid wildcard pattern, only patterns ending with '/*' are allowed: " + pattern
        )
    if wildcard:
        if value == "/":
            raise InvalidAllowlistError("at least registry hostname is required")
        return value, True
    try:
        ref = parse(value)
    except InvalidReferenceError as err:
        raise InvalidAllowlistError(f"failed to parse as an image name: {err}") from err
    if ref.name != value:
        raise InvalidAllowlistError(
            f"neither tag nor digest is accepted in an image reference: {pattern}"
        )
    return value, False


def validate_allowlist(patterns: Iterable[str]) -> Allowlist:
    """Check ``preloadedImagesVerificationAllowlist`` entries and build an :class:`Allowlist`.

    The first bad pattern raises :class:`InvalidAllowlistError` with the kubelet's message.
    Familiar names such as ``ubuntu`` are accepted and kept as written.
    """
    if isinstance(patterns, str):
        raise TypeError("allowlist patterns must be an iterable of strings, not a single string")
    absolute: set[str] = set()
    prefixes: list[str] = []
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise TypeError(f"allowlist pattern must be a string, not {type(pattern).__name__}")
        value, wildcard = _check_pattern(pattern)
        if not wildcard:
            absolute.add(value)
        elif value not in prefixes:
            prefixes.append(value)
    return Allowlist(absolute=frozenset(absolute), prefixes=tuple(prefixes))


# --- enforcer --------------------------------------------------------------------------------


class PolicyEnforcer:
    """Answers "must this pod prove its credentials for this present image?"."""

    __slots__ = ("_decide", "allowlist", "policy")

    policy: VerificationPolicy
    allowlist: Allowlist

    def __init__(
        self,
        policy: VerificationPolicy | str = DEFAULT_POLICY,
        allowlist: Iterable[str] = (),
    ) -> None:
        if isinstance(policy, VerificationPolicy):
            self.policy = policy
        else:
            self.policy = VerificationPolicy.parse(policy)
        self.allowlist = validate_allowlist(allowlist)
        self._decide: Callable[[str, bool], bool] = self._decider()

    def _decider(self) -> Callable[[str, bool], bool]:
        """Pick the decision function once, so the per-image call does no dispatch work."""
        if self.policy is VerificationPolicy.NEVER_VERIFY:
            return _never
        if self.policy is VerificationPolicy.NEVER_VERIFY_PRELOADED_IMAGES:
            return _when_pulled_by_kubelet
        if self.policy is VerificationPolicy.ALWAYS_VERIFY:
            return _always
        matches = self.allowlist.matches

        def unless_allowlisted(image: str, pulled_by_kubelet: bool) -> bool:
            return not matches(image)

        return unless_allowlisted

    def require_credential_verification(self, image: str, pulled_by_kubelet: bool) -> bool:
        """True when the pod must prove access to the present ``image`` (raw pod image)."""
        return self._decide(image, pulled_by_kubelet)

    def explain(self, image: str, pulled_by_kubelet: bool) -> str:
        """One sentence saying why :meth:`require_credential_verification` answers as it does."""
        policy = self.policy
        lead = f"policy {policy.value}: "
        if policy is VerificationPolicy.NEVER_VERIFY:
            return lead + "credentials are never verified for images already on the node"
        if policy is VerificationPolicy.ALWAYS_VERIFY:
            return lead + "credentials are always verified for images already on the node"
        if policy is VerificationPolicy.NEVER_VERIFY_PRELOADED_IMAGES:
            if pulled_by_kubelet:
                return lead + "the image was pulled by the kubelet, so credentials must be verified"
            return (
                lead + "the image was not pulled by the kubelet (it is preloaded), "
                "so credentials need not be verified"
            )
        try:
            name = trim_tag_digest(image)
        except InvalidReferenceError as err:
            return (
                lead + f'the image "{image}" is not a valid reference ({err}), so it matches '
                "no allowlist entry and credentials must be verified"
            )
        pattern = self.allowlist.matching_pattern(image)
        if pattern is None:
            if self.allowlist.is_empty:
                return (
                    lead + f'the allowlist is empty, so "{name}" is not allowlisted '
                    "and credentials must be verified"
                )
            return (
                lead + f'"{name}" matches no allowlist entry, so credentials must be verified '
                "whether or not the kubelet pulled the image"
            )
        return (
            lead + f'"{name}" matches allowlist entry "{pattern}", '
            "so credentials need not be verified"
        )

    def __repr__(self) -> str:
        return (
            f"PolicyEnforcer(policy={self.policy.value!r}, "
            f"absolute={sorted(self.allowlist.absolute)!r}, "
            f"prefixes={list(self.allowlist.prefixes)!r})"
        )


def _never(image: str, pulled_by_kubelet: bool) -> bool:
    return False


def _always(image: str, pulled_by_kubelet: bool) -> bool:
    return True


def _when_pulled_by_kubelet(image: str, pulled_by_kubelet: bool) -> bool:
    return pulled_by_kubelet


# --- kubelet configuration validation --------------------------------------------------------


def check_kubelet_config(
    feature_gate_enabled: bool,
    policy: str | None,
    allowlist: Sequence[str] | None,
) -> tuple[VerificationPolicy | None, list[str]]:
    """Check the two KubeletConfiguration fields against each other and the feature gate.

    Returns the effective policy and every problem found, each a kubelet message, in the
    kubelet's order.  The policy is None when the gate is off or anything is wrong; with the
    gate on, an empty ``policy`` means ``NeverVerifyPreloadedImages``.
    """
    if isinstance(allowlist, str):
        raise TypeError(f"{ALLOWLIST_FIELD} must be a sequence of strings, not a single string")
    patterns = list(allowlist or ())
    if not feature_gate_enabled:
        return None, _gate_off_problems(policy, patterns)
    effective, problems = _policy_problems(policy)
    if patterns:
        problems += _allowlist_problems(effective, patterns)
    return (None if problems else effective), problems


def validate_kubelet_config(
    feature_gate_enabled: bool,
    policy: str | None,
    allowlist: Sequence[str] | None,
) -> VerificationPolicy | None:
    """Like :func:`check_kubelet_config`, but raising what it finds.

    Returns the effective policy (empty means ``NeverVerifyPreloadedImages``) when the gate
    is on, None when it is off and neither field is set; otherwise raises
    :class:`ConfigError` with every problem found in its ``problems``.
    """
    effective, problems = check_kubelet_config(feature_gate_enabled, policy, allowlist)
    if problems:
        raise ConfigError(problems=problems)
    return effective


def _gate_off_problems(policy: str | None, patterns: Sequence[str]) -> list[str]:
    """With the feature gate off, neither field may be set."""
    return [
        f"invalid configuration: `{field}` must not be set if "
        f"{FEATURE_GATE} feature gate is not enabled"
        for field, is_set in ((POLICY_FIELD, bool(policy)), (ALLOWLIST_FIELD, bool(patterns)))
        if is_set
    ]


def _policy_problems(policy: str | None) -> tuple[VerificationPolicy | None, list[str]]:
    """The policy a (gate on) configuration names, or None and the problem with it."""
    if not policy:
        return DEFAULT_POLICY, []
    try:
        return VerificationPolicy.parse(policy), []
    except UnknownPolicyError:
        allowed = ", ".join(p.value for p in VerificationPolicy)
        return None, [
            f'invalid configuration: `{POLICY_FIELD}` must be one of [{allowed}], got "{policy}"'
        ]


def _allowlist_problems(effective: VerificationPolicy | None, patterns: Sequence[str]) -> list[str]:
    """What is wrong with a non-empty allowlist under the ``effective`` policy (None: invalid)."""
    problems: list[str] = []
    wanted = VerificationPolicy.NEVER_VERIFY_ALLOWLISTED_IMAGES
    if effective is not None and effective is not wanted:
        problems.append(
            f"invalid configuration: `{ALLOWLIST_FIELD}` must not be set unless "
            f"`{POLICY_FIELD}` is {wanted.value} (it is {effective.value})"
        )
    try:
        validate_allowlist(patterns)
    except InvalidAllowlistError as err:
        problems.append(f"invalid configuration: `{ALLOWLIST_FIELD}` is invalid: {err}")
    return problems
