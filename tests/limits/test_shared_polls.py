"""Poll timing across replicas (RFC 8628 §3.5 ``slow_down``) with shared limits.

Two :class:`LoginService` objects on one store stand for two replicas. With
Redis limits, a poll one replica accepted makes the same device's next poll too
soon on the other, on the store path and on the in-memory fast path alike.
Without (per-process memory), each replica judges only the polls it accepted:
the documented trade-off.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from hatchway.flows.login.common import LoginRefused
from hatchway.flows.login.polls import start_decision_feed
from hatchway.flows.login.service import LoginService
from hatchway.limits import Limits, MemoryLimits
from hatchway.limits.redis_limits import RedisLimits
from hatchway.runtime import FrozenClock, SeededRandom
from hatchway.server.context import ServerContext
from tests.limits.conftest import _drop_prefix
from tests.login.world import GRANT, login_world
from tests.services import require_redis


@pytest.fixture
def ctx(tmp_path: Path, clock: FrozenClock) -> Iterator[ServerContext]:
    with login_world(tmp_path, clock) as context:
        yield context


def _replica(ctx: ServerContext, limits: Limits, seed: bytes) -> LoginService:
    return LoginService(
        store=ctx.store,
        identity=ctx.identity,
        settings=ctx.settings,
        clock=ctx.login.clock,
        random=SeededRandom(seed),
        bus=ctx.bus,
        limits=limits,
    )


@pytest.fixture
def replicas(ctx: ServerContext) -> Iterator[tuple[LoginService, LoginService]]:
    url = require_redis()
    prefix = f"hwtest:polls:{secrets.token_hex(6)}:"
    a, b = RedisLimits(url, prefix=prefix), RedisLimits(url, prefix=prefix)
    try:
        yield _replica(ctx, a, b"a"), _replica(ctx, b, b"b")
    finally:
        a.close()
        b.close()
        _drop_prefix(url, prefix)


def _form(code: str) -> dict[str, str]:
    return {"grant_type": GRANT, "device_code": code, "client_id": "tv"}


def _answer(login: LoginService, code: str) -> LoginRefused:
    with pytest.raises(LoginRefused) as refused:
        login.token(_form(code), ip="192.0.2.1", user_agent="tv/1")
    return refused.value


def _start(login: LoginService) -> str:
    started = login.start(
        {"client_id": "tv", "login_hint": "alice"}, ip="192.0.2.1", user_agent="tv/1"
    )
    return started.device_code


def test_a_poll_accepted_on_one_replica_is_too_soon_on_the_other(
    replicas: tuple[LoginService, LoginService], clock: FrozenClock
) -> None:
    a, b = replicas
    code = _start(a)
    assert _answer(a, code).error == "authorization_pending"  # t0
    clock.advance(5)
    assert _answer(b, code).error == "authorization_pending"  # t0 + 5, on time
    clock.advance(1)
    slow = _answer(a, code)  # t0 + 6: A's own last poll was t0, but B's was t0 + 5
    assert (slow.error, slow.interval) == ("slow_down", 10)
    clock.advance(4)  # t0 + 10 < t0 + 5 + 10
    assert _answer(b, code).interval == 15  # the grown interval counts from B's poll
    clock.advance(10)  # t0 + 20 = t0 + 5 + 15
    assert _answer(a, code).error == "authorization_pending"


def test_per_process_memory_judges_only_its_own_polls(
    ctx: ServerContext, clock: FrozenClock
) -> None:
    a, b = _replica(ctx, MemoryLimits(), b"a"), _replica(ctx, MemoryLimits(), b"b")
    assert not a.shared_polls
    code = _start(a)
    _answer(a, code)
    clock.advance(5)
    _answer(b, code)
    clock.advance(1)
    assert _answer(a, code).error == "authorization_pending"  # R replicas, R times the rate


@pytest.fixture
async def feeds(
    replicas: tuple[LoginService, LoginService],
) -> AsyncIterator[tuple[LoginService, LoginService]]:
    tasks = [start_decision_feed(r.bus, r.pending) for r in replicas]  # type: ignore[arg-type]
    await asyncio.sleep(0)
    yield replicas
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_the_memory_fast_path_asks_the_shared_gate(
    feeds: tuple[LoginService, LoginService], clock: FrozenClock
) -> None:
    a, b = feeds
    code = _start(a)
    assert _answer(a, code).error == "authorization_pending"  # t0: A keeps a snapshot
    assert _answer(b, code).error == "slow_down"  # t0: B reads the store, gate says too soon
    clock.advance(10)  # t0 + 10 (interval now 10)
    assert _answer(b, code).error == "authorization_pending"  # B accepted at t0 + 10
    clock.advance(1)
    # A's snapshot would accept (its last accepted poll is t0, interval 5 in memory),
    # but the gate knows B's poll at t0 + 10: the fast path steps aside.
    assert await a.poll_fast(_form(code)) is None
    clock.advance(10)  # t0 + 21
    fast = await a.poll_fast(_form(code))
    assert fast is not None and fast.error == "authorization_pending"
