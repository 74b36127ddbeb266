"""The kubelet configuration fields pullwarden honours, read from a real ``KubeletConfiguration``.

A node's kubelet reads a ``kubelet.config.k8s.io/v1beta1`` ``KubeletConfiguration`` document.
pullwarden accepts the same file (YAML or JSON) and uses the fields of the image pull path:

==========================================  =================================================
field                                       default (as the kubelet's v1beta1 defaulting)
==========================================  =================================================
``featureGates.KubeletEnsureSecretPulledImages``   on (beta and on by default since v1.35)
``imagePullCredentialsVerificationPolicy``  ``NeverVerifyPreloadedImages`` (gate on only)
``preloadedImagesVerificationAllowlist``    empty
``serializeImagePulls``                     true, unless ``maxParallelImagePulls`` ≥ 2
``maxParallelImagePulls``                   unset (no limit once pulls are parallel)
``registryPullQPS`` / ``registryBurst``     5 / 10 (0 QPS means no limit; 0 burst means 10)
``imageGCHighThresholdPercent`` / ``Low``   85 / 80
``imageMinimumGCAge``                       2m (0 also means 2m)
``imageMaximumGCAge``                       0 (disabled)
``imageServiceEndpoint``                    "" (the CRI image service; "": containerRuntimeEndpoint)
``containerRuntimeEndpoint``                "" (the CRI runtime; "": pullwarden's embedded store)
==========================================  =================================================

Every other field of a real configuration is accepted and ignored; a field that is not a
``KubeletConfiguration`` v1beta1 field at all (a typo, a field of a newer kubelet) is
accepted too, as the kubelet's lenient decoding does, and listed in
:attr:`KubeletConfig.unknown_fields` so that a caller can warn about it, as the kubelet
does.  A field given twice (at any depth) keeps its last value and is listed in
:attr:`KubeletConfig.duplicate_fields`, for the same warning.  Values are checked with
the kubelet's own rules and messages; each problem names its field, and all problems found
are reported together in one :class:`~pullwarden.errors.ConfigError` (its ``problems``).

A document goes through four steps, each a function of its own: the header (kind and
apiVersion), the typed read of the fields (every wrongly typed field is reported at once), the
kubelet's v1beta1 defaulting, and validation, which lists problems rather than raising them
(:func:`pullwarden.policy.check_kubelet_config` checks the two verification fields).

Durations use Go's ``time.ParseDuration`` syntax (``2m``, ``1h30m``, ``300ms``, ``0s``);
:func:`parse_go_duration` and :func:`format_go_duration` implement it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import field
from datetime import timedelta
from pathlib import Path
from typing import Any, Final

from pullwarden._documents import read_document
from pullwarden._gofmt import go_duration, parse_go_duration
from pullwarden._values import frozen
from pullwarden.errors import ConfigError
from pullwarden.objects import describe_value
from pullwarden.policy import (
    ALLOWLIST_FIELD,
    DEFAULT_POLICY,
    FEATURE_GATE,
    POLICY_FIELD,
    VerificationPolicy,
    check_kubelet_config,
)

__all__ = [
    "API_VERSION",
    "KIND",
    "KNOWN_FIELDS",
    "KubeletConfig",
    "default_kubelet_config",
    "format_go_duration",
    "load_kubelet_config",
    "parse_go_duration",
    "parse_kubelet_config",
]

API_VERSION: Final = "kubelet.config.k8s.io/v1beta1"
KIND: Final = "KubeletConfiguration"

# The feature gate that must be on for ``imageMaximumGCAge`` to be set (beta, on by default).
_MAX_GC_AGE_GATE: Final = "ImageMaximumGCAge"

_NS_PER_US: Final = 1_000
_DEFAULT_MIN_GC_AGE_NS: Final = 2 * 60 * 1_000_000_000
_INT32_MIN: Final = -(2**31)
_INT32_MAX: Final = 2**31 - 1

# Every top-level field of KubeletConfiguration v1beta1 (as of Kubernetes v1.35), by JSON name.
KNOWN_FIELDS: Final = frozenset(
    """
    apiVersion kind enableServer staticPodPath podLogsDir syncFrequency fileCheckFrequency
    httpCheckFrequency staticPodURL staticPodURLHeader address port readOnlyPort tlsCertFile
    tlsPrivateKeyFile tlsCipherSuites tlsMinVersion rotateCertificates serverTLSBootstrap
    authentication authorization registryPullQPS registryBurst
    imagePullCredentialsVerificationPolicy preloadedImagesVerificationAllowlist
    eventRecordQPS eventBurst enableDebuggingHandlers enableContentionProfiling healthzPort
    healthzBindAddress oomScoreAdj clusterDomain clusterDNS streamingConnectionIdleTimeout
    nodeStatusUpdateFrequency nodeStatusReportFrequency nodeLeaseDurationSeconds
    imageMinimumGCAge imageMaximumGCAge imageGCHighThresholdPercent imageGCLowThresholdPercent
    volumeStatsAggPeriod kubeletCgroups systemCgroups cgroupRoot cgroupsPerQOS cgroupDriver
    cpuManagerPolicy singleProcessOOMKill cpuManagerPolicyOptions cpuManagerReconcilePeriod
    memoryManagerPolicy topologyManagerPolicy topologyManagerScope
    topologyManagerPolicyOptions qosReserved runtimeRequestTimeout hairpinMode maxPods podCIDR
    podPidsLimit resolvConf runOnce cpuCFSQuota cpuCFSQuotaPeriod nodeStatusMaxImages
    maxOpenFiles contentType kubeAPIQPS kubeAPIBurst serializeImagePulls
    maxParallelImagePulls evictionHard evictionSoft evictionSoftGracePeriod
    evictionPressureTransitionPeriod evictionMaxPodGracePeriod evictionMinimumReclaim
    mergeDefaultEvictionSettings podsPerCore enableControllerAttachDetach
    protectKernelDefaults makeIPTablesUtilChains iptablesMasqueradeBit iptablesDropBit
    featureGates failSwapOn memorySwap containerLogMaxSize containerLogMaxFiles
    containerLogMaxWorkers containerLogMonitorInterval configMapAndSecretChangeDetectionStrategy
    systemReserved kubeReserved reservedSystemCPUs showHiddenMetricsForVersion
    systemReservedCgroup kubeReservedCgroup enforceNodeAllocatable allowedUnsafeSysctls
    volumePluginDir providerID kernelMemcgNotification logging enableSystemLogHandler
    enableSystemLogQuery shutdownGracePeriod shutdownGracePeriodCriticalPods
    shutdownGracePeriodByPodPriority crashLoopBackOff reservedMemory enableProfilingHandler
    enableDebugFlagsHandler seccompDefault memoryThrottlingFactor registerWithTaints
    registerNode tracing localStorageCapacityIsolation containerRuntimeEndpoint
    imageServiceEndpoint failCgroupV1 userNamespaces
    """.split()  # noqa: SIM905 (a word list reads better than 130 quoted strings)
)


# --- Go durations ----------------------------------------------------------------------------


def format_go_duration(value: int | timedelta) -> str:
    """Render nanoseconds (or a :class:`timedelta`) as Go's ``Duration.String`` does.

    ``0`` → ``0s``, ``1500000`` → ``1.5ms``, two minutes → ``2m0s``, 90 minutes → ``1h30m0s``.
    """
    return go_duration(_timedelta_ns(value) if isinstance(value, timedelta) else value)


def _timedelta_ns(value: timedelta) -> int:
    return ((value.days * 86_400 + value.seconds) * 1_000_000 + value.microseconds) * _NS_PER_US


# --- the configuration -----------------------------------------------------------------------


@frozen
class KubeletConfig:
    """The image-pull part of a kubelet configuration, defaulted and validated.

    Constructing one directly applies the same checks as :func:`parse_kubelet_config` and
    raises :class:`~pullwarden.errors.ConfigError` for an invalid combination.
    ``verification_policy`` is normalised: with the feature gate on, None means the default
    ``NeverVerifyPreloadedImages``; with the gate off the policy is meaningless and becomes None
    (an explicit policy other than the default, or an allowlist, is rejected as the kubelet does).
    """

    feature_gate_enabled: bool = True
    verification_policy: VerificationPolicy | None = DEFAULT_POLICY
    allowlist: tuple[str, ...] = ()
    serialize_image_pulls: bool = True
    max_parallel_image_pulls: int | None = None
    registry_pull_qps: float = 5.0
    registry_burst: int = 10
    image_gc_high_threshold_percent: int = 85
    image_gc_low_threshold_percent: int = 80
    image_minimum_gc_age: timedelta = timedelta(minutes=2)
    image_maximum_gc_age: timedelta = timedelta(0)
    image_service_endpoint: str = ""
    container_runtime_endpoint: str = ""
    unknown_fields: tuple[str, ...] = field(default=(), compare=False)
    """Top-level fields of the document that ``KubeletConfiguration`` v1beta1 does not have."""
    duplicate_fields: tuple[str, ...] = field(default=(), compare=False)
    """Fields the document gives more than once, as paths (``featureGates.X``); the last counts."""

    def __post_init__(self) -> None:
        if not self.feature_gate_enabled and self.verification_policy is DEFAULT_POLICY:
            object.__setattr__(self, "verification_policy", None)
        elif self.feature_gate_enabled and self.verification_policy is None:
            object.__setattr__(self, "verification_policy", DEFAULT_POLICY)
        if not isinstance(self.allowlist, tuple):
            object.__setattr__(self, "allowlist", tuple(self.allowlist))
        _, problems = _check(_fields_of(self))
        if problems:
            raise ConfigError(problems=problems)

    @property
    def parallel_pull_limit(self) -> int | None:
        """How many pulls may run at once: 1 when serialized, else the limit (None = no limit)."""
        if self.serialize_image_pulls:
            return 1
        return self.max_parallel_image_pulls

    @property
    def image_endpoint(self) -> str:
        """The CRI endpoint images come from ("" = the embedded store), as the kubelet picks it:
        ``imageServiceEndpoint``, or else ``containerRuntimeEndpoint``."""
        return self.image_service_endpoint or self.container_runtime_endpoint

    @property
    def image_gc_disabled(self) -> bool:
        """The kubelet skips disk-usage image GC when the high threshold is 100 percent."""
        return self.image_gc_high_threshold_percent == 100


def default_kubelet_config() -> KubeletConfig:
    """The configuration a kubelet v1.35+ runs with when its config file sets nothing."""
    return KubeletConfig()


@frozen
class _Fields:
    """The fields the kubelet validates, defaulted; durations in nanoseconds."""

    gate_on: bool
    policy: str | None
    allowlist: tuple[str, ...]
    serialize: bool
    max_parallel: int | None
    qps: float
    burst: int
    high: int
    low: int
    min_age: int
    max_age: int
    max_gc_age_gate: bool = True
    image_endpoint: str = ""
    runtime_endpoint: str = ""


def _fields_of(config: KubeletConfig) -> _Fields:
    policy = config.verification_policy
    return _Fields(
        gate_on=config.feature_gate_enabled,
        policy=policy.value if policy is not None else None,
        allowlist=config.allowlist,
        serialize=config.serialize_image_pulls,
        max_parallel=config.max_parallel_image_pulls,
        qps=config.registry_pull_qps,
        burst=config.registry_burst,
        high=config.image_gc_high_threshold_percent,
        low=config.image_gc_low_threshold_percent,
        min_age=_timedelta_ns(config.image_minimum_gc_age),
        max_age=_timedelta_ns(config.image_maximum_gc_age),
        image_endpoint=config.image_service_endpoint,
        runtime_endpoint=config.container_runtime_endpoint,
    )


def _check(fields: _Fields) -> tuple[VerificationPolicy | None, list[str]]:
    """Apply the kubelet's validation rules for these fields, in the kubelet's order.

    Returns the effective verification policy (None when the gate is off or the policy is
    invalid) and the list of problems (empty when valid).
    """
    problems = _gc_threshold_problems(fields.high, fields.low)
    problems += _gc_age_problems(fields.min_age, fields.max_age, fields.max_gc_age_gate)
    problems += _pull_problems(fields.serialize, fields.max_parallel, fields.qps, fields.burst)
    effective, policy_problems = check_kubelet_config(
        fields.gate_on, fields.policy, list(fields.allowlist)
    )
    return effective, problems + policy_problems


def _gc_threshold_problems(high: int, low: int) -> list[str]:
    out: list[str] = []
    if not 0 <= high <= 100:
        out.append(
            "invalid configuration: imageGCHighThresholdPercent (--image-gc-high-threshold) "
            f"{high} must be between 0 and 100, inclusive"
        )
    if not 0 <= low <= 100:
        out.append(
            "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) "
            f"{low} must be between 0 and 100, inclusive"
        )
    if low >= high:
        out.append(
            "invalid configuration: imageGCLowThresholdPercent (--image-gc-low-threshold) "
            f"{low} must be less than imageGCHighThresholdPercent (--image-gc-high-threshold) "
            f"{high}"
        )
    return out


def _gc_age_problems(min_age: int, max_age: int, max_gc_age_gate: bool) -> list[str]:
    out: list[str] = []
    if max_age != 0 and not max_gc_age_gate:
        out.append(
            f"invalid configuration: {_MAX_GC_AGE_GATE} feature gate is required for Kubelet "
            "configuration option imageMaximumGCAge"
        )
    if min_age < 0:
        out.append(
            f"invalid configuration: imageMinimumGCAge {format_go_duration(min_age)} "
            "must not be negative"
        )
    if max_age < 0:
        out.append(
            f"invalid configuration: imageMaximumGCAge {format_go_duration(max_age)} "
            "must not be negative"
        )
    if max_age > 0 and max_age <= min_age:
        out.append(
            f"invalid configuration: imageMaximumGCAge {format_go_duration(max_age)} must be "
            f"greater than imageMinimumGCAge {format_go_duration(min_age)}"
        )
    return out


def _pull_problems(serialize: bool, max_parallel: int | None, qps: float, burst: int) -> list[str]:
    out: list[str] = []
    if burst < 0:
        out.append(
            f"invalid configuration: registryBurst (--registry-burst) {burst} "
            "must not be a negative number"
        )
    if not qps >= 0:  # also catches NaN
        out.append(
            f"invalid configuration: registryPullQPS (--registry-qps) {_number(qps)} "
            "must not be a negative number"
        )
    if max_parallel is not None and max_parallel < 1:
        out.append(
            f"invalid configuration: maxParallelImagePulls {max_parallel} must be a positive number"
        )
    if serialize and max_parallel is not None and max_parallel > 1:
        out.append(
            "invalid configuration: maxParallelImagePulls cannot be larger than 1 unless "
            "SerializeImagePulls (--serialize-image-pulls) is set to false"
        )
    return out


def _number(value: float) -> str:
    number = float(value)
    return str(int(number)) if math.isfinite(number) and number.is_integer() else repr(number)


# --- reading a file --------------------------------------------------------------------------


class _Reader:
    """Typed access to the raw configuration mapping, collecting type errors by field name."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        self.doc = doc
        self.errors: list[str] = []

    def _get(self, name: str) -> Any:
        return self.doc.get(name)

    def _type_error(self, name: str, expected: str, value: Any) -> None:
        self.errors.append(
            f"{name}: expected {expected}, got {describe_value(value, show_strings=True)}"
        )

    def boolean(self, name: str) -> bool | None:
        return self._bool(name, self._get(name))

    def _bool(self, name: str, value: Any) -> bool | None:
        if value is None:
            return None
        if isinstance(value, bool):
            return value
        self._type_error(name, "a boolean (true or false)", value)
        return None

    def int32(self, name: str) -> int | None:
        value = self._get(name)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON/YAML ``5.0`` is still a whole number
        if isinstance(value, bool) or not isinstance(value, int):
            self._type_error(name, "an integer", value)
            return None
        if not _INT32_MIN <= value <= _INT32_MAX:
            self.errors.append(f"{name}: {value} does not fit in a 32-bit integer")
            return None
        return value

    def string(self, name: str) -> str | None:
        value = self._get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self._type_error(name, "a string", value)
            return None
        return value

    def duration(self, name: str) -> int | None:
        value = self._get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            self._type_error(name, 'a duration string such as "2m" or "1h30m"', value)
            return None
        try:
            return parse_go_duration(value)
        except ValueError as err:
            self.errors.append(f"{name}: {err}")
            return None

    def string_list(self, name: str) -> list[str] | None:
        value = self._get(name)
        if value is None:
            return None
        if not isinstance(value, list):
            self._type_error(name, "a list of strings", value)
            return None
        out: list[str] = []
        for i, item in enumerate(value):
            if not isinstance(item, str):
                self._type_error(f"{name}[{i}]", "a string", item)
                return None
            out.append(item)
        return out

    def feature_gates(self) -> dict[str, bool]:
        value = self._get("featureGates")
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self._type_error("featureGates", "a map of gate names to booleans", value)
            return {}
        gates: dict[str, bool] = {}
        for key, enabled in value.items():
            flag = self._bool(f"featureGates.{key}", enabled)
            if flag is not None:
                gates[str(key)] = flag
        return gates


