"""Budgets in Redis, shared by every replica (``HATCHWAY_REDIS_URL``).

Each step is one atomic server-side operation: a Lua script (EVALSHA) for the
token bucket, the compare-and-set and the counter, and ``SET NX PX`` for
single use, so two replicas spending the same budget at the same instant
cannot both see the last token. The scripts compute with the ``now`` the caller
passes (the injected clock), never Redis's ``TIME``, so a decision is the same
one :class:`~hatchway.login.ratelimit.TokenBucket` makes in memory; Redis's
own clock only expires keys (server-side TTL, always at least as long as the
entry matters, plus a margin for clock skew between replicas).

The client is redis-py's asyncio client (no protocol code here). The flows that
call it are synchronous and run in worker threads, so this object owns a small
event loop in a daemon thread and submits every step to it; a call made from
that loop's own thread would deadlock and is refused. Any Redis failure or
timeout raises :class:`~hatchway.limits.base.LimitsUnavailable`: callers fail
closed.

Keys are ``<prefix><kind>:<caller's key>``; the prefix (``HATCHWAY_REDIS_PREFIX``)
keeps deployments, and tests, apart on one server.
"""

from __future__ import annotations

import asyncio
import math
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from hatchway.errors import ConfigurationError
from hatchway.limits.base import LimitsUnavailable
from hatchway.login.ratelimit import Allowance, TokenBucket

__all__ = ["DEFAULT_PREFIX", "RedisLimits"]

DEFAULT_PREFIX = "hatchway:"
DEFAULT_TIMEOUT = 2.0
SKEW_MARGIN_MS = 60_000
"""Extra life of every key beyond the moment it stops mattering (replicas' clocks differ)."""

T = TypeVar("T")

# KEYS[1] bucket hash {t: tokens, u: updated_at}; ARGV: capacity, refill/s, now, margin ms.
# The arithmetic is TokenBucket.take's, step for step.
_HIT = """
local cap = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local tokens = cap
local s = redis.call('HMGET', KEYS[1], 't', 'u')
if s[1] and s[2] then
  local elapsed = now - tonumber(s[2])
  if elapsed < 0 then elapsed = 0 end
  tokens = math.min(cap, tonumber(s[1]) + elapsed * rate)
end
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 't', string.format('%.17g', tokens), 'u', ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil((cap - tokens) / rate * 1000) + tonumber(ARGV[4]))
return {allowed, string.format('%.17g', tokens)}
"""

# KEYS[1]; ARGV: expected present (1/0), expected, new present (1/0), new, ttl ms.
_SWAP = """
local cur = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if cur ~= ARGV[2] then return 0 end
elseif cur then
  return 0
end
if ARGV[3] == '1' then
  redis.call('SET', KEYS[1], ARGV[4], 'PX', ARGV[5])
else
  redis.call('DEL', KEYS[1])
end
return 1
"""

# KEYS[1]; ARGV: ttl ms.
_BUMP = """
local n = redis.call('INCR', KEYS[1])
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return n
"""


# KEYS[1] last mark; ARGV: now, interval, ttl ms. Too soon: the last mark, unchanged.
# (A replica whose clock is behind the mark's is "too soon" too: never open.)
_GATE = """
local prev = redis.call('GET', KEYS[1])
if prev and tonumber(ARGV[1]) < tonumber(prev) + tonumber(ARGV[2]) then
  return prev
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return false
"""


def _import_redis() -> Any:
    try:
        import redis.asyncio as aioredis  # optional extra: only with a URL
    except ImportError:
        raise ConfigurationError(
            "HATCHWAY_REDIS_URL is set but the redis package is missing: "
            "pip install 'hatchway[redis]'"
        ) from None
    return aioredis


def _ms(seconds: float) -> int:
    return max(1, math.ceil(seconds * 1000))


