"""Budgets in one process's memory: the embedded default (no ``HATCHWAY_REDIS_URL``).

Every table is bounded by entry count, least recently used first. For buckets,
values and counters, dropping an entry forgets a debt, which an attacker with
that many keys could exploit; the alternative, refusing everyone when full,
would hand them a denial of service instead. The single-use table is the
exception: it fails closed (see :class:`UsedOnce`), because forgetting an entry
there would allow a replay.

Shared by nothing but this process: N replicas each keep their own, so use
:mod:`hatchway.limits.redis_limits` for more than one.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from hatchway.login.ratelimit import Allowance, BucketState, TokenBucket

__all__ = ["MemoryLimits", "UsedOnce"]

DEFAULT_MAX_ENTRIES = 100_000


class UsedOnce:
    """Identifiers seen within their lifetime; a second :meth:`use` is refused.

    Bounded by construction: an entry lives only until its deadline, and the
    callers are rate limited. When the table is full of live entries it refuses
    new ones (fail closed) rather than forget one that could then be replayed.
    """

    def __init__(self, max_entries: int = 200_000) -> None:
        self.max_entries = max_entries
        self._until: OrderedDict[str, float] = OrderedDict()
        self._lock = threading.Lock()

    def use(self, identifier: str, *, until: float, now: float) -> bool:
        """Record ``identifier`` as used until ``until``; False if it was used already."""
        with self._lock:
            # Deadlines are not sorted by insertion when lifetimes differ; dropping
            # only the expired head is still safe (late entries merely linger).
            while self._until and next(iter(self._until.values())) <= now:
                self._until.popitem(last=False)
            if until <= now or identifier in self._until or len(self._until) >= self.max_entries:
                return False
            self._until[identifier] = until
            return True


class MemoryLimits:
    """:class:`~hatchway.limits.base.Limits` in this process's memory; thread-safe."""

    def __init__(self, *, max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be positive")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._buckets: OrderedDict[str, tuple[BucketState, TokenBucket]] = OrderedDict()
        self._values: OrderedDict[str, str] = OrderedDict()
        self._counts: OrderedDict[str, int] = OrderedDict()
        self._used = UsedOnce(max_entries=2 * max_entries)
        self._marks: OrderedDict[str, float] = OrderedDict()

    def hit(self, key: str, policy: TokenBucket, now: float) -> Allowance:
        with self._lock:
            old = self._buckets.pop(key, None)
            allowance, state = policy.take(None if old is None else old[0], now)
            self._buckets[key] = (state, policy)
            if len(self._buckets) > self.max_entries:
                # Full buckets are the same as no entry: drop those first.
                for idle in [k for k, (s, p) in self._buckets.items() if p.is_idle(s, now)]:
                    del self._buckets[idle]
                while len(self._buckets) > self.max_entries:
                    self._buckets.popitem(last=False)
            return allowance

    def load(self, key: str) -> str | None:
        with self._lock:
            return self._values.get(key)

    def swap(self, key: str, expected: str | None, new: str | None, *, ttl: float) -> bool:
        with self._lock:
            if self._values.get(key) != expected:
                return False
            self._values.pop(key, None)
            if new is not None:
                self._values[key] = new
                while len(self._values) > self.max_entries:
                    self._values.popitem(last=False)
            return True

    def bump(self, key: str, *, ttl: float) -> int:
        with self._lock:
            count = self._counts.pop(key, 0) + 1
            self._counts[key] = count
            while len(self._counts) > self.max_entries:
                self._counts.popitem(last=False)
            return count

    def count(self, key: str) -> int:
        with self._lock:
            return self._counts.get(key, 0)

    def forget(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._values.pop(key, None)
                self._counts.pop(key, None)
                self._buckets.pop(key, None)

    def use_once(self, key: str, *, until: float, now: float) -> bool:
        return self._used.use(key, until=until, now=now)

    def gate(self, key: str, *, now: float, interval: float, ttl: float) -> float | None:
        with self._lock:
            last = self._marks.get(key)
            if last is not None and now < last + interval:
                return last
            self._marks.pop(key, None)
            self._marks[key] = now
            while len(self._marks) > self.max_entries:
                self._marks.popitem(last=False)
            return None

    async def agate(self, key: str, *, now: float, interval: float, ttl: float) -> float | None:
        return self.gate(key, now=now, interval=interval, ttl=ttl)

    def close(self) -> None:
        """Nothing to release."""
