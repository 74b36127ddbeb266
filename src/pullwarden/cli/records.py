"""``pullwarden records``: the operator's view of a kubelet's ``image_manager`` directory.

Nothing here writes unless ``--apply`` is given, and nothing here may open the door by accident:
``explain`` checks its image, policy and allowlist the way the kubelet does (an invalid input is
an error, never an answer), and ``prune`` checks every imageRef it is told to keep and refuses
to run without a keep list unless ``--all`` says so, since removing the record of an image still
on the node makes it count as preloaded.

``ls``, ``check`` and ``prune`` can also ask the container runtime (``--runtime-endpoint``, CRI
on a unix socket) which images the node has: which records are for images no longer there,
which images have no record (preloaded, so under the default policy any pod may use them), and
the keep list for ``prune``.  The runtime is only listed, never changed.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import Any

import click
import yaml
from click.core import ParameterSource

from pullwarden._gojson import format_rfc3339
from pullwarden.cli._common import die, runtime_endpoint_option
from pullwarden.cli._providers import credential_provider_options
from pullwarden.config import default_kubelet_config, load_kubelet_config
from pullwarden.credentials import load_credential_provider_config
from pullwarden.errors import (
    InvalidReferenceError,
    PullwardenError,
    RecordDecodeError,
    RecordError,
    RuntimeUnavailableError,
)
from pullwarden.imagemanager import CredentialLookup
from pullwarden.metrics import Metrics
from pullwarden.objects import derived_uid, load_secrets
from pullwarden.policy import DEFAULT_POLICY, FEATURE_GATE, PolicyEnforcer, VerificationPolicy
from pullwarden.pullmanager import Decision, PullManager
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    ImagePullSecret,
    ImagePullServiceAccount,
    RecordSummary,
    decode,
    scan,
    summarize,
)
from pullwarden.reference import apply_default_tag, parse_image_name
from pullwarden.runtime import CRIImageService, Image

DEFAULT_KUBELET_DIR = "/var/lib/kubelet"

kubelet_dir_option = click.option(
    "--kubelet-dir",
    "-d",
    type=click.Path(file_okay=False, path_type=Path),
    default=DEFAULT_KUBELET_DIR,
    show_default=True,
    help="The kubelet root directory (records live in its image_manager/ folder).",
)


def output_option(*choices: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return click.option(
        "-o",
        "--output",
        type=click.Choice(["text", *choices]),
        default="text",
        show_default=True,
        help="Output format.",
    )


def open_store(kubelet_dir: Path) -> FileRecordStore:
    if not (kubelet_dir / "image_manager").is_dir():
        die(f"{kubelet_dir}/image_manager does not exist (is --kubelet-dir the kubelet root?)")
    return FileRecordStore(kubelet_dir, migrate=False, create=False)


def emit(data: object, output: str) -> None:
    if output == "json":
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
    else:
        click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), nl=False)


# -- plain views of the records -------------------------------------------------------------


def credentials_view(c: ImagePullCredentials) -> dict[str, Any]:
    view: dict[str, Any] = {}
    if c.kubernetes_secrets:
        view["kubernetesSecrets"] = [
            {
                "uid": s.uid,
                "namespace": s.namespace,
                "name": s.name,
                "credentialHash": s.credential_hash,
            }
            for s in c.kubernetes_secrets
        ]
    if c.kubernetes_service_accounts:
        view["kubernetesServiceAccounts"] = [
            {"uid": a.uid, "namespace": a.namespace, "name": a.name}
            for a in c.kubernetes_service_accounts
        ]
    if c.node_pods_accessible:
        view["nodePodsAccessible"] = True
    return view


def record_view(r: ImagePulledRecord, path: str) -> dict[str, Any]:
    return {
        "file": path,
        "imageRef": r.image_ref,
        "lastUpdatedTime": format_rfc3339(r.last_updated_time),
        "credentialMapping": {k: credentials_view(v) for k, v in r.credential_mapping.items()},
    }


def record_json(
    r: ImagePulledRecord, path: str, present: bool | None, indent: str, quote: Callable[[str], str]
) -> RawJSON:
    """``record_view(r, path)`` (with ``"present"`` unless None) as ``json.dumps(indent=2)``
    writes it at ``indent``; the same text, without building the view (``records ls -o
    json``)."""
    i1 = indent + "  "
    i2 = i1 + "  "
    parts = [
        f'{{\n{i1}"file": {quote(path)},\n{i1}"imageRef": {quote(r.image_ref)},\n'
        f'{i1}"lastUpdatedTime": {quote(_rfc3339(r.last_updated_time))},\n'
        f'{i1}"credentialMapping": '
    ]
    mapping = r.credential_mapping
    if not mapping:
        parts.append("{}")
    else:
        sep = "{\n" + i2
        for name, creds in mapping.items():
            parts.append(sep + quote(name) + ": " + _credentials_json(creds, i2, quote))
            sep = ",\n" + i2
        parts.append("\n" + i1 + "}")
    if present is not None:
        parts.append(f',\n{i1}"present": {"true" if present else "false"}')
    parts.append("\n" + indent + "}")
    return RawJSON("".join(parts))


def _credentials_json(c: ImagePullCredentials, indent: str, quote: Callable[[str], str]) -> str:
    """``credentials_view(c)`` as ``json.dumps(indent=2)`` writes it at ``indent``."""
    i1 = indent + "  "
    i2 = i1 + "  "
    i3 = i2 + "  "
    fields = []
    if c.kubernetes_secrets:
        items = ",\n".join(
            f'{i2}{{\n{i3}"uid": {quote(s.uid)},\n{i3}"namespace": {quote(s.namespace)},\n'
            f'{i3}"name": {quote(s.name)},\n{i3}"credentialHash": {quote(s.credential_hash)}'
            f"\n{i2}}}"
            for s in c.kubernetes_secrets
        )
        fields.append(f'"kubernetesSecrets": [\n{items}\n{i1}]')
    if c.kubernetes_service_accounts:
        items = ",\n".join(
            f'{i2}{{\n{i3}"uid": {quote(a.uid)},\n{i3}"namespace": {quote(a.namespace)},\n'
            f'{i3}"name": {quote(a.name)}\n{i2}}}'
            for a in c.kubernetes_service_accounts
        )
        fields.append(f'"kubernetesServiceAccounts": [\n{items}\n{i1}]')
    if c.node_pods_accessible:
        fields.append('"nodePodsAccessible": true')
    if not fields:
        return "{}"
    return "{\n" + i1 + (",\n" + i1).join(fields) + "\n" + indent + "}"


class Output:
    """Standard output in large pieces: one ``click.echo`` per 64 KiB or so, not one per line.

    What reaches the stream is what ``click.echo`` of each line would have written (click's
    choice of stream and its handling of ANSI codes apply to each piece, and no code spans a
    line).  :meth:`flush` before writing anything else, to standard error in particular.
    """

    LIMIT = 1 << 16

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._size = 0

    def write(self, text: str) -> None:
        self._parts.append(text)
        self._size += len(text)
        if self._size >= self.LIMIT:
            self.flush()

    def line(self, text: str = "") -> None:
        self.write(text + "\n")

    def flush(self) -> None:
        if self._parts:
            click.echo("".join(self._parts), nl=False)
            self._parts.clear()
            self._size = 0


def table(rows: Sequence[Sequence[str]], indent: str = "", out: Output | None = None) -> None:
    """Columns two spaces apart, each as wide as its widest cell; trailing spaces dropped."""
    widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
    # One format per row: "{:<w}" pads exactly as str.ljust(w) does.
    form = (indent + "  ".join(f"{{:<{w}}}" for w in widths)).format
    own = out is None
    out = out or Output()
    line = out.line
    for row in rows:
        line(form(*row).rstrip())
    if own:
        out.flush()


# -- JSON, written as it is produced ----------------------------------------------------------
#
# ``write_json(out, value)`` writes exactly ``json.dumps(value, indent=2, ensure_ascii=...)``
# and a newline, for values made of dicts with string keys, lists (or iterators, at the two
# outer levels, so that a listing need not be held as views), strings, booleans, integers and
# None.  The two outer levels go to ``out`` piece by piece; each deeper value is assembled as
# one string.  (json's own encoder with ``indent`` is its pure-Python one, and builds the whole
# text before click.echo can write any of it.)


def write_json(out: Output, value: object, *, ensure_ascii: bool) -> None:
    quote = json.encoder.encode_basestring_ascii if ensure_ascii else json.encoder.encode_basestring
    _stream_json(out, value, "", quote, 2)
    out.write("\n")


class RawJSON(str):
    """JSON text already laid out as ``json.dumps(indent=2)`` lays it out where it goes."""


def _stream_json(
    out: Output, value: object, indent: str, quote: Callable[[str], str], levels: int
) -> None:
    if type(value) is RawJSON:
        out.write(value)
    elif levels and isinstance(value, dict) and value:
        inner = indent + "  "
        sep = "{\n" + inner
        for key, item in value.items():
            out.write(sep + quote(key) + ": ")
            _stream_json(out, item, inner, quote, levels - 1)
            sep = ",\n" + inner
        out.write("\n" + indent + "}")
    elif levels and isinstance(value, list | tuple | Iterator):
        inner = indent + "  "
        sep = "[\n" + inner
        for item in value:
            out.write(sep)
            _stream_json(out, item, inner, quote, levels - 1)
            sep = ",\n" + inner
        out.write("[]" if sep[0] == "[" else "\n" + indent + "]")
    else:
        parts: list[str] = []
        _json_value(value, indent, parts.append, quote)
        out.write("".join(parts))


def _json_value(
    value: object, indent: str, add: Callable[[str], object], quote: Callable[[str], str]
) -> None:
    if type(value) is str:
        add(quote(value))
    elif value is True:
        add("true")
    elif value is False:
        add("false")
    elif value is None:
        add("null")
    elif type(value) is int:
        add(int.__repr__(value))
    elif type(value) is dict:
        if not value:
            add("{}")
            return
        inner = indent + "  "
        sep = "{\n" + inner
        for key, item in value.items():
            if type(key) is not str:
                raise TypeError(f"keys must be strings, not {type(key).__name__}")
            if type(item) is str:  # most values: no call for them
                add(sep + quote(key) + ": " + quote(item))
            else:
                add(sep + quote(key) + ": ")
                _json_value(item, inner, add, quote)
            sep = ",\n" + inner
        add("\n" + indent + "}")
    elif type(value) is list or type(value) is tuple:
        if not value:
            add("[]")
            return
        inner = indent + "  "
        sep = "[\n" + inner
        for item in value:
            if type(item) is str:
                add(sep + quote(item))
            else:
                add(sep)
                _json_value(item, inner, add, quote)
            sep = ",\n" + inner
        add("\n" + indent + "]")
    else:
        raise TypeError(f"cannot write {type(value).__name__} as JSON")


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- the runtime's view: which images the node has ---------------------------------------------


def runtime_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return runtime_endpoint_option(
        f"ask it which images the node has, and {what}  The runtime is only listed, never changed."
    )


def runtime_images(endpoint: str) -> list[Image]:
    """Every image the runtime at ``endpoint`` has; exits with an error if it cannot say."""
    try:
        with CRIImageService(endpoint) as service:
            return service.list_images()
    except RuntimeUnavailableError as err:
        die(str(err))
    except PullwardenError as err:
        die(f"cannot list the images of the container runtime at {endpoint}: {err}")


class Unrecorded(StrEnum):
    """What an image the runtime has without a decodable record counts as."""

    PRELOADED = "preloaded"
    PULL_IN_PROGRESS = "pull in progress or interrupted"
    RECORD_UNREADABLE = "record unreadable"

    @property
    def note(self) -> str:
        """Its name in ``check -o json``: preloaded, pull-in-progress, record-unreadable."""
        return self.name.lower().replace("_", "-")

    @property
    def meaning(self) -> str:
        """What it means for the pods that use the image (one sentence)."""
        if self is Unrecorded.PRELOADED:
            return (
                "on the node with neither a pull record nor a pull intent (imported, pulled by "
                "another tool, or its record was removed): under the default policy "
                f"{DEFAULT_POLICY.value} any pod may use it."
            )
        if self is Unrecorded.PULL_IN_PROGRESS:
            return (
                "a pull intent names it, so it counts as pulled by the kubelet and, under the "
                "default policy, a pod must prove its credentials for it."
            )
        return (
            "its record file does not decode (see `records check`): a pod must prove its "
            "credentials for it."
        )


def name_keys(name: str) -> set[str]:
    """``name`` and the normalised names it stands for (``nginx``: ``docker.io/library/nginx:
    latest``), so that an intent matches the runtime's name for the image however it is spelt."""
    keys = {name}
    try:
        repository, tag, digest = parse_image_name(name)
    except InvalidReferenceError:
        return keys
    if tag:
        keys.add(f"{repository}:{tag}")
    if digest:
        keys.add(f"{repository}@{digest}")
    return keys


