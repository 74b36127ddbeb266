"""Fixtures for every test, and one seed for all the randomness of a run.

Randomised tests take the ``rng`` fixture (a :class:`random.Random`) instead of seeding their
own; hypothesis tests are seeded from the same number (``--hypothesis-seed``, unless given).
The seed is ``$PULLWARDEN_TEST_SEED`` if set, else drawn at random; it is printed in the
header of the run and in the report of every failed test, so that

    PULLWARDEN_TEST_SEED=<seed> python -m pytest <the failed test>

replays the same random choices (each test's ``rng`` is derived from the seed and the test's
id, so a test run alone draws what it drew in the whole run).
"""

from __future__ import annotations

import os
import random
from collections.abc import Generator

import pytest

from pullwarden.testing import FakeClock
from tests.support import T0

SEED_VARIABLE = "PULLWARDEN_TEST_SEED"
_SEED = pytest.StashKey[int]()


def _choose_seed() -> int:
    given = os.environ.get(SEED_VARIABLE, "").strip()
    if not given:
        return random.SystemRandom().randrange(1 << 32)
    try:
        return int(given, 0)
    except ValueError:
        raise pytest.UsageError(f"{SEED_VARIABLE}={given!r} is not an integer") from None


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    seed = _choose_seed()
    config.stash[_SEED] = seed
    # Before hypothesis' own pytest_configure reads it (tryfirst): a seed given with
    # --hypothesis-seed is left alone.
    if hasattr(config.option, "hypothesis_seed") and config.option.hypothesis_seed is None:
        config.option.hypothesis_seed = str(seed)


def pytest_report_header(config: pytest.Config) -> str:
    seed = config.stash[_SEED]
    return f"random seed: {seed} (repeat with {SEED_VARIABLE}={seed})"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed:
        seed = item.config.stash[_SEED]
        hypothesis_seed = getattr(item.config.option, "hypothesis_seed", None)
        text = f"{SEED_VARIABLE}={seed} replays this run's random choices (the rng fixture"
        if hypothesis_seed is not None and hypothesis_seed != str(seed):
            text += f"); hypothesis ran with --hypothesis-seed={hypothesis_seed}"
        else:
            text += " and hypothesis)"
        report.sections.append(("random seed", text))
    return report


@pytest.fixture
def rng(request: pytest.FixtureRequest) -> random.Random:
    """This test's random numbers: from the run's seed and the test's id (see the module doc)."""
    return random.Random(f"{request.config.stash[_SEED]}:{request.node.nodeid}")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)
