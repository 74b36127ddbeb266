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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from enum import StrEnum
from itertools import chain
from operator import itemgetter
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from click.core import ParameterSource

from pullwarden._gojson import format_rfc3339
from pullwarden._values import frozen
from pullwarden.cli._common import (
    default_root,
    die,
    emit,
    output_option,
    runtime_endpoint_option,
    yaml_text,
)
from pullwarden.cli._lazy import LazyGroup
from pullwarden.errors import (
    InvalidReferenceError,
    PullwardenError,
    RecordDecodeError,
    RecordError,
    RuntimeUnavailableError,
)
from pullwarden.records import (
    FileRecordStore,
    ImagePullCredentials,
    ImagePulledRecord,
    ImagePullIntent,
    RecordSummary,
    decode,
    scan,
    summarize,
)
from pullwarden.reference import parse_image_name, parse_normalized

if TYPE_CHECKING:
    from pullwarden.runtime import Image

# Only what ls, show and check need is imported above: `records ls` must start fast.  The
# decision code (pullmanager, policy, credentials, the metrics behind them), the container
# runtime's client and yaml are imported by the commands and functions that use them; explain
# and who-can live in pullwarden.cli._records_decide, imported when one of them runs.

KUBELET_HINT = "pass --root DIR, or -d /var/lib/kubelet for a kubelet"

root_option = click.option(
    "--root",
    "--kubelet-dir",
    "-d",
    "root",
    type=click.Path(path_type=Path),
    metavar="DIR",
    envvar="PULLWARDEN_ROOT",
    show_envvar=True,
    default=default_root,
    show_default="$XDG_DATA_HOME/pullwarden/node, as `pullwarden run`",
    help="The node root, as `pullwarden run --root` takes it: records in DIR/image_manager.  "
    "For a kubelet: -d /var/lib/kubelet.",
)


RECORDS_OUTPUT_HELP = "Output format (yaml is the json document as YAML; text is table's old name)."


def open_store(root: Path) -> FileRecordStore:
    """The records under ``root``, read only.  A root that is not a directory is an error; a
    root with no image_manager/ yet holds no records (nothing is created either way)."""
    if not root.is_dir():
        what = "does not exist" if not os.path.lexists(root) else "is not a directory"
        die(f"{root} {what}, so {root}/image_manager does not exist; {KUBELET_HINT}")
    return FileRecordStore(root, migrate=False, create=False)


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


# -- YAML, written as it is produced ----------------------------------------------------------
#
# ``write_yaml(out, document)`` writes exactly ``yaml_text(document)``, what ``emit`` writes for
# -o yaml, for a mapping whose keys are plain words (``pulledRecords``: simple keys) and whose
# values are what yaml_text takes, or iterators (so that a listing need not be held as views).
# Each entry is dumped on its own, ``yaml_text({key: value})``, and an iterator's items one by
# one: ``yaml_text({key: [first]})``, then ``yaml_text([item])`` for each further item (an empty
# one is ``yaml_text({key: []})``).  The pieces add up to the whole dump because the emitter
# writes a top-level block mapping key by key at column 0, each entry ending where the next
# key's line break begins, and writes a sequence under such a key without indentation, its
# ``- `` at column 0 and each item's indentation 2, exactly as it writes a sequence that is the
# whole document: an item starts at the same column with the same indentation in both, so it
# is quoted, wrapped at the width and indented alike.  The values must not share a list or a
# dict (the whole dump would write the second one as an alias of the first; the views here are
# built afresh each).  tests/cli/test_records_yaml_stream.py holds it to the whole dump.


_END = object()


def write_yaml(out: Output, document: Mapping[str, object]) -> None:
    for key, value in document.items():
        if not isinstance(value, Iterator):
            out.write(yaml_text({key: value}))
            continue
        first = next(value, _END)
        if first is _END:
            out.write(yaml_text({key: []}))
            continue
        out.write(yaml_text({key: [first]}))
        for item in value:
            out.write(yaml_text([item]))


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# -- the runtime's view: which images the node has ---------------------------------------------


