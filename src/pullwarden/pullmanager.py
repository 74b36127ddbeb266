"""The image pull manager: pull intents, pulled records and the verification decision (spec §5).

:meth:`PullManager.must_attempt_image_pull` answers the question at the heart of KEP-2535: may a
pod use an image that is already on the node, or must its credentials first prove themselves to
the registry?  :meth:`PullManager.decide` gives the same answer with the full reasoning, for
operators (``pullwarden records explain``) and for logs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Final, Protocol

from pullwarden._clock import Clock, SystemClock
from pullwarden._locks import StripedLocks
from pullwarden._values import frozen
from pullwarden.errors import PullwardenError, RecordError, RecordWriteError
from pullwarden.metrics import Metrics, MustPullResult
from pullwarden.policy import PolicyEnforcer, VerificationPolicy
from pullwarden.records import (
    CachedRecordStore,
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
    RecordHit,
    RecordStore,
)
from pullwarden.reference import parse_image_name, trim_tag_digest

__all__ = [
    "MAX_SECRETS_PER_IMAGE",
    "Decision",
    "ImageLister",
    "ListedImage",
    "PodCredentials",
    "Protections",
    "PullManager",
    "Step",
    "VerifiedBy",
    "merge_credentials",
    "open_kubelet_records",
]

log = logging.getLogger("pullwarden.pullmanager")

# A record keeps learning new secrets for an image name only while it holds fewer than this many.
MAX_SECRETS_PER_IMAGE = 100

PodCredentials = tuple[Sequence[ImagePullSecret], ImagePullServiceAccount | None]


class Step(StrEnum):
    """Where the decision tree of spec §5.4 ended (:attr:`Decision.step`)."""

    NO_REF = "no-ref"
    READ_ERROR = "read-error"
    POLICY = "policy"
    NO_RECORD = "no-record"
    BAD_NAME = "bad-name"
    NO_NAME = "no-name"
    NODE_WIDE = "node-wide"
    NO_CREDENTIALS = "no-credentials"
    POD_CREDENTIALS = "pod-credentials"
    SECRET = "secret"
    SERVICE_ACCOUNT = "service-account"
    NO_MATCH = "no-match"


class VerifiedBy(StrEnum):
    """How a container came to have its image: the ``verifiedBy`` of results and ``run -o json``.

    The pull manager's own answers are ``secretHash``, ``secretCoordinates``,
    ``serviceAccount`` and ``nodeWide`` (a record matched) and, when the policy exempts the
    image, why: ``preloaded`` (no record and no intent, under ``NeverVerifyPreloadedImages``),
    ``allowlisted`` (a ``NeverVerifyAllowlistedImages`` entry matches) or ``neverVerify``
    (policy ``NeverVerify``).  The image manager adds ``pull`` (the registry was asked and
    accepted the pod's credentials) and ``featureDisabled`` (the gate is off: a present image
    is used as it is); ``""`` means no access was established.
    """

    NONE = ""
    PULL = "pull"
    SECRET_HASH = "secretHash"
    SECRET_COORDINATES = "secretCoordinates"
    SERVICE_ACCOUNT = "serviceAccount"
    NODE_WIDE = "nodeWide"
    PRELOADED = "preloaded"
    ALLOWLISTED = "allowlisted"
    NEVER_VERIFY = "neverVerify"
    FEATURE_DISABLED = "featureDisabled"

    def describe(self, credential: str = "") -> str:
        """A short human reason; ``credential`` says who pulled or matched, in words."""
        if self is VerifiedBy.PULL:
            return f"pulled with {credential or 'no credentials'}"
        if credential and self in _BY_RECORD_OF:
            return f"verified by record: {credential}{_BY_RECORD_OF[self]}"
        return _VERIFIED_BY_PROSE[self]


_VERIFIED_BY_PROSE: Final = {
    VerifiedBy.NONE: "",
    VerifiedBy.SECRET_HASH: "verified by record: secret hash match",
    VerifiedBy.SECRET_COORDINATES: "verified by record: secret coordinates match (rotated secret)",
    VerifiedBy.SERVICE_ACCOUNT: "verified by record: service account",
    VerifiedBy.NODE_WIDE: "verified by record: node-wide access",
    VerifiedBy.PRELOADED: "preloaded: on the node without a pull record, so not verified "
    "(NeverVerifyPreloadedImages)",
    VerifiedBy.ALLOWLISTED: "allowlisted: matches preloadedImagesVerificationAllowlist, so not "
    "verified (NeverVerifyAllowlistedImages)",
    VerifiedBy.NEVER_VERIFY: "not verified: policy NeverVerify",
    VerifiedBy.FEATURE_DISABLED: "already present (verification disabled)",
}

# What follows who matched, for the record matches that name the pod's credential.
_BY_RECORD_OF: Final = {
    VerifiedBy.SECRET_HASH: ", secret hash match",
    VerifiedBy.SECRET_COORDINATES: ", secret coordinates match (rotated secret)",
    VerifiedBy.SERVICE_ACCOUNT: "",
}

# Which exemption a policy that lets an image through without verification grants.
_EXEMPTION_OF_POLICY: Final = {
    VerificationPolicy.NEVER_VERIFY: VerifiedBy.NEVER_VERIFY,
    VerificationPolicy.NEVER_VERIFY_PRELOADED_IMAGES: VerifiedBy.PRELOADED,
    VerificationPolicy.NEVER_VERIFY_ALLOWLISTED_IMAGES: VerifiedBy.ALLOWLISTED,
}


class ListedImage(Protocol):
    """What start-up housekeeping needs of an image the runtime reports."""

    @property
    def id(self) -> str: ...

    @property
    def repo_tags(self) -> Sequence[str]: ...

    @property
    def repo_digests(self) -> Sequence[str]: ...


class ImageLister(Protocol):
    def list_images(self) -> Sequence[ListedImage]: ...


@frozen
class Protections:
    """Protections stricter than the kubelet's; each only ever turns "allowed" into "must verify".

    A :class:`PullManager` built with defaults has none and decides exactly as the kubelet does
    (so ``records explain`` predicts a real kubelet); :class:`~pullwarden.node.Node` turns them
    all on (:meth:`all`).

    ``any_spelling``
        The evidence that this node pulled an image -- a pull intent in flight or on disk --
        counts for every spelling of the intent's repository (``app:v1``, ``app@sha256:…``,
        ``docker.io/org/app``, ``index.docker.io/org/app`` are one repository) and for every
        name the runtime lists for the imageRef being checked (which covers a pod naming the
        image by its id).  An intent file that cannot be read makes every image without a
        record count as pulled.  Start-up housekeeping matches intents to the runtime's images
        by normalised name (``nginx`` is ``docker.io/library/nginx:latest``).  The kubelet
        compares raw strings only, so between the runtime's commit and the record write -- and
        for good after a crash in that window -- other spellings of a private image count as
        preloaded, which the default policy lets any pod use.

    ``keep_inherited_intents``
        An intent file this manager did not write (one on disk when it started: it is the only
        writer while it runs) is never deleted because a pull failed, and a successful pull
        deletes it only once every image known to have carried its name has a record.  The
        kubelet deletes it at the end of any pull of that image, after which what the
        interrupted pull committed counts as preloaded.
    """

    any_spelling: bool = False
    keep_inherited_intents: bool = False

    @classmethod
    def all(cls) -> Protections:
        """Every protection: what a node that must not leak images wants."""
        return cls(any_spelling=True, keep_inherited_intents=True)


_UNREADABLE_INTENT = "<an unreadable pull intent file>"


class Decision:
    """The answer of :meth:`PullManager.decide` and every fact it rests on.

    Every field is a read-only property worked out from what the evaluation found when it is
    read: the node reads ``must_pull`` and who verified, on every container start, and should not
    pay for the sentences (``reason``, ``policy_reason``) an operator reads.  The values are those
    of the moment of the decision (the record it read is never changed in place).  Two decisions
    with equal fields are equal and hash alike, and ``repr`` lists the fields, as a frozen
    dataclass does.  :meth:`PullManager.decide` builds them.

    The evaluation fills the private attributes in as it goes (the decision is its own
    scratch pad: one object per check).  What it does not reach keeps the class-level default,
    so a check pays only for the attributes its path sets.
    """

    # the fields, in the order repr, equality and hashing use
    _FIELDS: Final = (
        "must_pull",
        "result",
        "reason",
        "step",
        "image",
        "image_ref",
        "policy",
        "policy_reason",
        "pulled_by_kubelet",
        "record_found",
        "mapping_key",
        "mapping_keys",
        "matched_secret",
        "pod_secret",
        "matched_service_account",
        "verified_by",
        "credentials_requested",
        "record_update",
        "error",
        "intent_image",
    )
    __match_args__ = _FIELDS

    # What the evaluation found; the defaults are those of a check that has not started.
    _must_pull: bool = True
    _result: MustPullResult | None = None
    _step: Step = Step.NO_REF
    _pulled_by_kubelet: bool | None = None
    _intent_image: str = ""
    _record: ImagePulledRecord | None = None
    _key: str = ""
    _asked: bool = False
    _known_secret: ImagePullSecret | None = None
    _pod_secret: ImagePullSecret | None = None
    _by_hash: bool = False
    _account: ImagePullServiceAccount | None = None
    _update: ImagePullCredentials | None = None
    _error: Exception | None = None

    def __init__(self, image: str, image_ref: str, enforcer: PolicyEnforcer) -> None:
        self._image = image
        self._image_ref = image_ref
        self._enforcer = enforcer

    def _end(self, must_pull: bool, result: MustPullResult, step: Step) -> Decision:
        self._must_pull = must_pull
        self._result = result
        self._step = step
        return self

    @property
    def must_pull(self) -> bool:
        return self._must_pull

    @property
    def result(self) -> MustPullResult | None:
        """The metric label; None when no check was made (no imageRef)."""
        return self._result

    @property
    def reason(self) -> str:
        """The step the decision ended at, in words."""
        return _reason(self, self.policy_reason)

    @property
    def step(self) -> Step:
        return self._step

    @property
    def image(self) -> str:
        return self._image

    @property
    def image_ref(self) -> str:
        return self._image_ref

    @property
    def policy(self) -> str:
        return self._enforcer.policy.value

    @property
    def policy_reason(self) -> str:
        """Why the policy asks (or not) for verification; "" when no record was read."""
        if self._pulled_by_kubelet is None:
            return ""
        return self._enforcer.explain(self._image, self._pulled_by_kubelet)

    @property
    def pulled_by_kubelet(self) -> bool | None:
        return self._pulled_by_kubelet

    @property
    def record_found(self) -> bool:
        return self._record is not None

    @property
    def mapping_key(self) -> str:
        return self._key

    @property
    def mapping_keys(self) -> tuple[str, ...]:
        record = self._record
        return () if record is None else tuple(record.credential_mapping)

    @property
    def matched_secret(self) -> ImagePullSecret | None:
        """The recorded secret that matched."""
        return self._known_secret

    @property
    def pod_secret(self) -> ImagePullSecret | None:
        """The pod's secret that matched it."""
        return self._pod_secret

    @property
    def matched_service_account(self) -> ImagePullServiceAccount | None:
        return self._account

    @property
    def verified_by(self) -> VerifiedBy:
        """How access was granted; NONE when must_pull."""
        step = self._step
        if step is Step.SECRET:
            return VerifiedBy.SECRET_HASH if self._by_hash else VerifiedBy.SECRET_COORDINATES
        if step is Step.POLICY:
            return _EXEMPTION_OF_POLICY.get(self._enforcer.policy, VerifiedBy.NONE)
        return _VERIFIED_BY_STEP.get(step, VerifiedBy.NONE)

    @property
    def credentials_requested(self) -> bool:
        return self._asked

    @property
    def record_update(self) -> ImagePullCredentials | None:
        """What was (or would be) merged in."""
        return self._update

    @property
    def error(self) -> str:
        error = self._error
        return "" if error is None else str(error)

    @property
    def intent_image(self) -> str:
        """The intent, under another spelling, that made the image count as pulled by this node
        (Protections.any_spelling); "" when the kubelet's own evidence decided."""
        return self._intent_image

    def _values(self) -> tuple[object, ...]:
        return tuple(getattr(self, name) for name in self._FIELDS)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision) or other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._FIELDS)
        return f"{type(self).__qualname__}({fields})"


