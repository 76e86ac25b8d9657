"""Rate limits for the login flow: user-code guessing and password attempts.

RFC 8628 §5.1 warns that the short ``user_code`` invites brute force and asks for
rate limiting; the issue's hardening section adds per-account password back-off
and lockout. Both are sans-I/O: the caller passes ``now`` and keeps the state.

* :class:`TokenBucket` is the policy, :class:`BucketState` the per-key value, and
  :meth:`TokenBucket.take` the pure step. :class:`KeyedLimiter` is a bounded
  in-memory map of them for one process (keys such as ``"ip:203.0.113.7"`` or
  ``"code:BDFG-HJKL"``); the login flow keeps its buckets behind
  :mod:`hatchway.limits` instead, so that replicas can share them (Redis).
* :class:`LockoutPolicy` with :class:`AttemptState` does exponential back-off
  after a few free failures, capped, and a timed lock after ``lockout_after``.
  When the lock ends, or after ``forget_after`` quiet seconds, the count starts
  again from zero: a stranger who knows only a name must keep paying for every
  minute the lock lasts, and cannot stretch one burst into a permanent lock.

Every answer is an :class:`Allowance`: allowed or not, and a retry-after. A
locked account answers exactly like a maximal back-off so that the reply does
not reveal that the account exists or is locked.
"""

from __future__ import annotations

import ipaddress
import math
from collections import OrderedDict
from dataclasses import dataclass

__all__ = [
    "Allowance",
    "AttemptState",
    "BucketState",
    "KeyedLimiter",
    "LockoutPolicy",
    "TokenBucket",
]


@dataclass(frozen=True, slots=True)
class Allowance:
    """The only thing a limiter tells its caller."""

    allowed: bool
    retry_after: int
    """Whole seconds to wait (HTTP ``Retry-After``); 0 when allowed."""


_ALLOW = Allowance(allowed=True, retry_after=0)


def _deny(wait: float) -> Allowance:
    return Allowance(allowed=False, retry_after=max(1, math.ceil(wait)))


@dataclass(frozen=True, slots=True)
class BucketState:
    """Tokens left in one key's bucket and when that was computed."""

    tokens: float
    updated_at: float


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """Allow bursts of ``capacity``, refilled at ``refill_per_second``."""

    capacity: int
    refill_per_second: float

    def __post_init__(self) -> None:
        if self.capacity < 1 or self.refill_per_second <= 0:
            raise ValueError("capacity must be >= 1 and refill rate positive")

    def _refill(self, state: BucketState | None, now: float) -> float:
        if state is None:
            return float(self.capacity)
        # A clock that steps backwards must not mint tokens, nor take them away.
        elapsed = max(0.0, now - state.updated_at)
        return min(float(self.capacity), state.tokens + elapsed * self.refill_per_second)

    def take(self, state: BucketState | None, now: float) -> tuple[Allowance, BucketState]:
        """Spend one token if there is one. Returns the answer and the new state."""
        tokens = self._refill(state, now)
        if tokens >= 1.0:
            return _ALLOW, BucketState(tokens=tokens - 1.0, updated_at=now)
        wait = (1.0 - tokens) / self.refill_per_second
        return _deny(wait), BucketState(tokens=tokens, updated_at=now)

    def is_idle(self, state: BucketState, now: float) -> bool:
        """A full bucket is the same as no entry, so it can be dropped."""
        return self._refill(state, now) >= self.capacity


class KeyedLimiter:
    """Token buckets keyed by string, held in one process's memory.

    The map is bounded: full buckets are pruned first, then the least recently
    used key is dropped. Dropping a key forgets its debt, which an attacker with
    ``max_keys`` addresses could exploit; the alternative, refusing everyone
    when the table is full, would hand them a denial of service instead.
    """

    def __init__(self, policy: TokenBucket, *, max_keys: int = 100_000) -> None:
        if max_keys < 1:
            raise ValueError("max_keys must be positive")
        self.policy = policy
        self.max_keys = max_keys
        self._buckets: OrderedDict[str, BucketState] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def hit(self, key: str, now: float) -> Allowance:
        allowance, state = self.policy.take(self._buckets.pop(key, None), now)
        self._buckets[key] = state
        if len(self._buckets) > self.max_keys:
            self.prune(now)
            while len(self._buckets) > self.max_keys:
                self._buckets.popitem(last=False)
        return allowance

    def prune(self, now: float) -> int:
        """Drop buckets that have refilled completely; returns how many."""
        idle = [k for k, s in self._buckets.items() if self.policy.is_idle(s, now)]
        for key in idle:
            del self._buckets[key]
        return len(idle)