class RedisLimits:
    """:class:`~hatchway.limits.base.Limits` in Redis; one instance per process."""

    def __init__(
        self, url: str, *, prefix: str = DEFAULT_PREFIX, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        aioredis = _import_redis()
        self.prefix = prefix
        self._timeout = timeout
        self._errors: tuple[type[BaseException], ...] = (
            aioredis.RedisError,
            OSError,
            TimeoutError,
        )
        self._client = aioredis.Redis.from_url(
            url, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        self._hit = self._client.register_script(_HIT)
        self._swap = self._client.register_script(_SWAP)
        self._bump = self._client.register_script(_BUMP)
        self._gate = self._client.register_script(_GATE)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="hatchway-redis", daemon=True
        )
        self._thread.start()
        self._closed = False

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("RedisLimits called from its own event loop thread")
        if self._closed:
            coro.close()
            raise LimitsUnavailable("shared limits are closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout=2 * self._timeout + 1)
        except self._errors as exc:
            future.cancel()
            raise LimitsUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    async def _arun(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on this object's loop from another running loop."""
        if self._closed:
            coro.close()
            raise LimitsUnavailable("shared limits are closed")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(future), 2 * self._timeout + 1)
        except self._errors as exc:
            future.cancel()
            raise LimitsUnavailable(f"redis: {type(exc).__name__}: {exc}") from exc

    def _key(self, kind: str, key: str) -> str:
        return f"{self.prefix}{kind}:{key}"

    def hit(self, key: str, policy: TokenBucket, now: float) -> Allowance:
        args = [repr(float(policy.capacity)), repr(policy.refill_per_second), repr(now)]
        allowed, tokens = self._run(
            self._hit(keys=[self._key("bucket", key)], args=[*args, SKEW_MARGIN_MS])
        )
        if int(allowed) == 1:
            return Allowance(allowed=True, retry_after=0)
        wait = (1.0 - float(tokens)) / policy.refill_per_second
        return Allowance(allowed=False, retry_after=max(1, math.ceil(wait)))

    def load(self, key: str) -> str | None:
        value = self._run(self._client.get(self._key("value", key)))
        return None if value is None else bytes(value).decode()

    def swap(self, key: str, expected: str | None, new: str | None, *, ttl: float) -> bool:
        args = [
            "0" if expected is None else "1",
            expected or "",
            "0" if new is None else "1",
            new or "",
            _ms(ttl) + SKEW_MARGIN_MS,
        ]
        return int(self._run(self._swap(keys=[self._key("value", key)], args=args))) == 1

    def bump(self, key: str, *, ttl: float) -> int:
        return int(
            self._run(self._bump(keys=[self._key("count", key)], args=[_ms(ttl) + SKEW_MARGIN_MS]))
        )

    def count(self, key: str) -> int:
        value = self._run(self._client.get(self._key("count", key)))
        return 0 if value is None else int(value)

    def forget(self, *keys: str) -> None:
        if keys:
            names = [self._key(kind, k) for k in keys for kind in ("value", "count", "bucket")]
            self._run(self._client.delete(*names))

    def use_once(self, key: str, *, until: float, now: float) -> bool:
        if until <= now:
            return False
        # SET NX is the atomic "first one wins"; the TTL is the identifier's life.
        done = self._run(
            self._client.set(
                self._key("once", key), b"1", nx=True, px=_ms(until - now) + SKEW_MARGIN_MS
            )
        )
        return bool(done)

    def _gate_call(
        self, key: str, now: float, interval: float, ttl: float
    ) -> Coroutine[Any, Any, Any]:
        args = [repr(now), repr(float(interval)), _ms(ttl) + SKEW_MARGIN_MS]
        return self._gate(keys=[self._key("gate", key)], args=args)  # type: ignore[no-any-return]

    def gate(self, key: str, *, now: float, interval: float, ttl: float) -> float | None:
        last = self._run(self._gate_call(key, now, interval, ttl))
        return None if last is None else float(last)

    async def agate(self, key: str, *, now: float, interval: float, ttl: float) -> float | None:
        last = await self._arun(self._gate_call(key, now, interval, ttl))
        return None if last is None else float(last)

    def ping(self) -> None:
        """Raise :class:`LimitsUnavailable` unless Redis answers."""
        self._run(self._client.ping())

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._run(self._client.aclose())
        except LimitsUnavailable:
            pass
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            self._loop.close()