_VERIFIED_BY_STEP: Final = {
    Step.NODE_WIDE: VerifiedBy.NODE_WIDE,
    Step.SERVICE_ACCOUNT: VerifiedBy.SERVICE_ACCOUNT,
}

# Enum members looked up once: ``Step.SECRET`` costs a lookup through the enum's metaclass on
# every evaluation, a module global a dictionary probe.
_POLICY: Final = Step.POLICY
_POD_CREDENTIALS: Final = Step.POD_CREDENTIALS
_SECRET: Final = Step.SECRET
_SERVICE_ACCOUNT: Final = Step.SERVICE_ACCOUNT
_NO_MATCH: Final = Step.NO_MATCH
_READ_ERROR: Final = Step.READ_ERROR
_NO_RECORD: Final = Step.NO_RECORD
_BAD_NAME: Final = Step.BAD_NAME
_NO_NAME: Final = Step.NO_NAME
_NODE_WIDE: Final = Step.NODE_WIDE
_NO_CREDENTIALS: Final = Step.NO_CREDENTIALS


class PullManager:
    """Keeps the pull records of one node and decides when credentials must be verified.

    ``store`` is any :class:`~pullwarden.records.RecordStore`, used as it is: the cache is
    a store decorating another (:func:`open_kubelet_records` builds the kubelet's file store
    behind its write-through cache).  Its :meth:`~RecordStore.gauges` feed the
    ``kubelet_imagemanager_*`` gauges.  ``image_service`` is used for start-up housekeeping
    (pass ``None`` to skip it, as an operator tool reading someone else's node does) and, with
    ``protections.keep_inherited_intents``, to settle an inherited intent.  ``protections``
    (default: none, exactly the kubelet) are described in :class:`Protections`; they assume this
    manager is the only writer of the store's intents while it runs (one node per root).
    """

    def __init__(
        self,
        store: RecordStore,
        enforcer: PolicyEnforcer,
        image_service: ImageLister | None,
        *,
        lock_stripes: int = 10,
        clock: Clock | None = None,
        metrics: Metrics | None = None,
        protections: Protections | None = None,
    ) -> None:
        self.store = store
        self.enforcer = enforcer
        self.clock: Clock = clock or SystemClock()
        self.metrics = metrics or Metrics()
        self.protections = protections or Protections()
        self._lister = image_service
        self._intent_locks = StripedLocks(lock_stripes)
        self._pulled_locks = StripedLocks(lock_stripes)
        self._intent_counts: dict[str, int] = {}
        # Protections only: raw images with an intent in flight or on disk, by repository;
        # inherited intent files with the imageRefs known to carry their names.
        self._evidence: dict[str, set[str]] = {}
        self._evidence_lock = threading.Lock()
        self._intents_unreadable = False
        self._inherited: dict[str, set[str]] = {}
        self._watch_store()
        protected = self.protections.any_spelling or self.protections.keep_inherited_intents
        if image_service is None and not protected:
            return
        intents = self.store.list_intents()  # the one listing start-up needs
        for err in intents.errors:
            log.warning("start-up: skipping an unreadable pull intent: %s", err)
        remaining = intents.items
        if image_service is not None and remaining:
            remaining = self._initialize(image_service, remaining)
        if protected:
            self._index_intents(remaining, unreadable=not intents.ok)

    @property
    def store(self) -> RecordStore:
        return self._store

    @store.setter
    def store(self, store: RecordStore) -> None:
        self._store = store
        # The cache keeps each record ready for the image it last served (RecordHit); any
        # other store, a subclass of the cache included (it may read otherwise), is read as it is.
        self._read_hit: Callable[[str, str, Callable[[str], str]], RecordHit | None] = (
            store.pulled_record_hit if type(store) is CachedRecordStore else self._hit_of_store
        )

    def _watch_store(self) -> None:
        gauges = self.store.gauges()
        if gauges.intent_files is not None and gauges.record_files is not None:
            self.metrics.watch_disk(gauges.intent_files, gauges.record_files)
        if gauges.intents_usage_percent is not None and gauges.records_usage_percent is not None:
            self.metrics.watch_memory(gauges.intents_usage_percent, gauges.records_usage_percent)

    # -- intents (§5.1, §5.3) ----------------------------------------------------------------

    def record_pull_intent(self, image: str) -> None:
        """Note that a pull of ``image`` starts; pair it with one pulled/failed call."""
        with self._intent_locks.lock(image):
            try:
                self.store.write_intent(ImagePullIntent(image=image))
            except RecordError as err:
                raise RecordWriteError(f"failed to record image pull intent: {err}") from err
            self._intent_counts[image] = self._intent_counts.get(image, 0) + 1
            self._add_evidence(image)

    def record_image_pull_failed(self, image: str) -> None:
        """The pull of ``image`` failed (or was skipped): forget one in-flight intent.

        Call it only when the pull is known not to have committed anything; when that is not
        known, leave the intent alone: it keeps the image counted as pulled by this node, and
        the next start-up turns it into a record if the image is there.
        """
        self._decrement(image, settled=False)

    def _decrement(self, image: str, *, settled: bool) -> None:
        with self._intent_locks.lock(image):
            count = self._intent_counts.get(image, 0)
            if count > 1:
                self._intent_counts[image] = count - 1
                return
            if image in self._inherited and not settled:
                self._intent_counts.pop(image, None)  # ours ends; the inherited file stays
                return
            try:
                self.store.delete_intent(image)
            except RecordError as err:
                log.error("failed to remove the pull intent for %r: %s", image, err)
                return
            self._intent_counts.pop(image, None)
            self._inherited.pop(image, None)
            self._drop_evidence(image)

    def intents_in_flight(self, image: str) -> int:
        return self._intent_counts.get(image, 0)

    # -- evidence under other spellings (Protections.any_spelling) ---------------------------

    def _index_intents(self, intents: Sequence[ImagePullIntent], *, unreadable: bool) -> None:
        """Index the intents left on disk after housekeeping; unreadable ones make doubt."""
        self._intents_unreadable = unreadable
        for intent in intents:
            self._add_evidence(intent.image)
            if self.protections.keep_inherited_intents:
                self._inherited.setdefault(intent.image, set())

    def _add_evidence(self, image: str) -> None:
        repository = _repository(image)
        if repository is None or not self.protections.any_spelling:
            return
        with self._evidence_lock:
            self._evidence.setdefault(repository, set()).add(image)

    def _drop_evidence(self, image: str) -> None:
        repository = _repository(image)
        if repository is None:
            return
        with self._evidence_lock:
            images = self._evidence.get(repository)
            if images is not None:
                images.discard(image)
                if not images:
                    del self._evidence[repository]

    def _evidence_for(self, image: str, image_names: Sequence[str]) -> str:
        """An intent (or doubt) that makes ``image`` count as pulled by this node; "" if none."""
        if self._intents_unreadable:
            return _UNREADABLE_INTENT
        with self._evidence_lock:
            if not self._evidence:
                return ""
            for name in (image, *image_names):
                images = self._evidence.get(_repository(name) or "")
                if images:
                    return min(images)
        return ""

    # -- pulled records (§5.2, §5.5) ---------------------------------------------------------

    def record_image_pulled(
        self, image: str, image_ref: str, credentials: ImagePullCredentials | None
    ) -> None:
        """Remember that ``credentials`` pulled ``image`` as ``image_ref``, then drop the intent.

        When the record cannot be written the intent stays, so the image keeps counting as
        pulled by the kubelet and the next start-up turns the intent into a record.
        """
        try:
            self._write_pulled_record_if_changed(image, image_ref, credentials)
        except PullwardenError as err:
            log.error("failed to record the pull of %r as %s: %s", image, image_ref, err)
            return
        self._decrement(image, settled=image not in self._inherited or self._settle(image))

    def _write_pulled_record_if_changed(
        self, image: str, image_ref: str, credentials: ImagePullCredentials | None
    ) -> bool:
        """Merge ``credentials`` into the record of ``image_ref``; True when a file was written."""
        with self._pulled_locks.lock(image_ref):
            key = trim_tag_digest(image)  # InvalidReferenceError propagates
            try:
                record = self.store.get_pulled_record(image_ref)
            except RecordError as err:
                log.warning("replacing the unreadable record of %s: %s", image_ref, err)
                record = None
            now = self.clock.now()
            if record is None:
                mapping = {key: credentials} if credentials is not None else {}
                record = ImagePulledRecord(image_ref, now, mapping)
            else:
                merged = merge_credentials(record.credential_mapping.get(key), credentials)
                if merged is None:
                    return False
                record = replace(
                    record,
                    last_updated_time=now,
                    credential_mapping={**record.credential_mapping, key: merged},
                )
            self.store.write_pulled_record(record)
            return True

    # -- the decision (§5.4) -----------------------------------------------------------------

    def decide(
        self,
        image: str,
        image_ref: str,
        get_pod_credentials: Callable[[], PodCredentials],
        *,
        write: bool = True,
        image_names: Sequence[str] = (),
    ) -> Decision:
        """:meth:`must_attempt_image_pull` with its reasoning; ``write=False`` never writes."""
        return self._finish(
            self._evaluate(image, image_ref, get_pod_credentials, image_names), write
        )

    def must_attempt_image_pull(
        self,
        image: str,
        image_ref: str,
        get_pod_credentials: Callable[[], PodCredentials],
        *,
        image_names: Sequence[str] = (),
    ) -> bool:
        """True when the pod's credentials must be verified by pulling ``image`` again.

        ``get_pod_credentials`` is called at most once and only when the answer depends on it;
        an exception it raises is counted and re-raised (the caller fails the request).
        ``image_names`` are the names the runtime lists for ``image_ref`` (its repo tags and
        digests); only :attr:`Protections.any_spelling` looks at them.
        """
        v = self._evaluate(image, image_ref, get_pod_credentials, image_names)
        return self._finish(v, True)._must_pull

    def _evaluate(
        self,
        image: str,
        image_ref: str,
        get_pod_credentials: Callable[[], PodCredentials],
        image_names: Sequence[str],
    ) -> Decision:
        """The decision tree of spec §5.4, in order; every exit names its step.

        A secret to remember (``v._update``) is only noted here; :meth:`_finish` writes it.
        """
        v = Decision(image, image_ref, self.enforcer)
        if not image_ref:
            return v
        hit = self._read_evidence(v, image_names)
        pulled = v._pulled_by_kubelet
        if pulled is None:  # the records could not be read
            return v
        if not self.enforcer.require_credential_verification(image, pulled):
            return v._end(False, "credentialPolicyAllowed", _POLICY)
        if hit is None:
            return v._end(True, "mustAuthenticate", _NO_RECORD)
        if not self._needs_pod_credentials(v, hit):
            return v
        v._asked = True
        try:
            pod_secrets, pod_account = get_pod_credentials()
        except Exception as err:
            v._error = err
            return v._end(True, "error", _POD_CREDENTIALS)
        if self._match_secret(v, hit.secrets, pod_secrets):
            return v._end(False, "credentialRecordFound", _SECRET)
        if pod_account is not None and pod_account in hit.accounts:
            v._account = pod_account
            return v._end(False, "credentialRecordFound", _SERVICE_ACCOUNT)
        return v._end(True, "mustAuthenticate", _NO_MATCH)

    def _read_evidence(self, v: Decision, image_names: Sequence[str]) -> RecordHit | None:
        """Step 2: the record, and whether this node pulled the image.

        Sets ``v._pulled_by_kubelet``, or ends the decision on a read error (leaving it None).
        The record comes with the image's credentialMapping key and entry (:class:`RecordHit`),
        which steps 5 to 8 use; working the key out here, before the policy, changes nothing:
        trimming a name has no side effects, and a failure is reported at step 5.
        """
        image = v._image
        image_ref = v._image_ref
        with self._pulled_locks.lock(image_ref), self._intent_locks.lock(image):
            try:
                hit = self._read_hit(image_ref, image, trim_tag_digest)
                pulled = (
                    hit is not None
                    or self._intent_counts.get(image, 0) > 0
                    or self.store.intent_exists(image)
                )
                if not pulled and self.protections.any_spelling:
                    v._intent_image = self._evidence_for(image, image_names)
                    pulled = bool(v._intent_image)
            except RecordError as err:
                log.warning("cannot read the records of %s, verifying: %s", image_ref, err)
                v._error = err
                v._end(True, "error", _READ_ERROR)
                return None
        if hit is not None:
            v._record = hit.record
        v._pulled_by_kubelet = pulled
        return hit

    def _hit_of_store(
        self, image_ref: str, image: str, key_of: Callable[[str], str]
    ) -> RecordHit | None:
        """What :meth:`CachedRecordStore.pulled_record_hit` gives, for any other store."""
        record = self.store.get_pulled_record(image_ref)
        return None if record is None else RecordHit.of(record, image, key_of)

    @staticmethod
    def _needs_pod_credentials(v: Decision, hit: RecordHit) -> bool:
        """Steps 5-8: whether the record's entry for the image name needs the pod's credentials.

        When not, the decision has ended (no name, node-wide, nothing recorded).
        """
        if hit.error is not None:
            v._error = hit.error
            v._end(True, "error", _BAD_NAME)
            return False
        v._key = hit.key
        if hit.entry is None:
            v._end(True, "mustAuthenticate", _NO_NAME)
        elif hit.node_wide:
            v._end(False, "credentialRecordFound", _NODE_WIDE)
        elif not hit.secrets and not hit.accounts:
            v._end(True, "mustAuthenticate", _NO_CREDENTIALS)
        else:
            return True
        return False

    @staticmethod
    def _match_secret(
        v: Decision, cached: Sequence[ImagePullSecret], pod_secrets: Sequence[ImagePullSecret]
    ) -> bool:
        """Step 10: the first pod secret (pod order) matching a recorded one by hash or coordinates.

        A coordinate match counts only while the entry has room for more secrets; a match that
        teaches the record something (a rotated hash, new coordinates) is noted in ``v._update``.
        """
        room = len(cached) < MAX_SECRETS_PER_IMAGE
        for pod_secret in pod_secrets:
            pod_hash = pod_secret.credential_hash
            for known in cached:
                known_hash = known.credential_hash
                by_hash = known_hash == pod_hash and known_hash != ""
                # ImagePullSecret.same_coordinates, spelt out: this is the innermost loop
                by_coords = (
                    known.uid == pod_secret.uid
                    and known.namespace == pod_secret.namespace
                    and known.name == pod_secret.name
                )
                if not by_hash and not (by_coords and room):
                    continue
                if room and not (by_hash and by_coords):
                    v._update = ImagePullCredentials(kubernetes_secrets=(pod_secret,))
                v._known_secret, v._pod_secret, v._by_hash = known, pod_secret, by_hash
                return True
        return False

    def _finish(self, v: Decision, write: bool) -> Decision:
        """Count the check, remember a newly matched secret (``write``), re-raise a lookup error."""
        result = v._result
        if result is not None:
            self.metrics.mustpull_checks.inc(result)
        if write and v._update is not None:
            self._cache_secret(v._image, v._image_ref, v._update)
        if v._error is not None and v._asked:
            raise v._error
        return v

    def _cache_secret(self, image: str, image_ref: str, update: ImagePullCredentials) -> None:
        try:
            self._write_pulled_record_if_changed(image, image_ref, update)
        except PullwardenError as err:
            log.error("failed to remember a verified secret for %s: %s", image_ref, err)

    # -- pruning (§5.6) and start-up (§5.7) --------------------------------------------------

    def prune_unknown_records(
        self, image_refs: Iterable[str], until: datetime, *, dry_run: bool = False
    ) -> list[str]:
        """Delete records older than ``until`` whose imageRef is not in ``image_refs``.

        Returns the imageRefs whose records were (or, with ``dry_run``, would be) deleted.
        """
        keep = set(image_refs)
        with self._pulled_locks.all():
            listing = self.store.pulled_record_times(until)  # no record is built to be pruned
            for err in listing.errors:
                log.warning("prune: skipping an unreadable record: %s", err)
            doomed = [ref for ref, _ in listing.items if ref not in keep]  # all older than until
            if dry_run or not doomed:
                return doomed
            failed = self.store.delete_pulled_records(doomed)  # one batch
        for ref, err in failed.items():
            log.error("prune: failed to delete the record of %s: %s", ref, err)
        return [ref for ref in doomed if ref not in failed]

    def _initialize(
        self, image_service: ImageLister, intents: Sequence[ImagePullIntent]
    ) -> list[ImagePullIntent]:
        """Start-up housekeeping (§5.7): intents whose image is present become records.

        Every listed image carrying an intent's name gets a record without credentials (so it
        counts as pulled by this node and every pod must verify), then the intent goes.  Names
        match exactly, as in the kubelet, or by normalised name with ``any_spelling``.
        Returns the intents still on disk.
        """
        images = self._list_images(image_service)
        remaining: list[ImagePullIntent] = []
        for intent in intents:
            refs = self._carrying(images, intent.image)
            failed = self._record_unverified(intent.image, refs)
            if self.protections.keep_inherited_intents and (failed or not refs):
                self._inherited[intent.image] = failed
                remaining.append(intent)
                continue
            if len(failed) == len(refs):  # nothing matched, or no record could be written
                remaining.append(intent)
                continue
            try:
                self.store.delete_intent(intent.image)
            except PullwardenError as err:
                log.error("start-up: cannot remove the intent for %r: %s", intent.image, err)
                remaining.append(intent)
        return remaining

    def _settle(self, image: str) -> bool:
        """Record every image known to carry an inherited intent's name; True when all did."""
        refs = set(self._inherited.get(image, ()))
        if self._lister is not None:
            refs.update(self._carrying(self._list_images(self._lister), image))
        failed = self._record_unverified(image, sorted(refs))
        if failed:
            self._inherited[image] = failed
        return not failed

    @staticmethod
    def _list_images(image_service: ImageLister) -> Sequence[ListedImage]:
        try:
            return image_service.list_images()
        except Exception as err:
            log.error("cannot list the runtime's images: %s", err)
            return []

    def _carrying(self, images: Sequence[ListedImage], image: str) -> list[str]:
        """The ids of the listed images that carry the name ``image``."""
        if not self.protections.any_spelling:
            return [i.id for i in images if image in (*i.repo_digests, *i.repo_tags)]
        wanted = _name_keys(image)
        return [
            i.id
            for i in images
            if any(wanted & _name_keys(name) for name in (*i.repo_digests, *i.repo_tags))
        ]

    def _record_unverified(self, image: str, image_refs: Sequence[str]) -> set[str]:
        """A record without credentials for each imageRef; returns those that failed."""
        failed: set[str] = set()
        for ref in image_refs:
            try:
                self._write_pulled_record_if_changed(image, ref, None)
            except PullwardenError as err:
                log.error("cannot turn the intent for %r into a record of %s: %s", image, ref, err)
                failed.add(ref)
        return failed


