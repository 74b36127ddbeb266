"""``records explain`` and ``records who-can``: the kubelet's decision, asked by an operator.

Both answer with :meth:`pullwarden.pullmanager.PullManager.decide` over the records, never
writing: explain for the credentials of one pod, who-can for every credential a record holds
(each one asked of the same decision, alone), so the two cannot disagree.  This module is
imported only when one of them runs (`records ls` starts without the decision code).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import click

from pullwarden._values import frozen
from pullwarden.cli._common import die, emit, output_option
from pullwarden.cli._providers import credential_provider_options
from pullwarden.cli.records import (
    RECORDS_OUTPUT_HELP,
    Output,
    RecordFilter,
    image_option_value,
    open_store,
    root_option,
)
from pullwarden.errors import InvalidReferenceError, PullwardenError, RecordError
from pullwarden.metrics import Metrics
from pullwarden.policy import (
    DEFAULT_POLICY,
    FEATURE_GATE,
    PolicyEnforcer,
    VerificationPolicy,
    validate_kubelet_config,
)
from pullwarden.pullmanager import Decision, PullManager, Step
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePullSecret,
    ImagePullServiceAccount,
)
from pullwarden.reference import apply_default_tag, parse_image_name, trim_tag_digest

__all__ = ["explain_command", "who_can_command"]


def decision_manager(store: FileRecordStore, enforcer: PolicyEnforcer) -> PullManager:
    """The kubelet's decision over ``store``, as an operator tool asks it: no runtime, no
    housekeeping, no protections (exactly the kubelet), never writing (``decide(write=False)``)."""
    return PullManager(store, enforcer, None, metrics=Metrics())


# The policy inputs explain and who-can share.
config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The node's KubeletConfiguration (YAML or JSON): imagePullCredentialsVerificationPolicy "
    "and preloadedImagesVerificationAllowlist are taken from it.  --policy and --allowlist on "
    "the command line override the file's values.",
)
policy_option = click.option(
    "--policy",
    type=click.Choice([p.value for p in VerificationPolicy]),
    help="imagePullCredentialsVerificationPolicy; overrides --config's "
    f"[default: {DEFAULT_POLICY.value}].",
)
allowlist_option = click.option(
    "--allowlist",
    multiple=True,
    metavar="PATTERN",
    help="preloadedImagesVerificationAllowlist entry (repeatable); overrides --config's list.  "
    f"Only allowed with {VerificationPolicy.NEVER_VERIFY_ALLOWLISTED_IMAGES.value}.",
)


def parse_secret(value: str) -> ImagePullSecret:
    coords, sep, credential_hash = value.partition("=")
    parts = coords.split("/")
    if not sep or len(parts) != 3 or not all(parts):
        raise click.BadParameter(f"expected NAMESPACE/NAME/UID=HASH, got {value!r}")
    return ImagePullSecret(parts[2], parts[0], parts[1], credential_hash)


def parse_service_account(value: str) -> ImagePullServiceAccount:
    parts = value.split("/")
    if len(parts) != 3 or not all(parts):
        raise click.BadParameter(f"expected NAMESPACE/NAME/UID, got {value!r}")
    return ImagePullServiceAccount(parts[2], parts[0], parts[1])


def secrets_from_files(image: str, files: Sequence[Path]) -> list[ImagePullSecret]:
    """The pod secrets the kubelet would derive for ``image`` from these Secret manifests (§2.6).

    A manifest without ``metadata.uid`` gets the UID ``pullwarden run`` derives for it, so that
    explain matches the records of a pullwarden node; a note on standard error says so.
    """
    if not files:
        return []
    from pullwarden.imagemanager import CredentialLookup
    from pullwarden.objects import derived_uid, load_secrets

    loaded = [s for path in files for s in load_secrets(path)]
    for s in loaded:
        if s.uid == derived_uid("Secret", s.namespace, s.name):
            click.echo(
                f"note: Secret {s.namespace}/{s.name}: using UID {s.uid}, the one `pullwarden "
                "run` derives for a manifest without metadata.uid; a kubelet's records hold the "
                "cluster's UID (`kubectl get secret NAME -o yaml` shows it)",
                err=True,
            )
    secrets, _account = CredentialLookup(image, loaded, None, track_hashes=True).pod_credentials()
    return list(secrets)


def check_image(image: str) -> None:
    """Refuse an image name the kubelet would fail with InvalidImageName, as ``run`` does."""
    try:
        apply_default_tag(image)
    except InvalidReferenceError as err:
        die(f"--image {image!r}: invalid image name: {err}")


def explain_enforcer(
    config_path: Path | None, policy: str | None, allowlist: Sequence[str]
) -> PolicyEnforcer:
    """The policy explain answers for: the config file's (or the defaults), with the policy and
    allowlist given on the command line put in, validated as a whole as the kubelet would."""
    if config_path is None:
        # The defaults with the command line's two fields: the policy module's own check of
        # them (the one the configuration runs), without loading the configuration machinery.
        try:
            checked = validate_kubelet_config(True, policy, allowlist)
        except PullwardenError as err:
            die(f"--policy/--allowlist: {err}")
        assert checked is not None  # the gate is on
        return PolicyEnforcer(checked, allowlist)
    from pullwarden.config import load_kubelet_config

    try:
        base = load_kubelet_config(config_path)
    except PullwardenError as err:
        die(str(err))
    try:
        config = replace(
            base,
            verification_policy=VerificationPolicy(policy) if policy else base.verification_policy,
            allowlist=tuple(allowlist) if allowlist else base.allowlist,
        )
    except PullwardenError as err:
        where = (
            f"{config_path} with the command line's --policy/--allowlist: "
            if config_path
            else "--policy/--allowlist: "
        )
        die(f"{where}{err}")
    if config.verification_policy is None:
        die(
            f"{config_path} turns the {FEATURE_GATE} feature gate off: a kubelet then checks no "
            "credentials for images already on the node (any pod may use them); there is "
            "nothing to explain"
        )
    return PolicyEnforcer(config.verification_policy, config.allowlist)


def explain_text(d: Decision) -> list[str]:
    lines = [f"Image:      {d.image}", f"Image ref:  {d.image_ref}"]
    if d.policy:
        lines.append(f"Policy:     {d.policy_reason.removeprefix('policy ')}")
    if d.pulled_by_kubelet is not None:
        if d.record_found:
            names = ", ".join(d.mapping_keys) or "no names"
            lines.append(f"Record:     found; it holds credentials for: {names}")
        else:
            lines.append(
                "Record:     none"
                + (" (a pull intent exists)" if d.pulled_by_kubelet else " (preloaded image)")
            )
    if d.mapping_key:
        lines.append(f"Looked up:  {d.mapping_key}")
    verdict = "MUST PULL" if d.must_pull else "ALLOWED"
    lines.append(f"Decision:   {verdict} ({d.result or 'no check'})")
    lines.append(f"Why:        {d.reason}")
    if d.record_update is not None and d.record_update.kubernetes_secrets:
        s = d.record_update.kubernetes_secrets[0]
        lines.append(
            f"Record update: a kubelet would now remember secret {s.namespace}/{s.name} "
            "for this name (explain does not write it)"
        )
    if d.must_pull:
        lines.append(
            "A pull is needed to prove the pod's credentials can read this image: one manifest "
            "request to the registry; the layers already on the node are not downloaded again."
        )
    return lines


@click.command("explain")
@root_option
@click.option(
    "--image",
    required=True,
    help="The image exactly as written in the pod spec (checked as `pullwarden run` checks it).",
)
@click.option("--image-ref", required=True, help="The image id the runtime reports (imageRef).")
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="NS/NAME/UID=HASH",
    help="A pod pull secret and its credential hash (repeatable, in pod order).",
)
@click.option(
    "--secret-file",
    "secret_files",
    multiple=True,
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="A Secret manifest (YAML/JSON, e.g. `kubectl get secret -o yaml`) whose credentials "
    "for the image are hashed here and used as pod secrets (repeatable, before --secret).",
)
@click.option("--service-account", metavar="NS/NAME/UID", help="The pod's service account.")
@config_option
@policy_option
@allowlist_option
@output_option(help=RECORDS_OUTPUT_HELP)
@credential_provider_options
def explain_command(
    root: Path,
    image: str,
    image_ref: str,
    secrets: tuple[str, ...],
    secret_files: tuple[Path, ...],
    service_account: str | None,
    config_path: Path | None,
    policy: str | None,
    allowlist: tuple[str, ...],
    output: str,
    provider_config: Path | None,
    provider_bin_dir: Path | None,
    signing_key_file: Path | None,
    issuer: str | None,
) -> None:
    """Would a pod with these credentials be allowed to use this cached image, and why?

    Answers exactly as the kubelet's MustAttemptImagePull would, reading the records under
    ROOT/image_manager and writing nothing.  The image, the policy and the allowlist
    are checked as the kubelet checks them; anything it would refuse is an error here.

    With --image-credential-provider-config the pod's service account counts only if a
    provider with tokenAttributes matches the image (a kubelet offers a service account for
    verification only through such a plugin; node-wide plugin credentials never prove a pod's
    access).  The plugins are not run: explain assumes a matching one answers.
    """
    check_image(image)
    enforcer = explain_enforcer(config_path, policy, allowlist)
    try:
        pod_secrets = [*secrets_from_files(image, secret_files), *map(parse_secret, secrets)]
        account = parse_service_account(service_account) if service_account else None
    except click.BadParameter as err:
        die(err.format_message())
    except PullwardenError as err:
        die(str(err))
    notes: list[str] = []
    if provider_config is not None:
        account, notes = providers_for_explain(provider_config, image, account)
    store = open_store(root)
    decision = decision_manager(store, enforcer).decide(
        image, image_ref, lambda: (pod_secrets, account), write=False
    )
    if output != "table":
        doc = {
            "mustPull": decision.must_pull,
            "result": decision.result,
            "reason": decision.reason,
        } | ({"providers": notes} if provider_config is not None else {})
        if output == "json":
            click.echo(json.dumps(doc))  # one line, as it always was
        else:
            emit(doc, output)
        return
    for line in notes:
        click.echo(f"Provider:   {line}")
    for line in explain_text(decision):
        click.echo(line)


def providers_for_explain(
    path: Path, image: str, account: ImagePullServiceAccount | None
) -> tuple[ImagePullServiceAccount | None, list[str]]:
    """The service account a kubelet would offer for ``image`` with these providers, and one
    line per provider that matches the image."""
    from pullwarden.credentials import load_credential_provider_config

    try:
        config = load_credential_provider_config(path)
    except PullwardenError as err:
        die(str(err))
    repository, _tag, _digest = parse_image_name(apply_default_tag(image))
    matching = [p for p in config.providers if p.matches(repository)]
    notes = [
        f"{p.name} matches the image: "
        + (
            f"its credentials belong to the pod's service account (audience "
            f"{p.token_attributes.service_account_token_audience})"
            if p.token_attributes is not None
            else "node-wide credentials, which never prove a pod's access"
        )
        for p in matching
    ]
    if account is not None and not any(p.token_attributes is not None for p in matching):
        notes.append(
            f"no provider with tokenAttributes matches the image: the service account "
            f"{account.namespace}/{account.name} is not offered for verification"
        )
        account = None
    if not matching:
        notes.append("no provider matches the image")
    return account, notes


# -- who-can ------------------------------------------------------------------------------------


@frozen
class Holder:
    """A credential asked about for one imageRef, and the decision for a pod holding only it."""

    kind: str  # "secret" or "serviceAccount"
    namespace: str
    name: str
    uid: str
    decision: Decision
    rotated: Decision | None = None  # secrets: the same coordinates with another hash
    offered: bool = True  # service accounts: False when no provider would offer it

    def view(self) -> dict[str, Any]:
        view: dict[str, Any] = {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "allowed": not self.decision.must_pull,
            "result": self.decision.result,
            "reason": self.decision.reason,
        }
        if self.rotated is not None:
            view["rotatedAllowed"] = not self.rotated.must_pull
        return view

    def asked_view(self) -> dict[str, Any]:
        return {"kind": self.kind, **self.view()}

    @property
    def who(self) -> str:
        what = "secret" if self.kind == "secret" else "service account"
        return f"{what} {self.namespace}/{self.name} (uid {self.uid})"


@frozen
class RefAnswer:
    """who-can for one imageRef: a pod with no credentials (every pod), then each holder."""

    image_ref: str
    everyone: Decision
    mapping_key: str
    secrets: tuple[Holder, ...]
    accounts: tuple[Holder, ...]
    asked: tuple[Holder, ...]

    def view(self) -> dict[str, Any]:
        return {
            "imageRef": self.image_ref,
            "recordFound": self.everyone.record_found,
            "mappingKey": self.mapping_key,
            "everyPod": not self.everyone.must_pull,
            "result": self.everyone.result,
            "reason": self.everyone.reason,
            "secrets": [h.view() for h in self.secrets],
            "serviceAccounts": [h.view() for h in self.accounts],
            "asked": [h.asked_view() for h in self.asked],
        }


ROTATED_HASH = ""  # never equal to a recorded hash that counts (an empty one never matches)


def answer_for_ref(
    manager: PullManager,
    image: str,
    image_ref: str,
    asked_secrets: Sequence[ImagePullSecret],
    asked_accounts: Sequence[ImagePullServiceAccount],
    offer: Callable[[ImagePullServiceAccount], ImagePullServiceAccount | None],
) -> RefAnswer:
    """Ask the decision, for ``image`` at ``image_ref``, about a pod with no credentials and
    about a pod with only one credential, for each the record holds for the name and each one
    asked about.  ``offer(account)`` is the account a kubelet would offer (or None)."""

    def decide(
        secrets: Sequence[ImagePullSecret], account: ImagePullServiceAccount | None
    ) -> Decision:
        return manager.decide(image, image_ref, lambda: (secrets, account), write=False)

    def account_holder(a: ImagePullServiceAccount) -> Holder:
        offered = offer(a)
        decision = decide((), offered)
        return Holder(
            "serviceAccount", a.namespace, a.name, a.uid, decision, None, offered is not None
        )

    everyone = decide((), None)
    key = trim_tag_digest(image)
    entry: ImagePullCredentials | None = None
    if everyone.step is not Step.READ_ERROR:
        try:
            record = manager.store.get_pulled_record(image_ref)
        except RecordError:
            record = None
        entry = None if record is None else record.credential_mapping.get(key)
    secrets: list[Holder] = []
    accounts: list[Holder] = []
    if entry is not None:
        for s in entry.kubernetes_secrets:
            rotated = replace(s, credential_hash=ROTATED_HASH)
            decision, rotated_decision = decide((s,), None), decide((rotated,), None)
            secrets.append(Holder("secret", s.namespace, s.name, s.uid, decision, rotated_decision))
        accounts = [account_holder(a) for a in entry.kubernetes_service_accounts]
    asked = [
        Holder("secret", s.namespace, s.name, s.uid, decide((s,), None)) for s in asked_secrets
    ]
    asked += [account_holder(a) for a in asked_accounts]
    return RefAnswer(image_ref, everyone, key, tuple(secrets), tuple(accounts), tuple(asked))


def known_image_refs(store: FileRecordStore, image: str) -> tuple[list[str], bool]:
    """Every imageRef whose record holds credentials for ``image`` under any spelling, and
    whether every record file could be read (each one that could not is a warning)."""
    selected = RecordFilter(repository=image_option_value("IMAGE", image))
    listing = store.list_pulled_records()
    for err in listing.errors:
        click.echo(f"warning: {err}", err=True)
    refs = sorted(r.image_ref for r in listing.items if selected.record_matches(r))
    return refs, not listing.errors


@click.command("who-can")
@click.argument("image")
@root_option
@click.option(
    "--image-ref",
    metavar="REF",
    help="The image id the runtime reports (imageRef); default: every imageRef whose record "
    "names IMAGE (any spelling).  Give it for an image the node has without a record.",
)
@click.option(
    "--secret",
    "secrets",
    multiple=True,
    metavar="NS/NAME/UID=HASH",
    help="Also ask about this pull secret, as explain takes it (repeatable): is it allowed, "
    "or has it no record?",
)
@click.option(
    "--service-account",
    "service_accounts",
    multiple=True,
    metavar="NS/NAME/UID",
    help="Also ask about this service account (repeatable).",
)
@config_option
@policy_option
@allowlist_option
@output_option(help=RECORDS_OUTPUT_HELP)
@credential_provider_options
def who_can_command(
    image: str,
    root: Path,
    image_ref: str | None,
    secrets: tuple[str, ...],
    service_accounts: tuple[str, ...],
    config_path: Path | None,
    policy: str | None,
    allowlist: tuple[str, ...],
    output: str,
    provider_config: Path | None,
    provider_bin_dir: Path | None,
    signing_key_file: Path | None,
    issuer: str | None,
) -> None:
    """Who may use this cached image without a registry round-trip, and why?

    IMAGE is the image as a pod spec writes it (the record key is that spelling with tag and
    digest trimmed; another spelling of the same image has its own entry).  For each imageRef
    (--image-ref, or every one the records know for the image under any spelling) it says
    whether every pod on the node may use it (a node-wide record, or the policy exempts it:
    NeverVerify, a preloaded image under NeverVerifyPreloadedImages, an allowlisted one), then
    each pull secret and service account the record holds for IMAGE, and the ones asked about
    with --secret/--service-account, allowed or not.

    Each answer is the decision `records explain` makes for a pod holding only that credential
    (PullManager.decide, writing nothing).  A secret is recorded by its credential hash and its
    coordinates (namespace/name/uid): any secret with the same hash is allowed too, and so is a
    rotated one (same coordinates, another hash), by coordinates.  Same options for the policy
    and the providers as explain.

    Exits 1 when a record file could not be read (a warning names it): the answer may then
    miss an imageRef.
    """
    check_image(image)
    enforcer = explain_enforcer(config_path, policy, allowlist)
    try:
        asked_secrets = [parse_secret(s) for s in secrets]
        asked_accounts = [parse_service_account(a) for a in service_accounts]
    except click.BadParameter as err:
        die(err.format_message())
    if image_ref is not None and not image_ref:
        die("--image-ref: expected an imageRef, got an empty string")
    notes: list[str] = []
    offered: dict[ImagePullServiceAccount, ImagePullServiceAccount | None] = {}

    def offer(account: ImagePullServiceAccount) -> ImagePullServiceAccount | None:
        if provider_config is None:
            return account
        if account not in offered:
            offered[account], more = providers_for_explain(provider_config, image, account)
            notes.extend(n for n in more if n not in notes)
        return offered[account]

    if provider_config is not None:
        _, notes = providers_for_explain(provider_config, image, None)
    store = open_store(root)
    if image_ref is None:
        refs, complete = known_image_refs(store, image)
    else:
        refs, complete = [image_ref], True
    manager = decision_manager(store, enforcer)
    answers = [
        answer_for_ref(manager, image, ref, asked_secrets, asked_accounts, offer) for ref in refs
    ]
    doc: dict[str, Any] = {
        "image": image,
        "policy": enforcer.policy.value,
        "imageRefs": [a.view() for a in answers],
    }
    if provider_config is not None:
        doc["providers"] = notes
    if output != "table":
        emit(doc, output)
    else:
        who_can_text(image, enforcer, notes, answers)
    if not complete:
        sys.exit(1)  # a record that could not be read may hold more


def who_can_text(
    image: str, enforcer: PolicyEnforcer, notes: Sequence[str], answers: Sequence[RefAnswer]
) -> None:
    out = Output()
    for line in notes:
        out.line(f"Provider: {line}")
    out.line(f"Image:    {image} (record key {trim_tag_digest(image)!r})")
    out.line(f"Policy:   {enforcer.policy.value}")
    if not answers:
        out.line(
            f"No record holds credentials for {image} under any spelling: give --image-ref for "
            "an image the node has without a record (preloaded)."
        )
    for a in answers:
        out.line("")
        out.line(f"{a.image_ref}:")
        for line in ref_text(a):
            out.line("  " + line)
    out.flush()


def ref_text(a: RefAnswer) -> list[str]:
    if a.everyone.must_pull:
        lines = [
            f"every pod on the node: no; a pod with none of these credentials must pull: "
            f"{a.everyone.reason}"
        ]
    else:
        lines = [f"every pod on the node: yes: {a.everyone.reason}"]
    for h in a.secrets:
        if h.decision.must_pull:
            lines.append(f"{h.who}: recorded, but must pull: {h.decision.reason}")
            continue
        lines.append(f"{h.who}: yes: {h.decision.reason}")
        if h.rotated is not None and not h.rotated.must_pull:
            lines.append(
                "  rotated (same namespace/name/uid, another hash): yes, by coordinates; a "
                "kubelet then records the new hash"
            )
    if a.secrets and any(not h.decision.must_pull for h in a.secrets):
        lines.append(
            "any other secret holding the same credentials (a recorded hash): yes, by hash"
        )
    for h in a.accounts:
        if h.decision.must_pull:
            why = "no provider with tokenAttributes offers it" if not h.offered else ""
            lines.append(f"{h.who}: recorded, but must pull: {why or h.decision.reason}")
        else:
            lines.append(f"{h.who}: yes: {h.decision.reason}")
    for h in a.asked:
        if h.decision.must_pull:
            lines.append(f"asked, {h.who}: no, must pull: {h.decision.reason}")
        else:
            lines.append(f"asked, {h.who}: yes: {h.decision.reason}")
    return lines