def runtime_option(what: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    return runtime_endpoint_option(
        f"ask it which images the node has, and {what}  The runtime is only listed, never changed."
    )


def runtime_images(endpoint: str) -> list[Image]:
    """Every image the runtime at ``endpoint`` has; exits with an error if it cannot say."""
    from pullwarden.runtime import CRIImageService

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
            from pullwarden.policy import DEFAULT_POLICY

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


@frozen
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


@frozen
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

# name → (module, attribute, one line of help): the commands built on the decision code, imported
# only when one of them runs (a test keeps each line equal to the command's own first help line).
DECISION_COMMANDS: dict[str, tuple[str, str, str]] = {
    "explain": (
        "pullwarden.cli._records_decide",
        "explain_command",
        "Would a pod with these credentials be allowed to use this cached image, and why?",
    ),
    "who-can": (
        "pullwarden.cli._records_decide",
        "who_can_command",
        "Who may use this cached image without a registry round-trip, and why?",
    ),
}


class RecordsGroup(LazyGroup):
    """The ``records`` group: explain and who-can are imported when they run."""

    lazy = DECISION_COMMANDS


@click.group(cls=RecordsGroup)
def records() -> None:
    """Read, explain, audit, migrate and prune a kubelet's image pull records.

    \b
    Every subcommand reads ROOT/image_manager, ROOT being
      --root DIR            a pullwarden node root, as `pullwarden run --root`;
      -d/--kubelet-dir DIR  the same option, for a kubelet: -d /var/lib/kubelet;
      by default $PULLWARDEN_ROOT, else $XDG_DATA_HOME/pullwarden/node
      (~/.local/share/pullwarden/node), the default root of `pullwarden run`.

    So `pullwarden run -f pods.yaml` then `pullwarden records ls` lists what the run
    recorded.  A copy of another node's directory works as well.

    Only `migrate --apply` and `prune --apply` change anything.  Everything else (and those
    two without --apply) creates no file or directory: a ROOT that does not exist is an
    error, and a ROOT without image_manager/ yet holds no records.
    """


def normalized_name(image: str) -> str | None:
    """The repository ``image`` stands for (``nginx:1.2`` → ``docker.io/library/nginx``), None
    when it is not an image reference: how ``--image`` compares any spelling with the record
    keys (themselves names as the pod spelt them, tag and digest trimmed)."""
    try:
        return parse_normalized(image).name
    except InvalidReferenceError:
        return None


def image_option_value(option: str, image: str) -> str:
    """The repository of an image given as ``option``; exits when it is not an image name."""
    try:
        return parse_normalized(image).name
    except InvalidReferenceError as err:
        die(f"{option} {image!r}: invalid image name: {err}")


@frozen
class RecordFilter:
    """``records ls --namespace/--secret/--image``: a record matches when one of its image
    names (credential mapping entries) meets every filter given."""

    namespace: str | None = None
    secret: tuple[str, str] | None = None  # (namespace, name)
    repository: str | None = None

    @property
    def active(self) -> bool:
        return self.namespace is not None or self.secret is not None or self.repository is not None

    def entry_matches(self, name: str, c: ImagePullCredentials) -> bool:
        if self.repository is not None and normalized_name(name) != self.repository:
            return False
        if self.namespace is not None:
            ns = self.namespace
            if not any(s.namespace == ns for s in c.kubernetes_secrets) and not any(
                a.namespace == ns for a in c.kubernetes_service_accounts
            ):
                return False
        if self.secret is not None:
            coords = self.secret
            if not any((s.namespace, s.name) == coords for s in c.kubernetes_secrets):
                return False
        return True

    def record_matches(self, r: ImagePulledRecord) -> bool:
        return any(self.entry_matches(n, c) for n, c in r.credential_mapping.items())

    def intent_matches(self, i: ImagePullIntent) -> bool:
        """An intent names an image but no credentials: only --image can select it."""
        if self.namespace is not None or self.secret is not None:
            return False
        return self.repository is None or normalized_name(i.image) == self.repository

    def image_matches(self, names: Sequence[str]) -> bool:
        """For the runtime's images without a record: --image against any of their names."""
        if self.repository is None:
            return True
        return any(normalized_name(n) == self.repository for n in names)


def parse_record_filter(
    namespace: str | None, secret: str | None, image: str | None
) -> RecordFilter:
    coords = None
    if secret is not None:
        parts = secret.split("/")
        if len(parts) != 2 or not all(parts):
            die(f"--secret {secret!r}: expected NAMESPACE/NAME")
        coords = (parts[0], parts[1])
    if namespace is not None and not namespace:
        die("--namespace: expected a namespace, got an empty string")
    repository = image_option_value("--image", image) if image is not None else None
    return RecordFilter(namespace, coords, repository)


def short_hash(credential_hash: str) -> str:
    return credential_hash[:8] if credential_hash else '""'


def wide_cells(r: ImagePulledRecord) -> tuple[str, str]:
    """The SECRETS and SERVICE ACCOUNTS cells of ``ls -o wide``: each one once, by namespace/
    name, a secret with its credential hash shortened to 8 digits."""
    secrets: dict[str, None] = {}
    accounts: dict[str, None] = {}
    for c in r.credential_mapping.values():
        for s in c.kubernetes_secrets:
            secrets[f"{s.namespace}/{s.name}({short_hash(s.credential_hash)})"] = None
        for a in c.kubernetes_service_accounts:
            accounts[f"{a.namespace}/{a.name}"] = None
    return ",".join(secrets) or "-", ",".join(accounts) or "-"


@records.command("ls")
@root_option
@runtime_option(
    "show which records are for images it no longer has (PRESENT) and which of its images "
    "have no record."
)
@click.option(
    "--namespace",
    metavar="NS",
    help="Only records with a pull secret or service account in namespace NS.",
)
@click.option(
    "--secret",
    "secret_filter",
    metavar="NS/NAME",
    help="Only records that name this pull secret (any UID, any credential hash).",
)
@click.option(
    "--image",
    "image_filter",
    metavar="NAME",
    help="Only records and pull intents for this image, however it is spelt (nginx, "
    "docker.io/library/nginx:1.25 ...: names are compared normalised, tag and digest dropped).",
)
@output_option("wide", help=RECORDS_OUTPUT_HELP)
def ls_command(
    root: Path,
    runtime_endpoint: str | None,
    namespace: str | None,
    secret_filter: str | None,
    image_filter: str | None,
    output: str,
) -> None:
    """List pulled records (one row each) and pending pull intents.

    --namespace, --secret and --image select records: all of them must hold for one image name
    of the record (one credential mapping entry), and the whole record is listed.  Pull intents
    carry no credentials: --image selects them too, --namespace or --secret leaves none.

    -o wide adds each record's secrets (NS/NAME, credential hash cut to 8 digits), service
    accounts and file.

    With --runtime-endpoint the table gains a PRESENT column (whether the runtime still has the
    record's imageRef), then come the runtime's images that have no record: preloaded (under
    the default policy any pod may use them), or named by a pull intent (pull in progress or
    interrupted), and a line of counts (of the whole node, whatever the filters; the images
    without a record are selected by --image only).  -o json/yaml then gives every record
    "present" and adds "imagesWithoutRecord" and "counts".
    """
    selected = parse_record_filter(namespace, secret_filter, image_filter)
    store = open_store(root)
    intents = store.list_intents()
    intent_items = [i for i in intents.items if selected.intent_matches(i)]
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
    if selected.active:
        records = filter(selected.record_matches, records)
    unrecorded = (
        []
        if node is None
        else [u for u in node.unrecorded if selected.image_matches(_image_names(u.image))]
    )
    out = Output()
    if output in ("json", "yaml"):

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
                {"image": i.image, "file": store.intent_path(i.image)} for i in intent_items
            ],
            # Read once the records are written, when their errors are known.
            "errors": (str(e) for e in chain(pulled_errors, intents.errors)),
        }
        if node is not None:
            data["runtimeEndpoint"] = node.endpoint
            data["imagesWithoutRecord"] = [u.view() for u in unrecorded]
            data["counts"] = node.counts(n_records)
        if output == "json":
            write_json(out, data, ensure_ascii=False)
        else:
            write_yaml(out, data)
        out.flush()
    else:
        wide = output == "wide"
        header: tuple[str, ...] = (
            "IMAGE REF",
            "NAMES",
            "SECRETS",
            "SERVICE ACCOUNTS",
            "NODE-WIDE",
            "LAST UPDATED",
        )
        rows: list[tuple[str, ...]] = []
        if wide:
            for r in records:
                s = summarize(r)
                row: tuple[str, ...] = (s.image_ref, ",".join(sorted(s.names)) or "<none>")
                row += wide_cells(r)
                row += ("yes" if s.node_wide else "no", s.last_updated)
                if node is not None:
                    row += ("yes" if s.image_ref in node.present else "no",)
                rows.append((*row, store.record_path(r.image_ref)))
        else:
            summaries: Iterable[RecordSummary] = (
                map(summarize, records)
                if node is not None or selected.active
                else _summaries_noting_errors(store, pulled_errors)  # no record built, none held
            )
            for s in summaries:
                row = (
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
        rows.insert(
            0,
            header + (("PRESENT",) if node is not None else ()) + (("FILE",) if wide else ()),
        )
        table(rows, out=out)
        if intent_items:
            out.line("\nPENDING PULL INTENTS")
            pending = sorted(intent_items, key=lambda i: i.image)
            if wide:
                table([(i.image, store.intent_path(i.image)) for i in pending], "  ", out)
            else:
                for i in pending:
                    out.line(f"  {i.image}")
        if node is not None:
            if unrecorded:
                out.line(f"\nIMAGES ON THE NODE WITHOUT A RECORD ({node.endpoint})")
                table([(u.image.id, u.names(), u.status) for u in unrecorded], "  ", out)
                for line in node.meanings():
                    out.line(f"  {line}")
            out.line(f"\n{node.counts_line(n_records)}")
        out.flush()
        for err in chain(pulled_errors, intents.errors):
            click.echo(f"warning: {err}", err=True)
    if pulled_errors or intents.errors:
        sys.exit(1)


def _image_names(image: Image) -> tuple[str, ...]:
    return (*image.repo_tags, *image.repo_digests)


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


# ``show``'s digest prefix: sha256:<hex> or bare hex, at least 4 digits.
DIGEST_PREFIX_RE = re.compile(r"(?:sha256:)?([0-9a-f]{4,64})")

Found = tuple[ImagePulledRecord | ImagePullIntent, str]  # an object and its file


def find_for_show(store: FileRecordStore, arg: str) -> tuple[list[Found], bool]:
    """What ``records show ARG`` shows, and whether ARG named one object (False: an image name,
    which may match several).  Exits 2 on an ambiguous digest prefix."""
    record = store.get_pulled_record(arg)
    if record is not None:
        return [(record, store.record_path(arg))], True
    if store.intent_exists(arg):
        return [(ImagePullIntent(arg), store.intent_path(arg))], True
    listing = store.list_pulled_records()
    for err in listing.errors:
        click.echo(f"warning: {err}", err=True)
    prefix = DIGEST_PREFIX_RE.fullmatch(arg)
    if prefix is not None:
        start = "sha256:" + prefix.group(1)
        hits = sorted((r for r in listing.items if r.image_ref.startswith(start)), key=_ref)
        if len(hits) > 1:
            refs = ", ".join(r.image_ref for r in hits)
            die(f"{arg!r} is the start of {len(hits)} imageRefs ({refs}): give more digits")
        if hits:
            return [(hits[0], store.record_path(hits[0].image_ref))], True
    repository = normalized_name(arg)
    if repository is None:
        return [], False
    selected = RecordFilter(repository=repository)
    found: list[Found] = [
        (r, store.record_path(r.image_ref))
        for r in sorted(listing.items, key=_ref)
        if selected.record_matches(r)
    ]
    intents = store.list_intents()
    for err in intents.errors:
        click.echo(f"warning: {err}", err=True)
    found += [
        (i, store.intent_path(i.image))
        for i in sorted(intents.items, key=lambda i: i.image)
        if selected.intent_matches(i)
    ]
    return found, False


def _ref(r: ImagePulledRecord) -> str:
    return r.image_ref


@records.command("show")
@click.argument("ref_or_file", metavar="WHAT")
@root_option
@output_option(help=RECORDS_OUTPUT_HELP)
def show_command(ref_or_file: str, root: Path, output: str) -> None:
    """Show a record or pull intent: by file, imageRef, digest prefix or image name.

    \b
    WHAT is tried, in this order, as
      a file path      the record or intent file itself (no ROOT needed);
      an imageRef      exactly: sha256:<64 hex digits>;
      a pull intent    the image exactly as the intent names it;
      a digest prefix  of one record's imageRef: sha256:3f2a or 3f2a, at
                       least 4 hex digits; a prefix of several records is
                       an error (exit 2) that lists them;
      an image name    any spelling (nginx, docker.io/library/nginx:1.25;
                       tag and digest dropped): every record holding
                       credentials for that name, every pull intent for it.

    An image name may match several: all are shown (with -o json or yaml: a list, even of
    one).  Nothing found exits 1.
    """
    path = Path(ref_or_file)
    found: list[Found]
    if path.is_file():
        try:
            found, single = [(decode(path.read_bytes()), str(path))], True
        except (OSError, PullwardenError) as err:
            die(f"{path}: {err}", 1)
    else:
        store = open_store(root)
        try:
            found, single = find_for_show(store, ref_or_file)
        except PullwardenError as err:
            die(str(err), 1)
        if not found:
            die(f"no pulled record or pull intent for {ref_or_file!r} in {root}", 1)
    views = [show_view(obj, where) for obj, where in found]
    if output != "table":
        emit(views[0] if single else views, output)
        return
    for n, (obj, where) in enumerate(found):
        if n:
            click.echo()
        for line in show_text(obj, where):
            click.echo(line)


def show_view(obj: ImagePulledRecord | ImagePullIntent, where: str) -> dict[str, Any]:
    """``records show -o json`` of one object."""
    if isinstance(obj, ImagePullIntent):
        return {"file": where, "kind": "ImagePullIntent", "image": obj.image}
    return {"kind": "ImagePulledRecord", **record_view(obj, where)}


def show_text(obj: ImagePulledRecord | ImagePullIntent, where: str) -> list[str]:
    kind = "ImagePullIntent" if isinstance(obj, ImagePullIntent) else "ImagePulledRecord"
    lines = [f"File:          {where}", f"Kind:          {kind}"]
    if isinstance(obj, ImagePullIntent):
        lines.append(f"Image:         {obj.image}")
        return lines
    lines.append(f"ImageRef:      {obj.image_ref}")
    lines.append(f"Last updated:  {format_rfc3339(obj.last_updated_time)}")
    if not obj.credential_mapping:
        lines.append("Credentials:   none recorded (created by start-up housekeeping)")
    for name, creds in sorted(obj.credential_mapping.items()):
        lines.append(f"Name:          {name}")
        if creds.node_pods_accessible:
            lines.append("  node-wide:   every pod on the node may use it")
        for s in creds.kubernetes_secrets:
            shown = s.credential_hash[:12] + "…" if s.credential_hash else '""'
            lines.append(f"  secret:      {s.namespace}/{s.name} uid={s.uid} hash={shown}")
        for a in creds.kubernetes_service_accounts:
            lines.append(f"  svc account: {a.namespace}/{a.name} uid={a.uid}")
    return lines


ABSENT_IMAGE = "absent-image"
ABSENT_MESSAGE = (
    "the image is no longer on the node; `records prune` or image GC removes this record"
)


@records.command("check")
@root_option
@runtime_option(
    f"report each record whose image it no longer has ({ABSENT_IMAGE}); its images without a "
    "record are listed as notes, not problems."
)
@output_option(help=RECORDS_OUTPUT_HELP)
def check_command(root: Path, runtime_endpoint: str | None, output: str) -> None:
    """Decode every file; report undecodable, foreign, misnamed and stale temporary files.

    With --runtime-endpoint, also report every record whose imageRef the runtime no longer has
    (absent-image), and note the runtime's images that have no record (preloaded: under the
    default policy any pod may use them); -o json then prints {"problems": [...], "notes":
    [...]} instead of the list of problems.

    Exits 1 when a problem is found, 0 when every file is a record a kubelet would accept (and
    every record's image is on the node); notes do not count.
    """
    store = open_store(root)
    problems = [{"path": p.path, "problem": p.kind.value, "message": p.message} for p in scan(root)]
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
    if output != "table":
        doc: object = problems
        if node is not None:
            notes = [
                {**u.view(), "note": u.status.note, "message": u.status.meaning}
                for u in node.unrecorded
            ]
            doc = {"problems": problems, "notes": notes}
        if output == "json":
            write_json(out, doc, ensure_ascii=True)
        else:
            emit(doc, output)
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
            if os.path.isdir(store.image_manager_dir):
                out.line(f"ok: every file under {store.image_manager_dir} decodes{also}")
            else:
                out.line(f"ok: {store.image_manager_dir} does not exist yet: no records{also}")
    out.flush()
    if problems:
        sys.exit(1)


@records.command("migrate")
@root_option
@click.option(
    "--apply", is_flag=True, help="Rewrite the files (default: only show what would change)."
)
@click.option("--dry-run", is_flag=True, help="Only show what would change (the default).")
def migrate_command(root: Path, apply: bool, dry_run: bool) -> None:
    """Rewrite v1alpha1 records as v1beta1 keeping lastUpdatedTime, as a v1.34+ kubelet does.

    Without --apply (or with --dry-run, its explicit spelling) this is a dry run: one line per
    file it would rewrite.  With --apply, one line per file it rewrote.
    """
    check_dry_run(dry_run, apply)
    store = open_store(root)
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


def preloaded_note(counts: str) -> str:
    from pullwarden.policy import DEFAULT_POLICY

    return (
        f"if the image is still on the node it {counts} as preloaded: under the default policy "
        f"{DEFAULT_POLICY.value} any pod may use it"
    )


def check_dry_run(dry_run: bool, apply: bool) -> None:
    if dry_run and apply:
        die("--dry-run and --apply contradict each other: give one of them")


@records.command("prune")
@root_option
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
@click.option("--dry-run", is_flag=True, help="Only list the records (the default).")
def prune_command(
    root: Path,
    keep: tuple[str, ...],
    keep_from: Any,
    remove_all: bool,
    until: str,
    runtime_endpoint: str | None,
    apply: bool,
    dry_run: bool,
) -> None:
    """Remove the records of images no longer on the node, as the image GC's hook does.

    Give every imageRef still on the node (--keep-image-ref, --keep-from), or --all, or let the
    container runtime say which images it has (--runtime-endpoint; --until is read before the
    runtime is asked).  Without --apply (or with --dry-run, its explicit spelling) this is a dry
    run; either way one line per record removed, or that would be.  Removing the record of an image
    that is still on the node makes it count as preloaded: under the default policy any pod may
    then use it.
    """
    check_dry_run(dry_run, apply)
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
        store = open_store(root)
        refs = {image.id for image in runtime_images(runtime_endpoint)}
        n_images = plural(len(refs), "image")
        click.echo(f"keeping the records of the {n_images} the runtime at {runtime_endpoint} has")
        why = "its image is no longer on the node"
    else:
        refs = keep_refs(keep, keep_from, remove_all)
        store = open_store(root)
        why = preloaded_note("now counts" if apply else "would count")
    from pullwarden.metrics import Metrics
    from pullwarden.policy import PolicyEnforcer
    from pullwarden.pullmanager import PullManager

    manager = PullManager(store, PolicyEnforcer(), None, metrics=Metrics())
    removed = manager.prune_unknown_records(refs, until_time, dry_run=not apply)
    verb = "removed" if apply else "would remove"
    for ref in sorted(removed):
        click.echo(f"{verb} {ref}: {why}")
    click.echo(f"{len(removed)} record(s) {'removed' if apply else 'to remove'}")