def parse_kubelet_config(doc: Mapping[str, Any], source: str = "config") -> KubeletConfig:
    """Build a validated :class:`KubeletConfig` from a decoded ``KubeletConfiguration``.

    ``kind`` and ``apiVersion`` must be ``KubeletConfiguration`` and
    ``kubelet.config.k8s.io/v1beta1``.  Unknown fields are ignored (and listed in
    :attr:`KubeletConfig.unknown_fields`); so are repeated ones, whose last value counts
    (:attr:`KubeletConfig.duplicate_fields`, known when ``doc`` came from
    :func:`load_kubelet_config`).  Wrongly typed fields are
    reported first (the kubelet would fail to decode them); otherwise the kubelet's defaulting
    and validation rules apply.  Errors are :class:`ConfigError` prefixed with ``source``.
    """
    _check_header(doc, source)
    fields = _defaulted(_read_fields(doc, source))
    policy, problems = _check(fields)
    if problems:
        raise _error(source, problems)
    return KubeletConfig(
        feature_gate_enabled=fields.gate_on,
        verification_policy=policy,
        allowlist=fields.allowlist,
        serialize_image_pulls=fields.serialize,
        max_parallel_image_pulls=fields.max_parallel,
        registry_pull_qps=float(fields.qps),
        registry_burst=fields.burst,
        image_gc_high_threshold_percent=fields.high,
        image_gc_low_threshold_percent=fields.low,
        image_minimum_gc_age=_to_timedelta(fields.min_age),
        image_maximum_gc_age=_to_timedelta(fields.max_age),
        image_service_endpoint=fields.image_endpoint,
        container_runtime_endpoint=fields.runtime_endpoint,
        unknown_fields=tuple(str(k) for k in doc if k not in KNOWN_FIELDS),
        duplicate_fields=tuple(_repeated(doc, "")),
    )


