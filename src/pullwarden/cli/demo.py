"""``pullwarden demo``: the KEP-2535 story, run for real through the whole stack.

A private registry (the embedded dev registry, token auth) holds ``private/app:v1``.  Pods are
written as manifests and handed to a :class:`~pullwarden.node.Node` exactly as ``pullwarden
run`` does; each step checks its own expectation and the demo fails if any differs.
"""

from __future__ import annotations

import base64
import json
import shutil
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml

from pullwarden.cli.node import outcome_table
from pullwarden.config import default_kubelet_config
from pullwarden.devregistry import AccessRule, DevRegistry
from pullwarden.events import StreamRecorder
from pullwarden.node import Node
from pullwarden.objects import load_objects
from pullwarden.runtime import build_image

IMAGE_REPO = "private/app"
# Demo-only throwaway credentials for a registry that lives for the length of the demo.
ROBOT_V1 = ("team-x-robot", "first-password")
ROBOT_V2 = ("team-x-robot-rotated", "second-password")
STRANGER = ("someone-else", "a-guess")


@dataclass(frozen=True)
class Expect:
    pod: str
    outcome: str  # "Ready" or the error value
    verified_by: str = ""  # checked when set
    registry_requests: int | None = None  # checked when set: requests the step may make


def secret(
    namespace: str, name: str, uid: str, host: str, creds: tuple[str, str]
) -> dict[str, Any]:
    auth = base64.b64encode(f"{creds[0]}:{creds[1]}".encode()).decode()
    config = json.dumps({"auths": {host: {"auth": auth}}})
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"namespace": namespace, "name": name, "uid": uid},
        "data": {".dockerconfigjson": base64.b64encode(config.encode()).decode()},
    }


def pod(
    namespace: str, name: str, image: str, *, secret_name: str = "", policy: str = "IfNotPresent"
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "containers": [{"name": "app", "image": image, "imagePullPolicy": policy}]
    }
    if secret_name:
        spec["imagePullSecrets"] = [{"name": secret_name}]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"namespace": namespace, "name": name, "uid": f"uid-{namespace}-{name}"},
        "spec": spec,
    }


