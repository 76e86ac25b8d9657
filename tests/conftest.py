"""Shared fixtures and the CI rule for service-dependent tests.

Tests that need PostgreSQL, Mosquitto, Chromium or pcscd may skip on a machine
that lacks them, but never when ``CI=true``: there a missing service is a failure.
"""

from __future__ import annotations

import os

import pytest

from hatchway.runtime import FrozenClock, SeededRandom

IN_CI = os.environ.get("CI", "").lower() == "true"


def require(available: bool, what: str) -> None:
    """Skip when ``what`` is missing locally; fail when it is missing in CI."""
    if available:
        return
    if IN_CI:
        pytest.fail(f"{what} is required when CI=true but is not available")
    pytest.skip(f"{what} not available")


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def rng() -> SeededRandom:
    return SeededRandom()