def _repeated(value: object, path: str) -> Iterator[str]:
    """The paths of the keys a decoded document repeats.

    Each :class:`~pullwarden._documents.Members` knows its own; a plain dict repeats none.
    """
    if isinstance(value, Mapping):
        for key in getattr(value, "duplicates", ()):
            yield f"{path}{key}"
        for key, item in value.items():
            yield from _repeated(item, f"{path}{key}.")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _repeated(item, f"{path.removesuffix('.')}[{i}].")


def _check_header(doc: object, source: str) -> None:
    """Raise unless ``doc`` is a mapping of the right ``kind`` and ``apiVersion``."""
    if not isinstance(doc, Mapping):
        raise _error(
            source, [f"expected a {KIND} object, got {describe_value(doc, show_strings=True)}"]
        )
    kind = doc.get("kind")
    api_version = doc.get("apiVersion")
    header: list[str] = []
    if kind != KIND:
        header.append(
            f"kind: expected {KIND}, got {json.dumps(kind) if kind is not None else 'nothing'}"
        )
    if api_version != API_VERSION:
        got = json.dumps(api_version) if api_version is not None else "nothing"
        header.append(f"apiVersion: expected {API_VERSION}, got {got}")
    if header:
        raise _error(source, header)


@frozen
class _RawFields:
    """The fields as the file gives them (None: not set)."""

    gates: dict[str, bool]
    policy: str | None
    allowlist: list[str] | None
    serialize: bool | None
    max_parallel: int | None
    qps: int | None
    burst: int | None
    high: int | None
    low: int | None
    min_age: int | None
    max_age: int | None
    image_endpoint: str | None
    runtime_endpoint: str | None