@contextmanager
def workdir(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    path = Path(tempfile.mkdtemp(prefix="pullwarden-demo-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


class Story:
    def __init__(self, base: Path, registry: DevRegistry, node: Node, quiet: bool) -> None:
        self.base = base
        self.registry = registry
        self.node = node
        self.quiet = quiet
        self.failures: list[str] = []
        self.step_no = 0

    def say(self, text: str = "") -> None:
        if not self.quiet:
            click.echo(text)

    def step(self, title: str, why: str, docs: list[dict[str, Any]], expect: list[Expect]) -> None:
        self.step_no += 1
        path = self.base / f"step-{self.step_no}.yaml"
        path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
        self.say(f"\n== Step {self.step_no}: {title}")
        self.say(f"   {why}")
        self.say(f"   $ pullwarden run -f {path}")
        mark = self.registry.mark()
        outcomes = self.node.run(load_objects([path]))
        requests = self.registry.count(since=mark)
        for line in outcome_table(outcomes):
            self.say("   " + line)
        self.say(f"   registry requests during this step: {requests}")
        by_name = {p.name: p for p in outcomes}
        for e in expect:
            got = by_name[e.pod].containers[0]
            problems = []
            if got.outcome != e.outcome:
                problems.append(f"outcome {got.outcome} (expected {e.outcome})")
            if e.verified_by and got.verified_by != e.verified_by:
                problems.append(f"verified by {got.verified_by!r} (expected {e.verified_by!r})")
            if e.registry_requests is not None and requests > e.registry_requests:
                problems.append(f"{requests} registry requests (expected ≤ {e.registry_requests})")
            if problems:
                self.failures.append(f"step {self.step_no}, pod {e.pod}: " + "; ".join(problems))
                self.say(f"   ✗ {e.pod}: " + "; ".join(problems))
            else:
                self.say(f"   ✓ {e.pod}: {got.outcome}" + (f" ({got.why})" if got.why else ""))


def run_story(base: Path, quiet: bool) -> list[str]:
    layout = base / "layout"
    build_image(layout, "app", files={"app/hello.txt": b"hello from a private image\n"})
    registry = DevRegistry(
        auth="token",
        users=dict([ROBOT_V1, ROBOT_V2, STRANGER]),
        rules=[
            AccessRule(ROBOT_V1[0], IMAGE_REPO, frozenset({"pull"})),
            AccessRule(ROBOT_V2[0], IMAGE_REPO, frozenset({"pull"})),
        ],
    )
    with registry:
        registry.add_image(IMAGE_REPO, "v1", layout, "app")
        image = f"{registry.host}/{IMAGE_REPO}:v1"
        host = registry.host
        config = default_kubelet_config()
        events = StreamRecorder(sys.stdout, prefix="   event: ") if not quiet else None
        with Node(base / "node", config, events=events, node_credentials=False) as node:
            story = Story(base, registry, node, quiet)
            story.say(f"A private registry runs at {registry.url} with the image {image}.")
            story.say(
                f"Policy: {config.verification_policy}. Node state: {base / 'node'} "
                "(records in image_manager/, exactly as a kubelet keeps them)."
            )
            story.step(
                "Pod A (namespace x) pulls the private image with its Secret 1",
                "An ordinary pull: the kubelet records that secret x/secret-1 pulled the image.",
                [
                    secret("x", "secret-1", "uid-secret-1", host, ROBOT_V1),
                    pod("x", "pod-a", image, secret_name="secret-1"),
                ],
                [Expect("pod-a", "Ready", "pull")],
            )
            story.step(
                "Pod B (namespace y, no secret, IfNotPresent) wants the cached image",
                "Before KEP-2535 it would simply have run it. Now its (absent) credentials must "
                "prove access: the registry refuses.",
                [pod("y", "pod-b", image)],
                [Expect("pod-b", "ErrImagePull")],
            )
            story.step(
                "Pod C (namespace y) has its own secret holding the same credentials",
                "Same credential hash as a recorded secret: allowed from the record, no registry "
                "request.",
                [
                    secret("y", "own-secret", "uid-own-secret", host, ROBOT_V1),
                    pod("y", "pod-c", image, secret_name="own-secret"),
                ],
                [Expect("pod-c", "Ready", "secretHash", registry_requests=0)],
            )
            story.step(
                "Pod D (namespace x) uses Secret 1 after it was rotated",
                "New content, same namespace/name/uid: allowed by coordinates, the record learns "
                "the new hash, no registry request.",
                [
                    secret("x", "secret-1", "uid-secret-1", host, ROBOT_V2),
                    pod("x", "pod-d", image, secret_name="secret-1"),
                ],
                [Expect("pod-d", "Ready", "secretCoordinates", registry_requests=0)],
            )
            story.step(
                "Pod N (namespace y, imagePullPolicy: Never, no credentials)",
                "Never may only use images its credentials were verified for; the kubelet does "
                "not even reveal that the image is present.",
                [pod("y", "pod-n", image, policy="Never")],
                [Expect("pod-n", "ErrImageNeverPull", registry_requests=0)],
            )
            registry.stop()
            story.say("\n(the registry is now stopped)")
            story.step(
                "With the registry down: Pod E (Secret 1) and Pod F (unknown credentials)",
                "Known credentials never touch the registry, so Pod E starts; Pod F's credentials "
                "cannot be verified, so it fails. Forcing imagePullPolicy: Always would have "
                "failed both.",
                [
                    secret("x", "secret-1", "uid-secret-1", host, ROBOT_V2),
                    pod("x", "pod-e", image, secret_name="secret-1"),
                    secret("z", "guess", "uid-guess", host, STRANGER),
                    pod("z", "pod-f", image, secret_name="guess"),
                ],
                [Expect("pod-e", "Ready", "secretHash"), Expect("pod-f", "RegistryUnavailable")],
            )
            return story.failures


@click.command("demo")
@click.option(
    "--keep",
    type=click.Path(file_okay=False, path_type=Path),
    help="Keep the generated manifests, records and images in this directory.",
)
@click.option("--quiet", "-q", is_flag=True, help="Only print the verdict.")
def demo_command(keep: Path | None, quiet: bool) -> None:
    """Run the KEP-2535 story (the Kubernetes blog's) for real, explaining each step.

    Starts a private registry on 127.0.0.1, then runs pods through the same node image manager
    as `pullwarden run`.  Exits 1 if any step does not turn out as explained.
    """
    with workdir(keep) as base:
        failures = run_story(base, quiet)
    if failures:
        for f in failures:
            click.echo(f"demo: unexpected: {f}", err=True)
        sys.exit(1)
    click.echo("\ndemo: every step behaved as KEP-2535 says.")
