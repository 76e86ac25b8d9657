"""Shared login budgets (issue 8 §4): what one step costs in Redis against memory.

Each contender runs the same atomic steps the login flow takes per request, in
one process, sequentially (the latency a request pays, not Redis's throughput):

* ``hit``: one token-bucket step (every start, code lookup and finish);
* ``gate``: the poll gate (every token-endpoint poll of a live session);
* ``guard``: a password-attempt check (three reads; every SCRAM start and finish);
* ``use_once``: the single-use mark of a SCRAM exchange (every finish).

The baseline is :class:`MemoryLimits` in the same run; Redis is the local
server at ``HATCHWAY_TEST_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``),
under a throw-away key prefix that is deleted afterwards.

    .venv/bin/python bench/bench_limits.py [--number N] [--repeat R]
"""

from __future__ import annotations

import argparse
import itertools
import os
import secrets
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _util import median_us
from hatchway.flows.login.guard import PasswordGuard
from hatchway.limits import Limits, MemoryLimits
from hatchway.limits.redis_limits import RedisLimits
from hatchway.login.ratelimit import TokenBucket

URL = os.environ.get("HATCHWAY_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POLICY = TokenBucket(capacity=10**9, refill_per_second=1.0)


def steps(limits: Limits) -> dict[str, object]:
    counter = itertools.count()
    guard = PasswordGuard(limits=limits)
    now = 1_700_000_000.0

    def hit() -> object:
        return limits.hit("bench:ip:203.0.113.1", POLICY, now)

    def gate() -> object:
        return limits.gate(f"poll:{next(counter)}", now=now, interval=5, ttl=300)

    def check() -> object:
        return guard.check(account="alice", ip="203.0.113.1", session="s", now=now)

    def once() -> object:
        return limits.use_once(f"exchange:{next(counter)}", until=now + 120, now=now)

    return {"hit": hit, "gate": gate, "guard": check, "use_once": once}


def gates_in_flight(limits: Limits, total: int, in_flight: int) -> float:
    """µs per poll gate when ``in_flight`` polls await it at once on one event loop
    (the token endpoint's fast path under load): throughput, not latency."""
    import asyncio
    import time

    async def run() -> float:
        counter = itertools.count()
        start = time.perf_counter()
        for _ in range(total // in_flight):
            await asyncio.gather(
                *(
                    limits.agate(f"poll:{next(counter)}", now=1.7e9, interval=5, ttl=300)
                    for _ in range(in_flight)
                )
            )
        return (time.perf_counter() - start) / total * 1e6

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=2000)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    prefix = f"hwbench:{secrets.token_hex(4)}:"
    redis_limits = RedisLimits(URL, prefix=prefix)
    try:
        redis_limits.ping()
        memory, shared = steps(MemoryLimits()), steps(redis_limits)
        import redis

        raw = redis.Redis.from_url(URL)
        floor = median_us(raw.ping, number=args.number, repeat=args.repeat)
        hop = median_us(redis_limits.ping, number=args.number, repeat=args.repeat)
        raw.close()
        print(f"floor: one PING with redis-py's blocking client {floor:.0f} µs; through")
        print(f"RedisLimits (asyncio client on its own loop thread) {hop:.0f} µs")
        print(f"{'step':<10}{'memory µs':>12}{'redis µs':>12}{'ratio':>9}")
        for name in memory:
            base = median_us(memory[name], number=args.number, repeat=args.repeat)  # type: ignore[arg-type]
            cost = median_us(shared[name], number=args.number, repeat=args.repeat)  # type: ignore[arg-type]
            print(f"{name:<10}{base:>12.2f}{cost:>12.1f}{cost / base:>8.0f}×")
        base = gates_in_flight(MemoryLimits(), args.number, 100)
        cost = gates_in_flight(redis_limits, args.number, 100)
        print(f"{'agate×100':<10}{base:>12.2f}{cost:>12.1f}{cost / base:>8.0f}×  (100 in flight)")
    finally:
        import redis

        client = redis.Redis.from_url(URL)
        for key in client.scan_iter(match=prefix + "*", count=1000):
            client.delete(key)
        client.close()
        redis_limits.close()


if __name__ == "__main__":
    main()
