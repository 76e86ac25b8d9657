"""Replay protection: a sliding window over per-sender sequence numbers, and a
small ``jti`` cache for the device side.

``ReplayWindow`` is the anti-replay window of RFC 4303 §3.4.3 (and RFC 6479's
bitmap form): the receiver remembers the highest sequence number seen and a
bitmap of the ``size`` numbers at and below it. A number above the window
advances it; one inside it is accepted once; one below it is too old. The window
is an immutable value, so the caller persists the returned window atomically
with whatever else it records for the message (no lost updates, no partial
state after a failure).

``JtiCache`` remembers ``jti`` values until their message's ``exp``, after which
``open_message`` would reject the message anyway (RFC 7519 §4.1.7). Time is
injected. The server keeps the durable equivalent in its store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hatchway.errors import InvalidMessage
from hatchway.msgsec.messages import MAX_SEQ

__all__ = ["JtiCache", "ReplayWindow"]


@dataclass(frozen=True, slots=True)
class ReplayWindow:
    """Sliding anti-replay window; bit ``i`` of ``bitmap`` is ``highest - i``."""

    highest: int = -1
    bitmap: int = 0
    size: int = 64

    def __post_init__(self) -> None:
        if not 0 < self.size <= 4096:
            raise ValueError("window size must be in 1..4096")
        if not -1 <= self.highest < MAX_SEQ or not 0 <= self.bitmap < (1 << self.size):
            raise ValueError("window state out of range")

    def accept(self, seq: int) -> ReplayWindow:
        """Return the window advanced past ``seq``; raise if ``seq`` is a replay."""
        if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < MAX_SEQ:
            raise InvalidMessage(reason="seq out of range")
        if seq > self.highest:
            shift = seq - self.highest
            mask = (1 << self.size) - 1
            bitmap = 1 if shift >= self.size else ((self.bitmap << shift) | 1) & mask
            return ReplayWindow(seq, bitmap, self.size)
        offset = self.highest - seq
        if offset >= self.size:
            raise InvalidMessage(reason="seq older than the replay window")
        bit = 1 << offset
        if self.bitmap & bit:
            raise InvalidMessage(reason="seq replayed")
        return ReplayWindow(self.highest, self.bitmap | bit, self.size)


@dataclass(slots=True)
class JtiCache:
    """In-memory ``jti`` memory for one receiver, bounded by ``exp`` and size."""

    max_entries: int = 4096
    _seen: dict[str, int] = field(default_factory=dict, repr=False)

    def check_and_add(self, jti: str, exp: int, *, now: float) -> None:
        """Record ``jti`` until ``exp``; raise ``InvalidMessage`` if seen before.

        When full of unexpired entries the cache refuses new ones rather than
        forgetting live ones, because forgetting would re-open a replay.
        """
        self.purge(now=now)
        if jti in self._seen:
            raise InvalidMessage(reason="jti replayed")
        if len(self._seen) >= self.max_entries:
            raise InvalidMessage(reason="jti cache full")
        self._seen[jti] = exp

    def purge(self, *, now: float) -> None:
        """Forget every entry whose message has expired (``exp <= now``)."""
        expired = [j for j, exp in self._seen.items() if exp <= now]
        for jti in expired:
            del self._seen[jti]

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, jti: object) -> bool:
        return jti in self._seen