def open_kubelet_records(kubelet_root: Path | str) -> CachedRecordStore:
    """The kubelet's record store for a root directory: the files behind the LRU cache."""
    return CachedRecordStore(FileRecordStore(kubelet_root))


def _repository(image: str) -> str | None:
    """The normalised repository of ``image`` (``nginx`` → ``docker.io/library/nginx``)."""
    try:
        return parse_image_name(image)[0]
    except PullwardenError:
        return None


def _name_keys(image: str) -> frozenset[str]:
    """The normalised names ``image`` stands for: ``repo:tag`` and/or ``repo@digest``."""
    try:
        repository, tag, digest = parse_image_name(image)
    except PullwardenError:
        return frozenset()
    keys = {f"{repository}:{tag}"} if tag else set()
    if digest:
        keys.add(f"{repository}@{digest}")
    return frozenset(keys)


def _reason(v: Decision, policy_reason: str) -> str:
    """The decision's step in words."""
    key = repr(v._key)
    step = v._step
    if step is Step.POLICY:
        return policy_reason
    if step is Step.NO_REF:
        return "the image is not present on the node (no imageRef)"
    if step is Step.READ_ERROR:
        return f"the pull records could not be read, so credentials must be verified: {v._error}"
    if step is Step.NO_RECORD:
        if v._intent_image == _UNREADABLE_INTENT:
            return (
                "a pull intent file cannot be read, so any image may have been pulled by this "
                "node, and nothing is recorded for this one"
            )
        if v._intent_image:
            return (
                f"a pull of {v._intent_image!r} (the same repository or image) is in flight or "
                "was interrupted, and no credentials are recorded for this image yet"
            )
        if v._pulled_by_kubelet:
            return (
                "a pull of this image is in flight or was interrupted (pull intent) and no "
                "credentials are recorded for it yet"
            )
        return "nothing is recorded for this image (it counts as preloaded)"
    if step is Step.BAD_NAME:
        return f"the image name cannot be trimmed: {v._error}"
    if step is Step.NO_NAME:
        return f"the record of {v._image_ref} has no credentials for the name {key}"
    if step is Step.NODE_WIDE:
        return f"the record says {key} was pulled with node-wide or anonymous access"
    if step is Step.NO_CREDENTIALS:
        return f"the record holds no credentials for {key}"
    if step is Step.POD_CREDENTIALS:
        return f"the pod's credentials could not be looked up: {v._error}"
    if step is Step.SECRET and v._known_secret is not None and v._pod_secret is not None:
        how = "credential hash" if v._by_hash else "coordinates (the secret was rotated)"
        return (
            f"pod secret {v._pod_secret.namespace}/{v._pod_secret.name} matches the recorded "
            f"secret {v._known_secret.namespace}/{v._known_secret.name} by {how}"
        )
    if step is Step.SERVICE_ACCOUNT and v._account is not None:
        return f"the pod's service account {v._account.namespace}/{v._account.name} pulled it"
    return (
        f"none of the pod's credentials is recorded for {key}; a pull (manifest only) must "
        "prove they can access the image"
    )


