"""Password-attempt limits on both backends: one account's budget, whichever replica is asked.

Two :class:`PasswordGuard` objects over backends that share state stand for two
replicas. With memory that is one process; with Redis, two clients on one server.
"""

from __future__ import annotations

from hatchway.flows.login.guard import ACCOUNT_IP_POLICY, PasswordGuard
from hatchway.runtime import FrozenClock
from tests.limits.conftest import LimitsFactory

IP = "203.0.113.9"


def test_failures_on_either_replica_add_up_to_one_lock(
    backend: LimitsFactory, clock: FrozenClock
) -> None:
    a = PasswordGuard(limits=backend(), session_max_failures=100)
    b = PasswordGuard(limits=backend(), session_max_failures=100)
    outcome = None
    for n in range(ACCOUNT_IP_POLICY.lockout_after):
        guard = a if n % 2 else b
        assert guard.check(account="alice", ip=IP, session=f"s{n}", now=clock()).allowed
        outcome = guard.record_failure(account="alice", ip=IP, session=f"s{n}", now=clock())
        clock.advance(ACCOUNT_IP_POLICY.max_delay + 1)  # wait out every back-off
    assert outcome is not None and outcome.locked
    for guard in (a, b):
        answer = guard.check(account="alice", ip=IP, session="next", now=clock())
        assert not answer.allowed and answer.retry_after > 0
    # Another source is not locked out by this IP's lock (only slowed by the account's).
    clock.advance(ACCOUNT_IP_POLICY.max_delay + 1)
    assert b.check(account="alice", ip="198.51.100.4", session="other", now=clock()).allowed


def test_back_off_set_on_one_replica_holds_on_the_other(
    backend: LimitsFactory, clock: FrozenClock
) -> None:
    a = PasswordGuard(limits=backend())
    b = PasswordGuard(limits=backend())
    for n in range(ACCOUNT_IP_POLICY.free_failures + 1):
        a.record_failure(account="bob", ip=IP, session=f"s{n}", now=clock())
    refused = b.check(account="bob", ip=IP, session="fresh", now=clock())
    assert not refused.allowed
    assert refused.retry_after == 2  # ACCOUNT_IP_POLICY.base_delay after one paid failure
    # A success on B clears what A recorded.
    b.record_success(account="bob", ip=IP, session="fresh")
    assert a.check(account="bob", ip=IP, session="fresh", now=clock()).allowed


def test_session_failure_count_is_shared(backend: LimitsFactory, clock: FrozenClock) -> None:
    a = PasswordGuard(limits=backend(), session_max_failures=3)
    b = PasswordGuard(limits=backend(), session_max_failures=3)
    outcomes = [
        (a, b)[n % 2].record_failure(account=f"u{n}", ip=IP, session="one", now=clock())
        for n in range(3)
    ]
    assert [o.session_exhausted for o in outcomes] == [False, False, True]
    assert not a.check(account="u9", ip=IP, session="one", now=clock()).allowed
    assert not b.check(account="u9", ip=IP, session="one", now=clock()).allowed


def test_operator_reset_is_respected_on_every_backend(
    backend: LimitsFactory, clock: FrozenClock
) -> None:
    guard = PasswordGuard(limits=backend())
    for n in range(ACCOUNT_IP_POLICY.lockout_after):
        guard.record_failure(account="carol", ip=IP, session=f"s{n}", now=clock())
    assert not guard.check(account="carol", ip=IP, session="x", now=clock()).allowed
    clock.advance(1)
    assert guard.check(
        account="carol", ip=IP, session="x", now=clock(), reset_since=clock() - 0.5
    ).allowed
