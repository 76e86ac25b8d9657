"""The same contract for both budget backends (issue 8 §4): memory and Redis.

Every test here runs against :class:`MemoryLimits` and :class:`RedisLimits`
(``tests/limits/conftest.py``), with the time passed in: the answers must be
the pure :class:`TokenBucket`'s, step for step, and each step atomic even when
many threads, or two "replicas" (two backend objects on one Redis), race.
"""

from __future__ import annotations

import secrets
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hatchway.limits import Bucket, Limits
from hatchway.login.ratelimit import Allowance, BucketState, TokenBucket
from hatchway.runtime import FrozenClock
from tests.limits.conftest import LimitsFactory

ALLOW = Allowance(allowed=True, retry_after=0)


def test_bucket_burst_then_refill_with_retry_after(limits: Limits, clock: FrozenClock) -> None:
    policy = TokenBucket(capacity=3, refill_per_second=0.1)  # one token per 10 s
    answers = [limits.hit("start:ip:203.0.113.7", policy, clock()) for _ in range(4)]
    assert answers == [ALLOW, ALLOW, ALLOW, Allowance(allowed=False, retry_after=10)]
    clock.advance(4)
    assert limits.hit("start:ip:203.0.113.7", policy, clock()) == Allowance(False, 6)
    clock.advance(6)
    assert limits.hit("start:ip:203.0.113.7", policy, clock()) == ALLOW


def test_bucket_keys_are_independent(limits: Limits, clock: FrozenClock) -> None:
    policy = TokenBucket(capacity=1, refill_per_second=1 / 60)
    assert limits.hit("a", policy, clock()) == ALLOW
    assert not limits.hit("a", policy, clock()).allowed
    assert limits.hit("b", policy, clock()) == ALLOW


def test_a_clock_stepping_back_mints_no_tokens(limits: Limits, clock: FrozenClock) -> None:
    policy = TokenBucket(capacity=1, refill_per_second=1 / 60)
    assert limits.hit("k", policy, clock()) == ALLOW
    clock.advance(-3600)
    assert not limits.hit("k", policy, clock()).allowed


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    capacity=st.integers(1, 5),
    per_minute=st.integers(1, 120),
    steps=st.lists(st.tuples(st.sampled_from("xy"), st.floats(0, 90)), max_size=25),
)
def test_bucket_agrees_with_the_pure_policy(
    limits: Limits, capacity: int, per_minute: int, steps: list[tuple[str, float]]
) -> None:
    """Any sequence of hits answers exactly what TokenBucket.take answers."""
    policy = TokenBucket(capacity=capacity, refill_per_second=per_minute / 60)
    run = f"prop:{secrets.token_hex(8)}:"  # a fresh pair of keys per example
    states: dict[str, BucketState | None] = {"x": None, "y": None}
    now = 1_700_000_000.0
    for key, dt in steps:
        now += round(dt, 3)
        expected, states[key] = policy.take(states[key], now)
        assert limits.hit(run + key, policy, now) == expected


def test_bucket_is_atomic_under_concurrent_hits(backend: LimitsFactory) -> None:
    """20 threads over two backend objects (two replicas) race for 5 tokens: 5 win."""
    replicas = [backend(), backend()]
    policy = TokenBucket(capacity=5, refill_per_second=1 / 3600)
    barrier = threading.Barrier(20)

    def one(n: int) -> bool:
        barrier.wait()
        return replicas[n % 2].hit("race", policy, 1_700_000_000.0).allowed

    with ThreadPoolExecutor(20) as pool:
        wins = list(pool.map(one, range(20)))
    assert wins.count(True) == 5


def test_named_buckets_share_one_budget_across_replicas(
    backend: LimitsFactory, clock: FrozenClock
) -> None:
    policy = TokenBucket(capacity=4, refill_per_second=4 / 60)
    a, b = Bucket(backend(), "start", policy), Bucket(backend(), "start", policy)
    answers = [(a if n % 2 else b).hit("ip:198.51.100.1", clock()) for n in range(4)]
    assert answers == [ALLOW] * 4
    assert a.hit("ip:198.51.100.1", clock()) == Allowance(False, 15)
    assert b.hit("ip:198.51.100.1", clock()) == Allowance(False, 15)
    # Another bucket name is another budget, even for the same key.
    assert Bucket(b.limits, "finish", policy).hit("ip:198.51.100.1", clock()) == ALLOW


