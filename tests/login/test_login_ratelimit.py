"""Rate limits (RFC 8628 §5.1) and password back-off / lockout, under a FrozenClock."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.login.ratelimit import (
    Allowance,
    AttemptState,
    BucketState,
    KeyedLimiter,
    LockoutPolicy,
    TokenBucket,
)
from hatchway.runtime import FrozenClock

ALLOW = Allowance(allowed=True, retry_after=0)


def test_bucket_burst_then_refill(clock: FrozenClock) -> None:
    bucket = TokenBucket(capacity=3, refill_per_second=0.1)  # 1 token per 10 s
    state: BucketState | None = None
    for _ in range(3):
        allowance, state = bucket.take(state, clock())
        assert allowance == ALLOW
    allowance, state = bucket.take(state, clock())
    assert allowance == Allowance(allowed=False, retry_after=10)
    clock.advance(4)
    allowance, state = bucket.take(state, clock())
    assert allowance == Allowance(allowed=False, retry_after=6)  # ceil(10 - 4)
    clock.advance(6)
    allowance, state = bucket.take(state, clock())
    assert allowance == ALLOW
    assert state.tokens == pytest.approx(0.0)


def test_bucket_never_exceeds_capacity(clock: FrozenClock) -> None:
    bucket = TokenBucket(capacity=2, refill_per_second=1.0)
    _, state = bucket.take(None, clock())
    clock.advance(1_000_000)
    _, state = bucket.take(state, clock())
    assert state.tokens == pytest.approx(1.0)


def test_clock_stepping_back_mints_nothing(clock: FrozenClock) -> None:
    bucket = TokenBucket(capacity=1, refill_per_second=1.0)
    _, state = bucket.take(None, clock())
    allowance, state2 = bucket.take(state, clock() - 100)
    assert not allowance.allowed
    assert state2.tokens == pytest.approx(0.0)


def test_bucket_rejects_bad_policy() -> None:
    with pytest.raises(ValueError):
        TokenBucket(capacity=0, refill_per_second=1)
    with pytest.raises(ValueError):
        TokenBucket(capacity=1, refill_per_second=0)


@given(
    gaps=st.lists(st.floats(min_value=0, max_value=20, allow_nan=False), min_size=1, max_size=60)
)
def test_bucket_never_allows_more_than_capacity_plus_refill(gaps: list[float]) -> None:
    bucket = TokenBucket(capacity=5, refill_per_second=0.5)
    state: BucketState | None = None
    now = 0.0
    allowed = 0
    for gap in gaps:
        now += gap
        allowance, state = bucket.take(state, now)
        allowed += allowance.allowed
        assert allowance.allowed == (allowance.retry_after == 0)
    assert allowed <= 5 + now * 0.5 + 1e-9


def test_keyed_limiter_keys_are_independent(clock: FrozenClock) -> None:
    limiter = KeyedLimiter(TokenBucket(capacity=2, refill_per_second=1 / 60))
    assert limiter.hit("ip:203.0.113.7", clock()).allowed
    assert limiter.hit("ip:203.0.113.7", clock()).allowed
    assert limiter.hit("ip:203.0.113.7", clock()) == Allowance(allowed=False, retry_after=60)
    assert limiter.hit("code:BDFG-HJKL", clock()).allowed
    assert len(limiter) == 2


def test_keyed_limiter_prunes_full_buckets(clock: FrozenClock) -> None:
    limiter = KeyedLimiter(TokenBucket(capacity=2, refill_per_second=1.0))
    limiter.hit("a", clock())
    limiter.hit("b", clock())
    limiter.hit("b", clock())
    clock.advance(1)
    assert limiter.prune(clock()) == 1  # "a" is full again, "b" still owes a token
    assert len(limiter) == 1


def test_keyed_limiter_is_bounded_and_drops_least_recently_used(clock: FrozenClock) -> None:
    limiter = KeyedLimiter(TokenBucket(capacity=1, refill_per_second=0.001), max_keys=3)
    for key in "abc":
        limiter.hit(key, clock())
    limiter.hit("a", clock())  # "a" is now the most recently used
    limiter.hit("d", clock())
    assert len(limiter) == 3
    assert not limiter.hit("a", clock()).allowed  # still remembered
    assert limiter.hit("b", clock()).allowed  # forgotten: fresh bucket


def test_lockout_backoff_arithmetic(clock: FrozenClock) -> None:
    policy = LockoutPolicy(free_failures=3, base_delay=1, max_delay=300, lockout_after=10)
    assert [policy.delay_after(n) for n in range(1, 10)] == [0, 0, 0, 1, 2, 4, 8, 16, 32]
    assert policy.delay_after(40) == 300
    assert policy.delay_after(10_000) == 300

    state = AttemptState()
    for n in range(1, 10):
        assert policy.check(state, clock()) == ALLOW
        state = policy.record_failure(state, clock())
        delay = policy.delay_after(n)
        if delay:
            assert policy.check(state, clock()) == Allowance(allowed=False, retry_after=int(delay))
            clock.advance(delay - 0.5)
            assert not policy.check(state, clock()).allowed
            clock.advance(0.5)
    assert state.failures == 9 and not state.locked


def test_lockout_after_n_failures_then_timed_release(clock: FrozenClock) -> None:
    policy = LockoutPolicy(free_failures=1, lockout_after=3, lockout_duration=3600, max_delay=300)
    state = AttemptState(failures=2, last_failure_at=clock())
    state = policy.record_failure(state, clock())
    assert state.locked and policy.is_locked(state, clock())
    # Looks exactly like a maximal back-off: the answer does not reveal the lock.
    assert policy.check(state, clock()) == Allowance(allowed=False, retry_after=300)
    clock.advance(3599)
    assert policy.check(state, clock()) == Allowance(allowed=False, retry_after=1)
    clock.advance(1)
    assert not policy.is_locked(state, clock())
    assert policy.check(state, clock()) == ALLOW
    # The count starts again after the lock: one more failure is the first
    # again, so one failure an hour cannot keep an account locked for ever.
    again = policy.record_failure(state, clock())
    assert (again.failures, again.locked) == (1, False)
    assert policy.check(again, clock()) == ALLOW


def test_quiet_failures_are_forgotten(clock: FrozenClock) -> None:
    policy = LockoutPolicy(free_failures=1, lockout_after=3, forget_after=600)
    state = policy.record_failure(policy.record_failure(AttemptState(), clock()), clock())
    assert state.failures == 2
    clock.advance(600)
    assert policy.current(state, clock()) == AttemptState()
    assert policy.record_failure(state, clock()).failures == 1


def test_permanent_lockout_until_unlock(clock: FrozenClock) -> None:
    policy = LockoutPolicy(lockout_after=2, free_failures=0, lockout_duration=None, max_delay=60)
    state = policy.record_failure(policy.record_failure(AttemptState(), clock()), clock())
    clock.advance(10**9)
    assert policy.is_locked(state, clock())
    assert policy.check(state, clock()) == Allowance(allowed=False, retry_after=60)
    assert policy.unlock(state) == AttemptState()
    assert policy.check(policy.unlock(state), clock()) == ALLOW


def test_success_clears_history(clock: FrozenClock) -> None:
    policy = LockoutPolicy()
    state = AttemptState(failures=5, blocked_until=clock() + 4)
    assert policy.record_success(state) == AttemptState()


def test_state_is_a_frozen_value() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        AttemptState().failures = 3  # type: ignore[misc]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"free_failures": 10, "lockout_after": 10},
        {"base_delay": 0},
        {"base_delay": 10, "max_delay": 5},
        {"lockout_duration": 0},
        {"forget_after": 0},
    ],
)
def test_lockout_policy_rejects_nonsense(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        LockoutPolicy(**kwargs)  # type: ignore[arg-type]


def test_unlocked_state_is_not_locked(clock: FrozenClock) -> None:
    policy = LockoutPolicy()
    assert not policy.is_locked(AttemptState(failures=5, blocked_until=clock() + 60), clock())


def test_keyed_limiter_needs_room() -> None:
    with pytest.raises(ValueError):
        KeyedLimiter(TokenBucket(capacity=1, refill_per_second=1), max_keys=0)