@dataclass(frozen=True, slots=True)
class UnrecordedImage:
    """An image the runtime has that no decodable record is for, and what that makes it."""

    image: Image
    status: Unrecorded

    def names(self) -> str:
        return ",".join((*self.image.repo_tags, *self.image.repo_digests)) or "<none>"

    def view(self) -> dict[str, Any]:
        return {
            "id": self.image.id,
            "repoTags": list(self.image.repo_tags),
            "repoDigests": list(self.image.repo_digests),
            "pendingIntent": self.status == Unrecorded.PULL_IN_PROGRESS,
            "recordUnreadable": self.status == Unrecorded.RECORD_UNREADABLE,
            "preloaded": self.status == Unrecorded.PRELOADED,
        }


@dataclass(frozen=True, slots=True)
class NodeImages:
    """The records and intents of a kubelet directory held against its runtime's image list."""

    endpoint: str
    present: frozenset[str]  # the imageRefs the runtime has
    absent: tuple[ImagePulledRecord, ...]  # records whose image the runtime no longer has
    unrecorded: tuple[UnrecordedImage, ...]

    @classmethod
    def compare(
        cls,
        endpoint: str,
        store: FileRecordStore,
        pulled: Sequence[ImagePulledRecord],
        intents: Sequence[ImagePullIntent],
    ) -> NodeImages:
        images = runtime_images(endpoint)
        present = frozenset(i.id for i in images)
        recorded = {r.image_ref for r in pulled}
        intent_keys = {key for i in intents for key in name_keys(i.image)}
        unrecorded = []
        for image in images:
            if image.id in recorded:
                continue
            if os.path.lexists(store.record_path(image.id)):  # there, but it did not decode
                status = Unrecorded.RECORD_UNREADABLE
            elif any(name_keys(n) & intent_keys for n in (*image.repo_tags, *image.repo_digests)):
                status = Unrecorded.PULL_IN_PROGRESS
            else:
                status = Unrecorded.PRELOADED
            unrecorded.append(UnrecordedImage(image, status))
        absent = sorted(
            (r for r in pulled if r.image_ref not in present), key=lambda r: r.image_ref
        )
        return cls(endpoint, present, tuple(absent), tuple(unrecorded))

    def counts(self, n_records: int) -> dict[str, int]:
        statuses = [u.status for u in self.unrecorded]
        return {
            "records": n_records,
            "recordsForAbsentImages": len(self.absent),
            "imagesOnNode": len(self.present),
            "imagesWithoutRecord": len(self.unrecorded),
            "preloaded": statuses.count(Unrecorded.PRELOADED),
            "pendingIntent": statuses.count(Unrecorded.PULL_IN_PROGRESS),
            "recordUnreadable": statuses.count(Unrecorded.RECORD_UNREADABLE),
        }

    def counts_line(self, n_records: int) -> str:
        """``12 records (2 for images no longer on the node); 3 images on the node without a
        record (preloaded)``."""
        statuses = [u.status for u in self.unrecorded]
        kinds = [(statuses.count(s), s) for s in Unrecorded]
        kinds = [(n, s) for n, s in kinds if n]
        detail = ""
        if len(kinds) == 1:
            detail = f" ({kinds[0][1]})"
        elif kinds:
            detail = " (" + ", ".join(f"{n} {s}" for n, s in kinds) + ")"
        return (
            f"{plural(n_records, 'record')} ({len(self.absent)} for images no longer on the "
            f"node); {plural(len(self.unrecorded), 'image')} on the node without a record" + detail
        )

    def meanings(self) -> list[str]:
        """One line for each status that occurs, saying what it means."""
        seen = {u.status for u in self.unrecorded}
        return [f"{s}: {s.meaning}" for s in Unrecorded if s in seen]