def merge_credentials(
    existing: ImagePullCredentials | None, new: ImagePullCredentials | None
) -> ImagePullCredentials | None:
    """The entry after merging ``new`` into ``existing``, or None when nothing changes (§5.5)."""
    if new is None or new.is_empty():
        return None
    if existing is None:
        return new
    if existing.node_pods_accessible:
        return None
    if new.node_pods_accessible:
        return ImagePullCredentials(node_pods_accessible=True)
    if new.kubernetes_secrets:
        by_coords = {s.sort_key(): s for s in existing.kubernetes_secrets}
        changed = False
        for secret in new.kubernetes_secrets:
            old = by_coords.get(secret.sort_key())
            if old is None or old.credential_hash != secret.credential_hash:
                by_coords[secret.sort_key()] = secret
                changed = True
        if not changed:
            return None
        secrets = tuple(sorted(by_coords.values(), key=ImagePullSecret.sort_key))
        return replace(existing, kubernetes_secrets=secrets)
    known = set(existing.kubernetes_service_accounts)
    added = [sa for sa in new.kubernetes_service_accounts if sa not in known]
    if not added:
        return None
    accounts = tuple(
        sorted(
            dict.fromkeys((*existing.kubernetes_service_accounts, *added)),
            key=ImagePullServiceAccount.sort_key,
        )
    )
    return replace(existing, kubernetes_service_accounts=accounts)