def _read_fields(doc: Mapping[str, Any], source: str) -> _RawFields:
    """The fields pullwarden uses, each of its type; raise naming every wrongly typed one."""
    r = _Reader(doc)
    raw = _RawFields(
        gates=r.feature_gates(),
        policy=r.string(POLICY_FIELD),
        allowlist=r.string_list(ALLOWLIST_FIELD),
        serialize=r.boolean("serializeImagePulls"),
        max_parallel=r.int32("maxParallelImagePulls"),
        qps=r.int32("registryPullQPS"),
        burst=r.int32("registryBurst"),
        high=r.int32("imageGCHighThresholdPercent"),
        low=r.int32("imageGCLowThresholdPercent"),
        min_age=r.duration("imageMinimumGCAge"),
        max_age=r.duration("imageMaximumGCAge"),
        image_endpoint=r.string("imageServiceEndpoint"),
        runtime_endpoint=r.string("containerRuntimeEndpoint"),
    )
    if r.errors:
        raise _error(source, r.errors)
    return raw


def _defaulted(raw: _RawFields) -> _Fields:
    """The kubelet's v1beta1 defaulting, including its zero-means-default quirks."""
    serialize = raw.serialize
    if serialize is None:
        serialize = raw.max_parallel is None or raw.max_parallel < 2
    return _Fields(
        gate_on=raw.gates.get(FEATURE_GATE, True),
        policy=raw.policy,
        allowlist=tuple(raw.allowlist or ()),
        serialize=serialize,
        max_parallel=raw.max_parallel,
        qps=_unset_is(raw.qps, 5),
        burst=raw.burst or 10,
        high=_unset_is(raw.high, 85),
        low=_unset_is(raw.low, 80),
        min_age=raw.min_age or _DEFAULT_MIN_GC_AGE_NS,
        max_age=raw.max_age or 0,
        max_gc_age_gate=raw.gates.get(_MAX_GC_AGE_GATE, True),
        image_endpoint=raw.image_endpoint or "",
        runtime_endpoint=raw.runtime_endpoint or "",
    )


def _to_timedelta(ns: int) -> timedelta:
    """Nanoseconds to a timedelta (which keeps microseconds; finer parts are truncated)."""
    return timedelta(microseconds=ns // _NS_PER_US)


def _error(source: str, problems: Sequence[str]) -> ConfigError:
    return ConfigError(source=source, problems=problems)


def _unset_is(value: int | None, default: int) -> int:
    """``default`` for a field that is not set (an explicit 0 stays 0)."""
    return default if value is None else value


def load_kubelet_config(path: Path) -> KubeletConfig:
    """Read, default and validate a ``KubeletConfiguration`` file (YAML or JSON).

    The file must hold exactly one document.  Unreadable files, malformed YAML/JSON (with the
    line; nesting deeper than :data:`pullwarden._nesting.MAX_DEPTH` and YAML aliases used inside
    themselves included), the wrong kind or apiVersion, and invalid values raise
    :class:`ConfigError`.
    """
    return parse_kubelet_config(read_document(path, KIND), str(path))
