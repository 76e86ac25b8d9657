"""The one interface behind every login budget: rate limits, attempt counters, single use.

Issue 8 §4: held in process memory, N replicas give an attacker N times every
budget. :class:`Limits` is the small set of atomic steps the login flow needs,
with two implementations behind it: :class:`~hatchway.limits.memory.MemoryLimits`
(one process, the embedded default) and
:class:`~hatchway.limits.redis_limits.RedisLimits` (every replica, when
``HATCHWAY_REDIS_URL`` is set).

Decisions stay sans-I/O and testable. The caller passes ``now`` into every step
(Redis scripts compute with it, not with the server's clock), the token-bucket
arithmetic is :class:`~hatchway.login.ratelimit.TokenBucket`'s, and the lockout
policy runs in Python on a state read with :meth:`Limits.load` and written back
with the compare-and-set :meth:`Limits.swap`. A backend only adds storage,
atomicity and expiry (Redis expires keys by server-side TTL; memory is bounded
by entry count).
"""

from __future__ import annotations

from typing import Protocol

from hatchway.errors import HatchwayError
from hatchway.login.ratelimit import Allowance, TokenBucket

__all__ = ["Bucket", "Limits", "LimitsUnavailable"]


class LimitsUnavailable(HatchwayError):
    """The shared limit store did not answer. Callers fail closed (503), never open."""


class Limits(Protocol):
    """Atomic budget steps shared by every replica that uses the same backend.

    Keys are plain strings chosen by the caller (``"start:ip:203.0.113.7"``); a
    backend adds its own namespace. Every method is safe to call from any thread.
    """

    def hit(self, key: str, policy: TokenBucket, now: float) -> Allowance:
        """Spend one token of the bucket ``key`` under ``policy`` (one atomic step)."""
        ...

    def load(self, key: str) -> str | None:
        """The opaque value stored under ``key``, or None."""
        ...

    def swap(self, key: str, expected: str | None, new: str | None, *, ttl: float) -> bool:
        """Set ``key`` to ``new`` (None deletes it) if it still holds ``expected``.

        ``ttl`` seconds is how long the new value must at least be kept.
        """
        ...

    def bump(self, key: str, *, ttl: float) -> int:
        """Add one to the counter ``key`` and return it; it lives ``ttl`` seconds."""
        ...

    def count(self, key: str) -> int:
        """The counter ``key``'s value (0 when absent)."""
        ...

    def forget(self, *keys: str) -> None:
        """Delete values and counters."""
        ...

    def use_once(self, key: str, *, until: float, now: float) -> bool:
        """Record ``key`` as used until ``until``; False if it already was (or is past)."""
        ...

    def gate(self, key: str, *, now: float, interval: float, ttl: float) -> float | None:
        """Mark ``now`` unless the last mark is less than ``interval`` seconds old.

        Returns None when ``now`` was marked (the poll is on time), else the
        last mark, unchanged (too soon). One atomic step; the mark lives
        ``ttl`` seconds.
        """
        ...

    async def agate(self, key: str, *, now: float, interval: float, ttl: float) -> float | None:
        """:meth:`gate` for callers on an event loop (it never blocks the loop)."""
        ...

    def close(self) -> None:
        """Release connections; the object is not used afterwards."""
        ...


class Bucket:
    """One named token-bucket budget (``"start"``, ``"finish"``) over a :class:`Limits`.

    ``policy`` may be replaced at run time (tests shrink it); the backend keeps
    only the state, so the next :meth:`hit` simply uses the new policy.
    """

    def __init__(self, limits: Limits, name: str, policy: TokenBucket) -> None:
        self.limits = limits
        self.name = name
        self.policy = policy

    def hit(self, key: str, now: float) -> Allowance:
        return self.limits.hit(f"{self.name}:{key}", self.policy, now)
