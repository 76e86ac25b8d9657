"""Both :class:`~hatchway.limits.Limits` backends, for tests that must hold on each.

``limits`` is parametrized over memory and Redis; the Redis one uses a fresh key
prefix per test (so tests never share state, even in parallel runs) and deletes
its keys afterwards. Without Redis it skips locally and fails when CI=true.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator

import pytest
import redis

from hatchway.limits import Limits, MemoryLimits
from hatchway.limits.redis_limits import RedisLimits
from tests.services import require_redis

LimitsFactory = Callable[[], Limits]


def _drop_prefix(url: str, prefix: str) -> None:
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=prefix + "*", count=500))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[LimitsFactory]:
    """A factory of backends that share state with each other (two replicas' view)."""
    made: list[Limits] = []
    if request.param == "memory":
        shared = MemoryLimits()

        def memory() -> Limits:
            return shared

        yield memory
        return
    url = require_redis()
    prefix = f"hwtest:{secrets.token_hex(6)}:"

    def make() -> Limits:
        limits = RedisLimits(url, prefix=prefix)
        made.append(limits)
        return limits

    try:
        yield make
    finally:
        for limits in made:
            limits.close()
        _drop_prefix(url, prefix)


@pytest.fixture
def limits(backend: LimitsFactory) -> Limits:
    return backend()
