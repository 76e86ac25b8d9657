"""The notification bus interface: wake a waiter when something happens elsewhere.

ARCHITECTURE.md: "Events that cross processes go on one notification bus ... A
login approved on one replica must wake the device that waits on another."
The login flow publishes on a channel named after the session reference when
the phone approves or denies, and the device's SSE / long-poll handler waits on
that channel. The bus carries *wake-ups*, not state: the waiter re-reads the
session from the store after every wake-up (and on :data:`RESYNC`), so a lost
or duplicated notification costs latency, never correctness.

Waiting without a race::

    with bus.subscribe(channel) as sub:          # 1. register first
        session = await read_session()           # 2. then check the state
        while session.state is PENDING:
            await sub.get(timeout=interval)      # 3. sleep until woken (or poll)
            session = await read_session()
"""

from __future__ import annotations

import abc
import asyncio
from types import TracebackType

from hatchway.bus._hub import Hub, Subscription, check_channel, check_payload


class Bus(abc.ABC):
    """Publish from any thread; wait from any asyncio task."""

    def __init__(self) -> None:
        self._hub = Hub()

    @abc.abstractmethod
    def publish(self, channel: str, payload: str) -> None:
        """Send ``payload`` to every current waiter on ``channel``, on every replica.

        Synchronous and thread-safe, for the store's worker threads. From async
        code use :meth:`publish_async`, which does not block the loop.
        """

    async def publish_async(self, channel: str, payload: str) -> None:
        await asyncio.to_thread(self.publish, channel, payload)

    def subscribe(self, channel: str) -> Subscription:
        """Start receiving ``channel`` now; call from a running event loop."""
        return self._hub.add(channel)

    async def wait(self, channel: str, timeout: float | None) -> str | None:
        """The next payload on ``channel``, or None after ``timeout`` seconds.

        Only for callers that need no state check (see the module docstring for
        the race-free pattern). Cancellation unregisters the waiter.
        """
        with self.subscribe(channel) as sub:
            return await sub.get(timeout)

    def subscriber_count(self, channel: str | None = None) -> int:
        """Waiters on ``channel`` (or all), in this process."""
        return self._hub.count(channel)

    async def start(self) -> None:  # noqa: B027 - optional hook, a no-op by default
        """Connect whatever the bus needs; the in-process bus needs nothing."""

    async def close(self) -> None:
        """End every subscription; the bus cannot be used afterwards."""
        self._hub.close()

    async def __aenter__(self) -> Bus:
        await self.start()
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        await self.close()

    @staticmethod
    def _check(channel: str, payload: str) -> None:
        check_channel(channel)
        check_payload(payload)