# -- commands -----------------------------------------------------------------------------------


@click.group()
def records() -> None:
    """Read, explain, audit, migrate and prune a kubelet's image pull records.

    Works on any kubelet root directory (default /var/lib/kubelet), including a copy taken from
    another node.  Only `migrate --apply` and `prune --apply` change anything.
    """


@records.command("ls")
@kubelet_dir_option
@runtime_option(
    "show which records are for images it no longer has (PRESENT) and which of its images "
    "have no record."
)
@output_option("json", "yaml")
def ls_command(kubelet_dir: Path, runtime_endpoint: str | None, output: str) -> None:
    """List pulled records (one row each) and pending pull intents.

    With --runtime-endpoint the table gains a PRESENT column (whether the runtime still has the
    record's imageRef), then come the runtime's images that have no record: preloaded (under
    the default policy any pod may use them), or named by a pull intent (pull in progress or
    interrupted), and a line of counts.  -o json/yaml then gives every record "present" and
    adds "imagesWithoutRecord" and "counts".
    """
    store = open_store(kubelet_dir)
    intents = store.list_intents()
    node = None
    n_records = 0
    pulled_errors: list[RecordError] = []
    if runtime_endpoint:
        listing = store.list_pulled_records()
        pulled_errors, n_records = listing.errors, len(listing.items)
        node = NodeImages.compare(runtime_endpoint, store, listing.items, intents.items)
        records: Iterable[ImagePulledRecord] = listing.items
    else:
        records = _records_noting_errors(store, pulled_errors)  # one at a time: none held
    out = Output()
    if output != "text":

        def views() -> Iterator[dict[str, Any]]:
            for r in records:
                view = record_view(r, store.record_path(r.image_ref))
                if node is not None:
                    view["present"] = r.image_ref in node.present
                yield view

        def views_json() -> Iterator[RawJSON]:  # the same, as the text json.dumps writes
            quote = json.encoder.encode_basestring
            for r in records:
                present = None if node is None else r.image_ref in node.present
                yield record_json(r, store.record_path(r.image_ref), present, "    ", quote)

        data: dict[str, Any] = {
            "pulledRecords": views_json() if output == "json" else views(),
            "pullIntents": [
                {"image": i.image, "file": store.intent_path(i.image)} for i in intents.items
            ],
            # Read once the records are written, when their errors are known.
            "errors": (str(e) for e in chain(pulled_errors, intents.errors)),
        }
        if node is not None:
            data["runtimeEndpoint"] = node.endpoint
            data["imagesWithoutRecord"] = [u.view() for u in node.unrecorded]
            data["counts"] = node.counts(n_records)
        if output == "json":
            write_json(out, data, ensure_ascii=False)
            out.flush()
        else:
            data["pulledRecords"] = list(data["pulledRecords"])
            data["errors"] = list(data["errors"])
            emit(data, output)
    else:
        header = ("IMAGE REF", "NAMES", "SECRETS", "SERVICE ACCOUNTS", "NODE-WIDE", "LAST UPDATED")
        summaries: Iterable[RecordSummary] = (
            map(summarize, records)
            if node is not None
            else _summaries_noting_errors(store, pulled_errors)  # no record built, none held
        )
        rows: list[tuple[str, ...]] = []
        for s in summaries:
            row: tuple[str, ...] = (
                s.image_ref,
                ",".join(sorted(s.names)) or "<none>",
                str(s.secrets),
                str(s.service_accounts),
                "yes" if s.node_wide else "no",
                s.last_updated,
            )
            if node is not None:
                row += ("yes" if s.image_ref in node.present else "no",)
            rows.append(row)
        rows.sort(key=_first)  # by imageRef
        rows.insert(0, header + (("PRESENT",) if node is not None else ()))
        table(rows, out=out)
        if intents.items:
            out.line("\nPENDING PULL INTENTS")
            for i in sorted(intents.items, key=lambda i: i.image):
                out.line(f"  {i.image}")
        if node is not None:
            if node.unrecorded:
                out.line(f"\nIMAGES ON THE NODE WITHOUT A RECORD ({node.endpoint})")
                table([(u.image.id, u.names(), u.status) for u in node.unrecorded], "  ", out)
                for line in node.meanings():
                    out.line(f"  {line}")
            out.line(f"\n{node.counts_line(n_records)}")
        out.flush()
        for err in chain(pulled_errors, intents.errors):
            click.echo(f"warning: {err}", err=True)
    if pulled_errors or intents.errors:
        sys.exit(1)


