"""Shared fixtures and the CI rule for service-dependent tests.

Tests that need PostgreSQL, Mosquitto, Chromium or pcscd may skip on a machine
that lacks them, but never when ``CI=true``: there a missing service is a failure.
"""

from __future__ import annotations

import pytest

from hatchway.runtime import FrozenClock, SeededRandom
from tests.services import IN_CI, require

__all__ = ["IN_CI", "require"]


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def rng() -> SeededRandom:
    return SeededRandom()
