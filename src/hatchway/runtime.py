"""Injected time and randomness.

Protocol cores never read the clock or the OS random source themselves; they take
a ``Clock`` and a ``Random`` so that tests can replay known-answer transcripts and
run time forward without patching anything (STYLE.md §8).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Returns the current time as POSIX seconds (float)."""

Random = Callable[[int], bytes]
"""Returns ``n`` cryptographically strong random bytes."""


def system_clock() -> float:
    return time.time()


def system_random(n: int) -> bytes:
    return os.urandom(n)


class FrozenClock:
    """A clock for tests and replays: it only moves when told to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SeededRandom:
    """Deterministic bytes for known-answer tests. Never use outside tests."""

    def __init__(self, seed: bytes = b"hatchway") -> None:
        import hashlib

        self._seed = seed
        self._counter = 0
        self._hash = hashlib.sha256

    def __call__(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            self._counter += 1
            out += self._hash(self._seed + self._counter.to_bytes(8, "big")).digest()
        return out[:n]