def _records_noting_errors(
    store: FileRecordStore, errors: list[RecordError]
) -> Iterator[ImagePulledRecord]:
    """The store's records one at a time, in file order; the files that do not decode go to
    ``errors``."""
    for item in store.iter_pulled_records():
        if isinstance(item, RecordError):
            errors.append(item)
        else:
            yield item


def _summaries_noting_errors(
    store: FileRecordStore, errors: list[RecordError]
) -> Iterator[RecordSummary]:
    """:func:`_records_noting_errors`, summed up (records in the exact form are not built)."""
    for item in store.iter_pulled_summaries():
        if isinstance(item, RecordError):
            errors.append(item)
        else:
            yield item


_first = itemgetter(0)


def _rfc3339(t: datetime) -> str:
    """:func:`format_rfc3339`, quicker for the whole-second UTC times records hold."""
    if t.tzinfo is UTC and not t.microsecond:
        return t.isoformat()[:-6] + "Z"  # ...+00:00; isoformat pads the year to four digits
    return format_rfc3339(t)


@records.command("show")
@click.argument("ref_or_file")
@kubelet_dir_option
@output_option("json", "yaml")
def show_command(ref_or_file: str, kubelet_dir: Path, output: str) -> None:
    """Show one record, by imageRef, by pulled image name, or by file path.

    REF_OR_FILE is tried as a file first, then as an imageRef, then as the raw image of an intent.
    """
    path = Path(ref_or_file)
    obj: ImagePulledRecord | ImagePullIntent | None = None
    where = ""
    if path.is_file():
        try:
            obj = decode(path.read_bytes())
        except (OSError, PullwardenError) as err:
            die(f"{path}: {err}", 1)
        where = str(path)
    else:
        store = open_store(kubelet_dir)
        try:
            obj = store.get_pulled_record(ref_or_file)
            where = store.record_path(ref_or_file)
            if obj is None and store.intent_exists(ref_or_file):
                obj, where = ImagePullIntent(ref_or_file), store.intent_path(ref_or_file)
        except PullwardenError as err:
            die(str(err), 1)
        if obj is None:
            die(f"no pulled record or pull intent for {ref_or_file!r} in {kubelet_dir}", 1)
    if isinstance(obj, ImagePullIntent):
        view: dict[str, Any] = {"file": where, "kind": "ImagePullIntent", "image": obj.image}
    else:
        view = {"kind": "ImagePulledRecord", **record_view(obj, where)}
    if output != "text":
        emit(view, output)
        return
    click.echo(f"File:          {view.pop('file')}")
    click.echo(f"Kind:          {view.pop('kind')}")
    if isinstance(obj, ImagePullIntent):
        click.echo(f"Image:         {obj.image}")
        return
    click.echo(f"ImageRef:      {obj.image_ref}")
    click.echo(f"Last updated:  {format_rfc3339(obj.last_updated_time)}")
    if not obj.credential_mapping:
        click.echo("Credentials:   none recorded (created by start-up housekeeping)")
    for name, creds in sorted(obj.credential_mapping.items()):
        click.echo(f"Name:          {name}")
        if creds.node_pods_accessible:
            click.echo("  node-wide:   every pod on the node may use it")
        for s in creds.kubernetes_secrets:
            shown = s.credential_hash[:12] + "…" if s.credential_hash else '""'
            click.echo(f"  secret:      {s.namespace}/{s.name} uid={s.uid} hash={shown}")
        for a in creds.kubernetes_service_accounts:
            click.echo(f"  svc account: {a.namespace}/{a.name} uid={a.uid}")


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
    try:
        base = load_kubelet_config(config_path) if config_path else default_kubelet_config()
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