@dataclass(frozen=True, slots=True)
class AttemptState:
    """Password-attempt history of one account, as a store persists it."""

    failures: int = 0
    blocked_until: float = 0.0
    locked: bool = False
    last_failure_at: float = 0.0


@dataclass(frozen=True, slots=True)
class LockoutPolicy:
    """Back-off and lockout for password attempts against one account.

    After ``free_failures`` failures each further failure blocks the account for
    ``base_delay · 2**(n - 1)`` seconds (n counts failures past the free ones),
    capped at ``max_delay``. At ``lockout_after`` failures the account is locked:
    for ``lockout_duration`` seconds, or until :meth:`unlock` when that is None.
    A timed lock that has ended, and failures older than ``forget_after``
    seconds, no longer count: the next failure is the first again.
    """

    free_failures: int = 3
    base_delay: float = 1.0
    max_delay: float = 300.0
    lockout_after: int = 10
    lockout_duration: float | None = 3600.0
    forget_after: float = 3600.0

    def __post_init__(self) -> None:
        if not 0 <= self.free_failures < self.lockout_after:
            raise ValueError("need 0 <= free_failures < lockout_after")
        if self.base_delay <= 0 or self.max_delay < self.base_delay:
            raise ValueError("need 0 < base_delay <= max_delay")
        if self.lockout_duration is not None and self.lockout_duration <= 0:
            raise ValueError("lockout_duration must be positive or None")
        if self.forget_after <= 0:
            raise ValueError("forget_after must be positive")

    def delay_after(self, failures: int) -> float:
        """Seconds blocked after the ``failures``-th consecutive failure."""
        extra = failures - self.free_failures
        if extra <= 0:
            return 0.0
        # min() on the exponent first keeps 2**extra from growing without bound.
        return min(self.base_delay * 2.0 ** min(extra - 1, 64), self.max_delay)

    def is_locked(self, state: AttemptState, now: float) -> bool:
        """True while the account is locked out (the ``account_active`` check)."""
        if not state.locked:
            return False
        return self.lockout_duration is None or now < state.blocked_until

    def check(self, state: AttemptState, now: float) -> Allowance:
        """May a password attempt be made now? Call before verifying the proof."""
        if state.locked and self.lockout_duration is None:
            return _deny(self.max_delay)
        if now < state.blocked_until:
            return _deny(min(state.blocked_until - now, self.max_delay))
        return _ALLOW

    def current(self, state: AttemptState, now: float) -> AttemptState:
        """``state`` as it counts at ``now``: an ended lock or stale failures are forgotten."""
        if state.locked and self.lockout_duration is None:
            return state
        ended = state.locked and now >= state.blocked_until
        stale = now - state.last_failure_at >= self.forget_after and now >= state.blocked_until
        return AttemptState() if ended or stale else state

    def record_failure(self, state: AttemptState, now: float) -> AttemptState:
        failures = self.current(state, now).failures + 1
        if failures >= self.lockout_after:
            until = now + self.lockout_duration if self.lockout_duration is not None else 0.0
            return AttemptState(
                failures=failures, blocked_until=until, locked=True, last_failure_at=now
            )
        return AttemptState(
            failures=failures, blocked_until=now + self.delay_after(failures), last_failure_at=now
        )

    def record_success(self, state: AttemptState) -> AttemptState:
        """A verified password clears the history."""
        return AttemptState()

    def unlock(self, state: AttemptState) -> AttemptState:
        """The administrator's unlock: a clean slate."""
        return AttemptState()


def ip_key(ip: str) -> str:
    """The rate-limit key for a client address.

    IPv6 addresses are grouped by their /64, the unit one subscriber is normally
    given: keyed by the full address, one /64 would be 2**64 separate budgets. An
    IPv4-mapped IPv6 address counts as its IPv4 address. Anything that is not an
    address (``"unknown"``) is its own key.
    """
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)
