"""``EnsureImageExists``: get a container's image onto the node, if the pod may have it (spec §1).

:meth:`ImageManager.ensure_image_exists` follows the kubelet step by step (spec §1.3): apply
the default tag; look for the image unless the policy is ``Always``; with the
``KubeletEnsureSecretPulledImages`` gate on, ask the pull manager whether the pod's credentials
must first prove themselves; refuse ``Never`` pods that cannot use what is there without saying
whether it is there; otherwise pull, with the pod's credentials, through back-off, the rate
limit and the puller, and record what the pull proved.  Events, error values and messages are
the kubelet's (spec §1.7), as is the ``ensure_image_requests`` metric (spec §1.8).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Final, Protocol

from pullwarden._cancel import CancelToken
from pullwarden._clock import Clock, SystemClock
from pullwarden._gofmt import MILLISECOND, go_duration, go_quote, seconds_to_ns, truncate
from pullwarden._values import frozen
from pullwarden.credentials import (
    Keyring,
    TrackedCredential,
    tracked_to_image_pull_credentials,
)
from pullwarden.errors import InvalidReferenceError
from pullwarden.events import (
    BACK_OFF,
    CREDENTIAL_PROVIDER_FAILED,
    ERR_IMAGE_NEVER_PULL_POLICY,
    FAILED,
    INSPECT_FAILED,
    NORMAL,
    PULLED,
    PULLING,
    WARNING,
    EventRecorder,
)
from pullwarden.imagemanager._backoff import Backoff
from pullwarden.imagemanager._credentials import CredentialLookup, credential_ref, error_text
from pullwarden.imagemanager._errors import (
    ERR_IMAGE_INSPECT,
    ERR_IMAGE_NEVER_PULL,
    ERR_IMAGE_PULL,
    ERR_IMAGE_PULL_BACK_OFF,
    ERR_INVALID_IMAGE_NAME,
    classify_pull_error,
)
from pullwarden.imagemanager._pullers import (
    STOP_GRACE,
    ParallelPuller,
    Puller,
    PullOutcome,
    SerialPuller,
    pull_with_credentials,
)
from pullwarden.imagemanager._throttle import TokenBucket
from pullwarden.metrics import Metrics
from pullwarden.objects import Container, CredentialRef, Pod, Secret, ServiceAccount
from pullwarden.pullmanager import Decision, PullManager, VerifiedBy
from pullwarden.reference import apply_default_tag, default_pull_policy
from pullwarden.runtime import ImageService, PodSandbox, PullProgress

PullProgressHook = Callable[[Pod, str, PullProgress], None]
"""Receives (pod, image as the pod names it, progress report) during a pull."""

__all__ = [
    "PULL_POLICIES",
    "EnsureResult",
    "ImageManager",
]

if TYPE_CHECKING:  # plugins load on use (pullwarden.credentials)
    from pullwarden.credentials import PluginFailure

log = logging.getLogger("pullwarden.imagemanager")

ALWAYS: Final = "Always"
IF_NOT_PRESENT: Final = "IfNotPresent"
NEVER: Final = "Never"
PULL_POLICIES: Final = (ALWAYS, IF_NOT_PRESENT, NEVER)


@frozen
class EnsureResult:
    """The outcome of one :meth:`ImageManager.ensure_image_exists` call.

    ``error`` is None on success, else the kubelet's error value (``ErrImagePull``,
    ``ImagePullBackOff``, ``ErrImageNeverPull``, ``InvalidImageName``, ``ImageInspectError``,
    ``RegistryUnavailable``, ``SignatureValidationFailed``) with the kubelet's ``message``.
    ``pulled`` says whether the registry was asked in this call (never when the image was used
    as it is, or back-off or the rate limit stopped the pull); ``verified_by`` how the pod's
    access was established (:class:`~pullwarden.pullmanager.VerifiedBy`, ``NONE`` on
    failure); ``credential`` who pulled or was verified, in words (``secret ns/name``,
    ``service account ns/name``, ``node credentials``, ``anonymous``; "" when no credential of
    the pod was involved); ``credential_ref`` the same as a value, with ``node`` for a record
    of node-wide access (None when no credential established access: a policy exemption, the
    gate off, a failure).  ``interrupted`` marks a request the manager's cancel token stopped
    (or never started): ``error`` is then ``ErrImagePull`` and ``message`` says what was left
    undone.
    """

    image_ref: str
    error: str | None
    message: str
    pulled: bool
    verified_by: VerifiedBy
    credential: str
    interrupted: bool = False
    credential_ref: CredentialRef | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _failure(
    error: str, message: str, *, pulled: bool = False, interrupted: bool = False
) -> EnsureResult:
    return EnsureResult("", error, message, pulled, VerifiedBy.NONE, "", interrupted)


class _Request:
    """The facts of one ensure call the metric and the log prefix need."""

    __slots__ = ("container", "pod", "present", "required", "service_account")

    def __init__(
        self, pod: Pod, container: Container, service_account: ServiceAccount | None = None
    ) -> None:
        self.pod = pod
        self.container = container
        self.service_account = service_account
        self.present: bool | None = None
        self.required: bool | None = None


class PluginKeyrings(Protocol):
    """Credential provider plugins, as a keyring for one pod (:class:`~pullwarden.credentials.
    CredentialPlugins` is one)."""

    def keyring_for(
        self,
        pod: Pod | None,
        service_account: ServiceAccount | None,
        on_failure: Callable[[PluginFailure], None] | None = None,
    ) -> Keyring: ...


class ImageManager:
    """The kubelet's image manager for one node.

    ``pull_manager`` None means the ``KubeletEnsureSecretPulledImages`` feature gate is off:
    a present image is always used and nothing is recorded.  ``node_keyring`` supplies the
    node's own credentials (docker config files and the like), tried after the pod's Secrets.
    ``serialize_image_pulls`` picks the serial puller (one pull at a time, a queue of ten),
    otherwise pulls run in parallel, at most ``max_parallel_image_pulls`` at once (None:
    unlimited).  ``registry_pull_qps`` > 0 limits pulls to that rate with bursts of
    ``registry_burst``; 0 means no limit.  Thread-safe: pods may ensure their images from
    several threads.  :meth:`close` stops the puller threads.

    ``pull_progress`` is called with the pod, the image as the pod names it and each progress
    report of its pull (from the puller's thread; only image services that report progress
    call it).

    ``cancel`` stops the manager: pulls in flight abort (one that already committed still gets
    its record; one that did not ends its intent), queued ones never start, and later calls
    return at once; every such result is ``interrupted``.  A caller waits at most
    ``stop_grace`` seconds for its pull to stop, after which its intent is left in place (the
    pull's outcome is unknown) until the pull really ends.
    """

    def __init__(
        self,
        image_service: ImageService,
        pull_manager: PullManager | None,
        *,
        events: EventRecorder | None = None,
        node_keyring: Keyring | None = None,
        plugins: PluginKeyrings | None = None,
        serialize_image_pulls: bool = True,
        max_parallel_image_pulls: int | None = None,
        registry_pull_qps: float = 5.0,
        registry_burst: int = 10,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        cancel: CancelToken | None = None,
        stop_grace: float = STOP_GRACE,
        pull_progress: PullProgressHook | None = None,
    ) -> None:
        self.image_service = image_service
        self.pull_progress = pull_progress
        self.cancel = cancel or CancelToken()
        self.pull_manager = pull_manager
        self.events = events
        self.node_keyring = node_keyring
        self.plugins = plugins
        self.clock: Clock = clock or SystemClock()
        if metrics is None:
            metrics = pull_manager.metrics if pull_manager is not None else Metrics()
        self.metrics = metrics
        self.backoff = Backoff(self.clock)
        self._throttle = (
            TokenBucket(registry_pull_qps, registry_burst, self.clock)
            if registry_pull_qps > 0
            else None
        )
        self._puller: Puller = (
            SerialPuller(stop_grace=stop_grace)
            if serialize_image_pulls
            else ParallelPuller(max_parallel_image_pulls, stop_grace=stop_grace)
        )
        self._previous_errors: dict[str, str] = {}
        self._errors_lock = threading.Lock()

    @property
    def feature_gate_enabled(self) -> bool:
        return self.pull_manager is not None

    def close(self, timeout: float | None = None) -> None:
        """Stop the puller threads (pulls already accepted finish first, or are cancelled)."""
        self._puller.close(timeout)

    def __enter__(self) -> ImageManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- events ------------------------------------------------------------------------------

    def _event(self, req: _Request, type: str, reason: str, message: str) -> None:
        if self.events is not None:
            self.events.record(req.pod, type, reason, message)
            return
        prefix = f"{req.pod.namespace}/{req.pod.name}/{req.container.image}"
        level = logging.WARNING if type == WARNING else logging.INFO
        log.log(level, "%s %s", prefix, message)

    def _plugin_keyring(self, req: _Request) -> Keyring | None:
        """The plugins' keyring for this pod; a plugin that fails is a Warning event."""
        if self.plugins is None:
            return None

        def failed(failure: PluginFailure) -> None:
            self._event(
                req,
                WARNING,
                CREDENTIAL_PROVIDER_FAILED,
                f"credential provider {failure.provider} gave no credentials for "
                f"{go_quote(failure.image)}: {failure.message}",
            )

        return self.plugins.keyring_for(req.pod, req.service_account, failed)

    def _never_pull(self, req: _Request) -> EnsureResult:
        """The answer for ``Never`` whether the image is absent or merely not usable."""
        message = (
            f"Container image {go_quote(req.container.image)} is not present with pull policy "
            "of Never"
        )
        self._event(req, WARNING, ERR_IMAGE_NEVER_PULL_POLICY, message)
        return _failure(ERR_IMAGE_NEVER_PULL, message)

    # -- EnsureImageExists (spec §1.3) -------------------------------------------------------

    def ensure_image_exists(
        self,
        pod: Pod,
        container: Container,
        pull_secrets: Sequence[Secret],
        service_account: ServiceAccount | None = None,
    ) -> EnsureResult:
        """Make ``container``'s image available to ``pod`` as the kubelet would.

        ``pull_secrets`` are the pod's image pull Secrets that could be found, in the pod's
        order; ``service_account`` is the pod's ServiceAccount when it is known (credential
        provider plugins with ``tokenAttributes`` need it).  Never raises for anything a
        kubelet reports as a container error.
        """
        policy = container.image_pull_policy or default_pull_policy(container.image)
        if policy not in PULL_POLICIES:
            raise ValueError(
                f"container {container.name!r}: unknown imagePullPolicy {policy!r} "
                f"(expected one of {', '.join(PULL_POLICIES)})"
            )
        req = _Request(pod, container, service_account)
        try:
            return self._ensure(req, policy, pull_secrets)
        finally:
            self.metrics.count_ensure_image_request(policy, req.present, req.required)

    def _ensure(self, req: _Request, policy: str, pull_secrets: Sequence[Secret]) -> EnsureResult:
        requested = req.container.image
        if self.cancel.cancelled:
            return _failure(ERR_IMAGE_PULL, f"not started: {self.cancel.error}", interrupted=True)
        try:
            image = apply_default_tag(requested)
        except InvalidReferenceError as err:
            message = f"Failed to apply default image tag {go_quote(requested)}: {err}"
            self._event(req, WARNING, INSPECT_FAILED, message)
            return _failure(ERR_INVALID_IMAGE_NAME, message)

        image_ref = ""
        if policy != ALWAYS:
            try:
                status = self.image_service.image_status(image)
            except Exception as err:
                message = f"Failed to inspect image {go_quote(image_ref)}: {error_text(err)}"
                self._event(req, WARNING, INSPECT_FAILED, message)
                return _failure(ERR_IMAGE_INSPECT, message)
            image_ref = status.id if status is not None else ""
            names = (*status.repo_tags, *status.repo_digests) if status is not None else ()
            req.present = bool(image_ref)
            if not image_ref and policy == NEVER:
                return self._never_pull(req)

        lookup = CredentialLookup(
            image,
            pull_secrets,
            self.node_keyring,
            track_hashes=self.feature_gate_enabled,
            plugin_keyring=self._plugin_keyring(req),
        )

        if image_ref:
            req.required = False
            if self.pull_manager is None:
                self._event(
                    req,
                    NORMAL,
                    PULLED,
                    f"Container image {go_quote(requested)} already present on machine",
                )
                return EnsureResult(image_ref, None, "", False, VerifiedBy.FEATURE_DISABLED, "")
            try:
                decision = self.pull_manager.decide(
                    requested, image_ref, lookup.pod_credentials, image_names=names
                )
            except Exception as err:
                req.required = None
                return _failure(ERR_IMAGE_PULL, error_text(err))
            if not decision.must_pull:
                self._event(
                    req,
                    NORMAL,
                    PULLED,
                    f"Container image {go_quote(requested)} already present on machine and can "
                    "be accessed by the pod",
                )
                ref = _matched(decision)
                return EnsureResult(
                    image_ref,
                    None,
                    "",
                    False,
                    decision.verified_by,
                    ref.describe() if ref is not None and ref.kind != "node" else "",
                    credential_ref=ref,
                )
        req.required = True

        if policy == NEVER:
            return self._never_pull(req)

        try:
            credentials = lookup()
        except Exception as err:
            return _failure(ERR_IMAGE_PULL, error_text(err))
        return self._pull(req, image, credentials)

    # -- pullImage (spec §1.3 step 10) -------------------------------------------------------

    def _pull(
        self, req: _Request, image: str, credentials: Sequence[TrackedCredential]
    ) -> EnsureResult:
        """Record the intent, then pull; the pull settles the intent when it really ends.

        The intent ends (:meth:`PullManager.record_image_pull_failed`) only when the pull is
        known not to have committed: skipped by back-off, refused by the runtime, stopped
        before committing.  A pull whose end is unknown keeps its intent.
        """
        requested = req.container.image
        pm = self.pull_manager
        if pm is not None:
            try:
                pm.record_pull_intent(requested)
            except Exception as err:
                return _failure(
                    ERR_IMAGE_PULL,
                    f"Failed to record image pull intent for container image "
                    f"{go_quote(requested)}: {error_text(err)}",
                )
        token = self.cancel.child()

        def settle(outcome: PullOutcome) -> None:
            token.release()
            if pm is None:
                return
            if outcome.error is None:
                pm.record_image_pulled(
                    requested,
                    outcome.image_ref,
                    tracked_to_image_pull_credentials(outcome.credential),
                )
            elif outcome.committed is False:
                pm.record_image_pull_failed(requested)
            else:
                log.warning("the end of the pull of %r is unknown; its intent stays", requested)

        try:
            skipped = self._skip_for_backoff(req)
            if skipped is None:
                self._event(req, NORMAL, PULLING, f"Pulling image {go_quote(requested)}")
        except BaseException:
            settle(PullOutcome(error="not pulled"))
            raise
        if skipped is not None:
            settle(PullOutcome(error=skipped.message))
            return skipped
        return self._pull_once(req, image, credentials, token, settle)

    def _skip_for_backoff(self, req: _Request) -> EnsureResult | None:
        """The back-off answer when the pod's last pull of this image failed too recently."""
        requested = req.container.image
        key = f"{req.pod.uid}_{requested}"
        if self.backoff.in_backoff(key):
            message = f"Back-off pulling image {go_quote(requested)}"
            self._event(req, NORMAL, BACK_OFF, message)
            with self._errors_lock:
                previous = self._previous_errors.get(key)
            if previous is not None:
                message = f"{message}: {previous}"
            return _failure(ERR_IMAGE_PULL_BACK_OFF, message)
        with self._errors_lock:
            self._previous_errors.pop(key, None)
        return None

    def _pull_once(
        self,
        req: _Request,
        image: str,
        credentials: Sequence[TrackedCredential],
        token: CancelToken,
        settle: Callable[[PullOutcome], None],
    ) -> EnsureResult:
        """Hand the pull to the puller (which settles it) and turn its outcome into a result."""
        requested = req.container.image
        key = f"{req.pod.uid}_{requested}"
        start = self.clock.monotonic()
        service, clock, throttle = self.image_service, self.clock, self._throttle
        pod = req.pod
        sandbox = PodSandbox(pod.name, pod.namespace, pod.uid, pod.annotations)
        hook = self.pull_progress
        on_progress = None if hook is None else (lambda p: hook(pod, requested, p))
        outcome = self._puller.pull(
            lambda: pull_with_credentials(
                service,
                image,
                credentials,
                clock=clock,
                throttle=throttle,
                cancel=token,
                sandbox=sandbox,
                on_progress=on_progress,
            ),
            settle,
            self.cancel,
        )
        if outcome.error is not None:
            error = outcome.error
            if req.present and outcome.refused and not outcome.cancelled:
                error = refused_on_node(error, outcome.refused, anonymous=not credentials)
            self._event(
                req, WARNING, FAILED, f"Failed to pull image {go_quote(requested)}: {error}"
            )
            if outcome.cancelled:
                message = f"pull of {go_quote(requested)} stopped: {outcome.error}"
                return _failure(ERR_IMAGE_PULL, message, pulled=outcome.attempted, interrupted=True)
            self.backoff.next(key)
            value, message = classify_pull_error(requested, error, outcome.registry_unavailable)
            with self._errors_lock:
                self._previous_errors[key] = f"{value}: {message}"
            return _failure(value, message, pulled=outcome.attempted)

        total_ns = truncate(seconds_to_ns(self.clock.monotonic() - start), MILLISECOND)
        pull_ns = truncate(outcome.duration_ns, MILLISECOND)
        self._event(
            req,
            NORMAL,
            PULLED,
            f"Successfully pulled image {go_quote(requested)} in {go_duration(pull_ns)} "
            f"({go_duration(total_ns)} including waiting). Image size: {outcome.size} bytes.",
        )
        self.metrics.observe_image_pull(total_ns / 1e9, outcome.size)
        self.backoff.gc()
        ref = credential_ref(outcome.credential)
        return EnsureResult(
            outcome.image_ref, None, "", True, VerifiedBy.PULL, ref.describe(), credential_ref=ref
        )


def _matched(decision: Decision) -> CredentialRef | None:
    """Whose access a record matched: the pod's Secret or ServiceAccount, or ``node`` for a
    record of node-wide access; None for an exemption by policy."""
    if decision.pod_secret is not None:
        return CredentialRef("secret", decision.pod_secret.namespace, decision.pod_secret.name)
    account = decision.matched_service_account
    if account is not None:
        return CredentialRef("serviceAccount", account.namespace, account.name)
    if decision.verified_by is VerifiedBy.NODE_WIDE:
        return CredentialRef("node")
    return None


def refused_on_node(error: str, refused: str, *, anonymous: bool = False) -> str:
    """A failed re-verification of an image that is on the node, in words, then the error."""
    what = "access without credentials" if anonymous else "this pod's credentials"
    return f"image is on the node, but the registry refused {what} ({refused}): {error}"
