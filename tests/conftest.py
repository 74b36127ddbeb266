from __future__ import annotations

import pytest

from pullwarden.testing import FakeClock
from tests.support import T0


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(T0)
