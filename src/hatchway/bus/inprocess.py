"""The embedded default bus: one process, no I/O.

Enough for ``hatchway serve`` on one machine: publisher and waiter share the
process, so the hub's thread-safe dispatch is the whole transport.
"""

from __future__ import annotations

from hatchway.bus.base import Bus


class InProcessBus(Bus):
    """Fan-out within this process; ``publish`` may run on any thread."""

    def publish(self, channel: str, payload: str) -> None:
        self._check(channel, payload)
        self._hub.dispatch(channel, payload)
