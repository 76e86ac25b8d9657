"""The server's window of uplinks in flight, acknowledged in arrival order (sans-I/O).

MQTT 5 §4.6 [MQTT-4.6.0-2] (MQTT 3.1.1 §4.6 likewise): a receiver MUST send PUBACK
packets in the order in which the corresponding PUBLISH packets were received. The
gateway handles up to ``size`` uplinks at once, so that they share group-commit
batches (flows/ingest/committer.py), and they finish in any order. This window
admits them in arrival order and *releases* each (the gateway then answers and
acknowledges it) only once it and every uplink before it have finished: an uplink
that finished early waits for the slower ones ahead of it.

An uplink that failed (the store is down) is never released, nor is anything after
it: the window halts. Acknowledging the ones behind it would break the order, and the
broker redelivers all of them after the gateway reconnects; those already stored are
answered from the reply cache or refused as replays, never stored twice.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(slots=True)
class _Slot(Generic[T]):
    ticket: int
    item: T
    finished: bool = False
    failed: bool = False


class AckWindow(Generic[T]):
    """Items admitted in order, released in the same order once finished."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the window holds at least one uplink")
        self.size = size
        self.halted = False
        self._slots: deque[_Slot[T]] = deque()
        self._next = 0

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def full(self) -> bool:
        return len(self._slots) >= self.size

    def admit(self, item: T) -> int:
        """Take ``item`` (the next uplink received); returns its ticket."""
        if self.full:
            raise OverflowError("the window is full")
        ticket = self._next
        self._next += 1
        self._slots.append(_Slot(ticket, item))
        return ticket

    def finish(self, ticket: int, *, failed: bool = False) -> list[T]:
        """Record that ``ticket`` finished; returns what may now be released, in order."""
        first = self._slots[0].ticket if self._slots else self._next
        index = ticket - first
        if not 0 <= index < len(self._slots) or self._slots[index].finished:
            raise KeyError(f"ticket {ticket} is not in flight")
        slot = self._slots[index]
        slot.finished, slot.failed = True, failed
        released: list[T] = []
        while not self.halted and self._slots and self._slots[0].finished:
            if self._slots[0].failed:
                self.halted = True
                break
            released.append(self._slots.popleft().item)
        return released

    def halt(self) -> None:
        """Release nothing more (the connection is gone: its packet ids mean nothing)."""
        self.halted = True