def test_swap_is_a_compare_and_set(limits: Limits) -> None:
    assert limits.load("v") is None
    assert not limits.swap("v", "something", "new", ttl=60)
    assert limits.swap("v", None, "one", ttl=60)
    assert not limits.swap("v", None, "two", ttl=60)  # not absent any more
    assert not limits.swap("v", "stale", "two", ttl=60)
    assert limits.load("v") == "one"
    assert limits.swap("v", "one", "two", ttl=60)
    assert limits.load("v") == "two"
    assert limits.swap("v", "two", None, ttl=60)
    assert limits.load("v") is None


def test_swap_races_have_one_winner(backend: LimitsFactory) -> None:
    replicas = [backend(), backend()]
    barrier = threading.Barrier(16)

    def one(n: int) -> bool:
        barrier.wait()
        return replicas[n % 2].swap("cas", None, f"writer-{n}", ttl=60)

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(one, range(16))).count(True) == 1


def test_counters_bump_count_and_forget(limits: Limits) -> None:
    assert limits.count("c") == 0
    assert [limits.bump("c", ttl=60) for _ in range(3)] == [1, 2, 3]
    assert limits.count("c") == 3
    limits.swap("c", None, "value", ttl=60)
    limits.forget("c")
    assert limits.count("c") == 0
    assert limits.load("c") is None
    limits.forget()  # nothing to forget is fine


def test_use_once_refuses_the_second_use_and_past_deadlines(
    limits: Limits, clock: FrozenClock
) -> None:
    now = clock()
    assert limits.use_once("exchange:abc", until=now + 120, now=now)
    assert not limits.use_once("exchange:abc", until=now + 120, now=now + 1)
    assert limits.use_once("exchange:abd", until=now + 120, now=now)
    assert not limits.use_once("exchange:late", until=now, now=now)


def test_use_once_has_one_winner_across_replicas(backend: LimitsFactory) -> None:
    replicas = [backend(), backend()]
    barrier = threading.Barrier(16)

    def one(n: int) -> bool:
        barrier.wait()
        return replicas[n % 2].use_once("exchange:same", until=2e9, now=1.7e9)

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(one, range(16))).count(True) == 1


@pytest.mark.parametrize("ttl", [0.001, 5.0])
def test_swap_keeps_values_for_their_ttl_at_least(limits: Limits, ttl: float) -> None:
    assert limits.swap("t", None, "x", ttl=ttl)
    assert limits.load("t") == "x"  # a Redis TTL adds a skew margin; memory never expires


def test_gate_marks_on_time_calls_and_returns_the_mark_when_too_soon(limits: Limits) -> None:
    t0 = 1_700_000_000.0
    assert limits.gate("poll:ab", now=t0, interval=5, ttl=300) is None
    assert limits.gate("poll:ab", now=t0 + 1, interval=5, ttl=300) == t0  # not moved
    assert limits.gate("poll:ab", now=t0 + 4.5, interval=5, ttl=300) == t0
    assert limits.gate("poll:ab", now=t0 + 5, interval=5, ttl=300) is None
    assert limits.gate("poll:ab", now=t0 + 9, interval=10, ttl=300) == t0 + 5  # grown interval
    assert limits.gate("poll:other", now=t0 + 9, interval=10, ttl=300) is None
    # A replica whose clock is behind the mark is too soon as well: never open.
    assert limits.gate("poll:ab", now=t0 + 1, interval=10, ttl=300) == t0 + 5


async def test_agate_is_the_same_step_from_an_event_loop(backend: LimitsFactory) -> None:
    a, b = backend(), backend()
    t0 = 1_700_000_000.0
    assert await a.agate("poll:cd", now=t0, interval=5, ttl=300) is None
    assert b.gate("poll:cd", now=t0 + 1, interval=5, ttl=300) == t0
    assert await b.agate("poll:cd", now=t0 + 6, interval=5, ttl=300) is None


def test_gate_has_one_winner_at_one_instant(backend: LimitsFactory) -> None:
    replicas = [backend(), backend()]
    barrier = threading.Barrier(16)

    def one(n: int) -> float | None:
        barrier.wait()
        return replicas[n % 2].gate("poll:race", now=1.7e9, interval=5, ttl=60)

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(one, range(16)))
    assert answers.count(None) == 1 and set(answers) == {None, 1.7e9}