@records.command("explain")
@kubelet_dir_option
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
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="The node's KubeletConfiguration (YAML or JSON): imagePullCredentialsVerificationPolicy "
    "and preloadedImagesVerificationAllowlist are taken from it.  --policy and --allowlist on "
    "the command line override the file's values.",
)
@click.option(
    "--policy",
    type=click.Choice([p.value for p in VerificationPolicy]),
    help="imagePullCredentialsVerificationPolicy; overrides --config's "
    f"[default: {DEFAULT_POLICY.value}].",
)
@click.option(
    "--allowlist",
    multiple=True,
    metavar="PATTERN",
    help="preloadedImagesVerificationAllowlist entry (repeatable); overrides --config's list.  "
    f"Only allowed with {VerificationPolicy.NEVER_VERIFY_ALLOWLISTED_IMAGES.value}.",
)
@output_option("json")
@credential_provider_options
def explain_command(
    kubelet_dir: Path,
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
    KUBELET_DIR/image_manager and writing nothing.  The image, the policy and the allowlist
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
    store = open_store(kubelet_dir)
    manager = PullManager(store, enforcer, None, metrics=Metrics())
    decision = manager.decide(image, image_ref, lambda: (pod_secrets, account), write=False)
    if output == "json":
        click.echo(
            json.dumps(
                {
                    "mustPull": decision.must_pull,
                    "result": decision.result,
                    "reason": decision.reason,
                }
                | ({"providers": notes} if provider_config is not None else {})
            )
        )
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


ABSENT_IMAGE = "absent-image"
ABSENT_MESSAGE = (
    "the image is no longer on the node; `records prune` or image GC removes this record"
)


@records.command("check")
@kubelet_dir_option
@runtime_option(
    f"report each record whose image it no longer has ({ABSENT_IMAGE}); its images without a "
    "record are listed as notes, not problems."
)
@output_option("json")
def check_command(kubelet_dir: Path, runtime_endpoint: str | None, output: str) -> None:
    """Decode every file; report undecodable, foreign, misnamed and stale temporary files.

    With --runtime-endpoint, also report every record whose imageRef the runtime no longer has
    (absent-image), and note the runtime's images that have no record (preloaded: under the
    default policy any pod may use them); -o json then prints {"problems": [...], "notes":
    [...]} instead of the list of problems.

    Exits 1 when a problem is found, 0 when every file is a record a kubelet would accept (and
    every record's image is on the node); notes do not count.
    """
    store = open_store(kubelet_dir)
    problems = [
        {"path": p.path, "problem": p.kind.value, "message": p.message} for p in scan(kubelet_dir)
    ]
    node = None
    if runtime_endpoint:
        node = NodeImages.compare(
            runtime_endpoint,
            store,
            store.list_pulled_records().items,
            store.list_intents().items,
        )
        problems += [
            {
                "path": store.record_path(r.image_ref),
                "problem": ABSENT_IMAGE,
                "message": ABSENT_MESSAGE,
                "imageRef": r.image_ref,
            }
            for r in node.absent
        ]
    out = Output()
    if output == "json":
        if node is None:
            write_json(out, problems, ensure_ascii=True)
        else:
            notes = [
                {**u.view(), "note": u.status.note, "message": u.status.meaning}
                for u in node.unrecorded
            ]
            write_json(out, {"problems": problems, "notes": notes}, ensure_ascii=True)
    else:
        for p in problems:
            what = f"{p['imageRef']}: " if "imageRef" in p else ""
            out.line(f"{p['problem']:<12} {p['path']}: {what}{p['message']}")
        if node is not None:
            for u in node.unrecorded:
                out.line(f"note: {u.image.id} ({u.names()}): no record, {u.status}")
            for line in node.meanings():
                out.line(f"note: {line}")
        if not problems:
            also = " and every record's image is on the node" if node is not None else ""
            out.line(f"ok: every file under {kubelet_dir}/image_manager decodes{also}")
    out.flush()
    if problems:
        sys.exit(1)


@records.command("migrate")
@kubelet_dir_option
@click.option(
    "--apply", is_flag=True, help="Rewrite the files (default: only show what would change)."
)
def migrate_command(kubelet_dir: Path, apply: bool) -> None:
    """Rewrite v1alpha1 records as v1beta1 keeping lastUpdatedTime, as a v1.34+ kubelet does.

    Without --apply this is a dry run.
    """
    store = open_store(kubelet_dir)
    report = store.migrate(dry_run=not apply)
    verb = "rewrote" if apply else "would rewrite"
    for item in report.items:
        renamed = f" as {item.target}" if item.target != item.source else ""
        click.echo(f"{verb} {item.source} ({item.from_version} {item.kind}){renamed}")
    failed = [e for e in report.errors if not isinstance(e, RecordDecodeError)]
    for err in report.errors:
        what = "left as it is" if isinstance(err, RecordDecodeError) else "failed"
        click.echo(f"{what}: {err}", err=True)
    click.echo(f"{len(report.items)} file(s) {'migrated' if apply else 'to migrate'}")
    if failed:
        sys.exit(1)


def parse_until(value: str) -> datetime:
    if value == "now":
        return datetime.now(UTC)
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise click.BadParameter(f"expected an RFC 3339 time or 'now', got {value!r}") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


IMAGE_REF_RE = re.compile(r"sha256:[0-9a-f]{64}")
IMAGE_REF_FORMAT = "sha256:<64 lowercase hex digits>"


def check_keep_ref(ref: str, where: str) -> str:
    """``ref`` if it is an image ID as a runtime reports it; otherwise exit with an error."""
    if IMAGE_REF_RE.fullmatch(ref) is None:
        die(f"{where} {ref!r}: expected an imageRef of the form {IMAGE_REF_FORMAT}")
    return ref


def keep_refs(keep: Iterable[str], keep_from: Any, remove_all: bool) -> set[str]:
    """Every imageRef to keep, each checked; exits when the keep list is missing or empty
    (unless ``remove_all``) or contradicts ``remove_all``."""
    refs = {check_keep_ref(ref, "--keep-image-ref") for ref in keep}
    if keep_from is not None:
        try:
            lines = list(keep_from)
        except (OSError, UnicodeDecodeError) as err:
            die(f"--keep-from {keep_from.name}: cannot read: {err}")
        for number, line in enumerate(lines, 1):
            if line.strip():
                refs.add(
                    check_keep_ref(line.strip(), f"--keep-from {keep_from.name}, line {number}:")
                )
    if remove_all:
        if keep or keep_from is not None:
            die(
                "--all removes every record older than --until; it cannot be combined with "
                "--keep-image-ref or --keep-from"
            )
        return refs
    if keep_from is not None and not refs:
        die(
            f"--keep-from {keep_from.name} lists no imageRef; pass --all if every record older "
            "than --until should be removed"
        )
    if not refs:
        die(
            "say which images are still on the node: --keep-image-ref REF (repeatable) or "
            "--keep-from FILE, one imageRef per line; or --all to remove every record older "
            "than --until"
        )
    return refs


PRELOADED_NOTE = (
    "if the image is still on the node it {} as preloaded: under the default policy "
    f"{DEFAULT_POLICY.value} any pod may use it"
)


@records.command("prune")
@kubelet_dir_option
@click.option(
    "--keep-image-ref",
    "keep",
    multiple=True,
    metavar="REF",
    help=f"An imageRef still on the node ({IMAGE_REF_FORMAT}): its record is kept (repeatable).",
)
@click.option(
    "--keep-from",
    type=click.File("r"),
    help="A file with one imageRef to keep per line ('-' for standard input).",
)
@click.option(
    "--all",
    "remove_all",
    is_flag=True,
    help="Keep nothing: every record older than --until is removed.",
)
@click.option(
    "--until",
    required=True,
    help="Only records last updated before this RFC 3339 time are removed ('now' for now).",
)
@runtime_option(
    "keep the records of exactly those (the keep list the kubelet's image GC hands its hook), "
    "instead of --keep-image-ref, --keep-from or --all.  From the environment it is ignored "
    "when one of those is given."
)
@click.option("--apply", is_flag=True, help="Delete the records (default: only list them).")
def prune_command(
    kubelet_dir: Path,
    keep: tuple[str, ...],
    keep_from: Any,
    remove_all: bool,
    until: str,
    runtime_endpoint: str | None,
    apply: bool,
) -> None:
    """Remove the records of images no longer on the node, as the image GC's hook does.

    Give every imageRef still on the node (--keep-image-ref, --keep-from), or --all, or let the
    container runtime say which images it has (--runtime-endpoint; --until is read before the
    runtime is asked).  Without --apply this is a dry run.  Removing the record of an image
    that is still on the node makes it count as preloaded: under the default policy any pod may
    then use it.
    """
    try:
        until_time = parse_until(until)
    except click.BadParameter as err:
        die(err.format_message())
    explicit = bool(keep) or keep_from is not None or remove_all
    if runtime_endpoint and explicit:
        source = click.get_current_context().get_parameter_source("runtime_endpoint")
        if source is not ParameterSource.ENVIRONMENT:
            die(
                "--runtime-endpoint takes the keep list from the container runtime; it cannot "
                "be combined with --keep-image-ref, --keep-from or --all"
            )
        runtime_endpoint = None  # the command line's keep list beats the environment's runtime
    if runtime_endpoint:
        store = open_store(kubelet_dir)
        refs = {image.id for image in runtime_images(runtime_endpoint)}
        n_images = plural(len(refs), "image")
        click.echo(f"keeping the records of the {n_images} the runtime at {runtime_endpoint} has")
        why = "its image is no longer on the node"
    else:
        refs = keep_refs(keep, keep_from, remove_all)
        store = open_store(kubelet_dir)
        why = PRELOADED_NOTE.format("now counts" if apply else "would count")
    manager = PullManager(store, PolicyEnforcer(), None, metrics=Metrics())
    removed = manager.prune_unknown_records(refs, until_time, dry_run=not apply)
    verb = "removed" if apply else "would remove"
    for ref in sorted(removed):
        click.echo(f"{verb} {ref}: {why}")
    click.echo(f"{len(removed)} record(s) {'removed' if apply else 'to remove'}")
