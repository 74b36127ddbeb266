"""The invariant, as a property: random pulls, crashes, restarts and spellings.

A pod without credentials must never be let in "by policy" (``credentialPolicyAllowed``) to an
image this node pulled.  The model drives the real :class:`PullManager` over real record files
in the order the image manager guarantees (intent, then the runtime's commit, then the record or
the end of the intent), with a small in-memory runtime that names images the way the embedded
store and containerd do (normalised ``repo:tag`` and ``repo@digest``).  A crash drops the
manager with whatever is in flight and starts a new one on the same files (start-up
housekeeping included).

With :meth:`Protections.all` (what ``Node`` uses) the property holds; with the kubelet's exact
behaviour hypothesis finds a counterexample, which shows the property can fail.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, find, given, settings
from hypothesis import strategies as st

from pullwarden.metrics import Metrics
from pullwarden.policy import PolicyEnforcer
from pullwarden.pullmanager import Protections, PullManager
from pullwarden.records import FileRecordStore, ImagePullCredentials, ImagePullSecret
from pullwarden.reference import parse_image_name
from pullwarden.testing import FakeClock
from tests.support import T0, FakeImage

REG = "registry.example"
D1 = "sha256:" + "d1" * 32
D2 = "sha256:" + "d2" * 32
R1 = "sha256:" + "a1" * 32
R2 = "sha256:" + "a2" * 32

# (spellings a pod may use, the image they resolve to: (repository, tag, digest, image id))
IMAGES = {
    R1: (f"{REG}/private/app", "v1", D1),
    R2: ("docker.io/org/app", "v1", D2),
}
SPELLINGS = {
    R1: [f"{REG}/private/app:v1", f"{REG}/private/app@{D1}", f"{REG}/private/app:v1@{D1}", R1],
    R2: [
        "org/app:v1",
        "docker.io/org/app:v1",
        "index.docker.io/org/app:v1",
        f"org/app@{D2}",
        f"docker.io/org/app:v1@{D2}",
        R2,
    ],
}
PULLABLE = {ref: [s for s in names if s != ref] for ref, names in SPELLINGS.items()}
SECRET = ImagePullCredentials(
    kubernetes_secrets=(ImagePullSecret("uid-a", "team-a", "alice", "hash-a"),)
)


@dataclass
class Runtime:
    """Images as the runtime lists them; only a commit adds names."""

    names: dict[str, set[str]] = field(default_factory=dict)  # image id -> names

    def commit(self, ref: str, spelling: str) -> None:
        repository, tag, digest = parse_image_name(spelling)
        _, _, real_digest = IMAGES[ref]
        names = self.names.setdefault(ref, set())
        names.add(f"{repository}@{digest or real_digest}")
        if tag and not digest:
            names.add(f"{repository}:{tag}")

    def status(self, spelling: str) -> tuple[str, tuple[str, ...]] | None:
        if spelling in self.names:
            return spelling, tuple(sorted(self.names[spelling]))
        repository, tag, digest = parse_image_name(spelling)
        wanted = f"{repository}@{digest}" if digest else f"{repository}:{tag}"
        for ref, names in self.names.items():
            if wanted in names:
                return ref, tuple(sorted(names))
        return None

    def list_images(self) -> list[FakeImage]:
        return [
            FakeImage(
                ref,
                repo_tags=sorted(n for n in names if "@" not in n),
                repo_digests=sorted(n for n in names if "@" in n),
            )
            for ref, names in self.names.items()
        ]


# A pull goes through: begin (intent), then commit (the runtime), then end (record or failure).
Op = tuple[str, Any]
pull = st.tuples(st.sampled_from(sorted(PULLABLE)), st.integers(0, 5)).map(
    lambda t: ("begin", (t[0], PULLABLE[t[0]][t[1] % len(PULLABLE[t[0]])]))
)
step = st.tuples(st.just("step"), st.integers(0, 3))
fail = st.tuples(st.just("fail"), st.integers(0, 3))
crash = st.just(("crash", None))
attack = st.tuples(st.sampled_from(sorted(SPELLINGS)), st.integers(0, 5)).map(
    lambda t: ("attack", SPELLINGS[t[0]][t[1] % len(SPELLINGS[t[0]])])
)
programs = st.lists(st.one_of(pull, step, fail, crash, attack), max_size=25)


@dataclass
class Pull:
    ref: str
    spelling: str
    committed: bool = False


def violation(root: Path, program: list[Op], protections: Protections) -> str | None:
    """Run ``program`` on fresh files; the first invariant violation, or None."""
    for sub in ("image_manager",):
        target = root / sub
        if target.exists():
            for d in target.iterdir():
                for f in d.iterdir():
                    f.unlink()
    runtime = Runtime()
    pulled: set[str] = set()

    def start() -> PullManager:
        return PullManager(
            FileRecordStore(root),
            PolicyEnforcer(),
            runtime,
            clock=FakeClock(T0),
            metrics=Metrics(),
            protections=protections,
        )

    pm = start()
    in_flight: list[Pull] = []
    for op, arg in program:
        if op == "begin":
            ref, spelling = arg
            pm.record_pull_intent(spelling)
            in_flight.append(Pull(ref, spelling))
        elif op in ("step", "fail") and in_flight:
            p = in_flight[arg % len(in_flight)]
            if op == "step" and not p.committed:
                runtime.commit(p.ref, p.spelling)
                pulled.add(p.ref)
                p.committed = True
            elif op == "step":
                pm.record_image_pulled(p.spelling, p.ref, SECRET)
                in_flight.remove(p)
            elif not p.committed:  # a refused pull ends its intent
                pm.record_image_pull_failed(p.spelling)
                in_flight.remove(p)
        elif op == "crash":
            in_flight.clear()
            pm = start()
        elif op == "attack":
            found = runtime.status(arg)
            if found is None:
                continue
            ref, names = found
            decision = pm.decide(arg, ref, lambda: ((), None), image_names=names)
            if ref in pulled and decision.result == "credentialPolicyAllowed":
                return f"{arg} got {ref} by policy"
    return None


@settings(
    max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(program=programs)
def test_no_pod_gets_a_pulled_image_by_policy(tmp_path: Path, program: list[Op]) -> None:
    assert violation(tmp_path, program, Protections.all()) is None


@pytest.mark.parametrize(
    "program",
    [
        # another spelling between the commit and the record
        [("begin", (R1, PULLABLE[R1][0])), ("step", 0), ("attack", SPELLINGS[R1][1])],
        # the image id, same window
        [("begin", (R1, PULLABLE[R1][0])), ("step", 0), ("attack", R1)],
        # a crash in the window, then a familiar name after the restart
        [
            ("begin", (R2, "org/app:v1")),
            ("step", 0),
            ("crash", None),
            ("attack", "docker.io/org/app:v1"),
        ],
        # a crash, a failed pull of the same spelling, then another spelling
        [
            ("begin", (R2, "org/app:v1")),
            ("step", 0),
            ("crash", None),
            ("begin", (R2, "org/app:v1")),
            ("fail", 0),
            ("attack", "docker.io/org/app:v1"),
        ],
    ],
)
def test_known_holes_stay_closed(tmp_path: Path, program: list[Op]) -> None:
    assert violation(tmp_path / "kubelet", program, Protections()) is not None
    assert violation(tmp_path / "node", program, Protections.all()) is None


def test_the_property_can_fail(tmp_path: Path) -> None:
    """The kubelet's exact behaviour breaks it: hypothesis must find a counterexample."""
    found = find(
        programs,
        lambda program: violation(tmp_path, program, Protections()) is not None,
        settings=settings(max_examples=2000, deadline=None, database=None),
    )
    assert violation(tmp_path, found, Protections()) is not None
