"""In-memory fan-out from any thread to waiters on any asyncio loop.

Both bus implementations end here: the in-process bus calls :meth:`Hub.dispatch`
from ``publish``; the PostgreSQL bus calls it from its one LISTEN connection.
A waiter costs one small :class:`Subscription` (a deque and, while waiting, one
future), not a connection or a task, so 10,000 devices waiting for their login
cost a few megabytes.

Delivery crosses threads with ``loop.call_soon_threadsafe``, grouped per loop
so one publish wakes a loop once however many of its waiters it concerns.
"""

from __future__ import annotations

import asyncio
import re
import threading
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from types import TracebackType

#: Channel names: short, printable, no separators. Session references
#: (``hwl1.`` + base64url) fit; newlines cannot, which the PostgreSQL wire
#: format relies on.
CHANNEL_PATTERN = re.compile(r"[A-Za-z0-9_.:=+/-]{1,200}")

#: Largest payload in UTF-8 bytes. PostgreSQL's NOTIFY payload limit is 8000
#: bytes including our channel prefix; the in-process bus keeps the same limit so
#: code that works on one works on the other.
MAX_PAYLOAD_BYTES = 7000

#: What a subscriber receives when notifications may have been lost (the
#: PostgreSQL listener reconnected): re-read the state being waited on. It cannot
#: be published, because payloads may not contain NUL (PostgreSQL text cannot).
RESYNC = "\x00resync"

#: Undelivered payloads kept per subscriber; older ones are dropped first. A
#: login waiter needs one; the bound keeps a stalled reader from growing memory.
MAX_BUFFERED = 64


def check_channel(channel: str) -> str:
    if not isinstance(channel, str) or not CHANNEL_PATTERN.fullmatch(channel):
        raise ValueError("bus channel names are 1..200 of [A-Za-z0-9_.:=+/-]")
    return channel


def check_payload(payload: str) -> str:
    if not isinstance(payload, str) or "\x00" in payload:
        raise ValueError("bus payloads are strings without NUL characters")
    if len(payload.encode("utf-8", "surrogatepass")) > MAX_PAYLOAD_BYTES:
        raise ValueError(f"bus payloads are at most {MAX_PAYLOAD_BYTES} UTF-8 bytes")
    return payload


class Subscription:
    """One waiter's view of a channel: an async iterator of payloads.

    Registered when created, so nothing published after ``subscribe()`` returns
    is missed. Use it as a (sync or async) context manager so that it is
    unregistered however the waiter ends, cancellation included.
    """

    __slots__ = ("_closed", "_hub", "_pending", "_waiter", "channel", "loop")

    def __init__(self, hub: Hub, channel: str, loop: asyncio.AbstractEventLoop) -> None:
        self.channel = channel
        self.loop = loop
        self._hub = hub
        self._pending: deque[str] = deque(maxlen=MAX_BUFFERED)
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def _deliver(self, payload: str) -> None:
        """Runs on ``loop``'s thread only."""
        if self._closed:
            return
        self._pending.append(payload)
        self._wake()

    def _end(self) -> None:
        """Runs on ``loop``'s thread only: the bus closed under this waiter."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    async def get(self, timeout: float | None = None) -> str | None:
        """The next payload, or None on timeout or once closed."""
        if not self._pending and not self._closed:
            self._waiter = self.loop.create_future()
            try:
                async with asyncio.timeout(timeout):
                    await self._waiter
            except TimeoutError:
                return None
            finally:
                self._waiter = None
        return self._pending.popleft() if self._pending else None

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> str:
        payload = await self.get()
        if payload is None:
            raise StopAsyncIteration
        return payload

    def close(self) -> None:
        """Unregister; idempotent. Safe to call from the loop's thread only."""
        self._hub.remove(self)
        self._end()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self, _t: type[BaseException] | None, _e: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


def _deliver_all(group: Iterable[Subscription], payload: str) -> None:
    for sub in group:
        sub._deliver(payload)


def _end_all(group: Iterable[Subscription]) -> None:
    for sub in group:
        sub._end()


class Hub:
    """Channel name -> live subscriptions, shared safely between threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._channels: dict[str, set[Subscription]] = {}
        self._closed = False

    def add(self, channel: str) -> Subscription:
        """Register a waiter on the running loop (call from async code)."""
        sub = Subscription(self, check_channel(channel), asyncio.get_running_loop())
        with self._lock:
            if self._closed:
                raise RuntimeError("the bus is closed")
            self._channels.setdefault(channel, set()).add(sub)
        return sub

    def remove(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._channels.get(sub.channel)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._channels[sub.channel]

    def count(self, channel: str | None = None) -> int:
        with self._lock:
            if channel is not None:
                return len(self._channels.get(channel, ()))
            return sum(len(s) for s in self._channels.values())

    def dispatch(self, channel: str, payload: str) -> None:
        """Hand ``payload`` to every waiter on ``channel``; callable from any thread."""
        with self._lock:
            subs = list(self._channels.get(channel, ()))
        self._schedule(subs, _deliver_all, payload)

    def broadcast(self, payload: str) -> None:
        """Hand ``payload`` to every waiter on every channel (used for RESYNC)."""
        with self._lock:
            subs = [s for group in self._channels.values() for s in group]
        self._schedule(subs, _deliver_all, payload)

    def close(self) -> None:
        """End every subscription and refuse new ones."""
        with self._lock:
            self._closed = True
            subs = [s for group in self._channels.values() for s in group]
            self._channels.clear()
        self._schedule(subs, _end_all)

    def _schedule(self, subs: list[Subscription], fn: Callable[..., None], *args: str) -> None:
        by_loop: defaultdict[asyncio.AbstractEventLoop, list[Subscription]] = defaultdict(list)
        for sub in subs:
            by_loop[sub.loop].append(sub)
        for loop, group in by_loop.items():
            try:
                loop.call_soon_threadsafe(fn, group, *args)
            except RuntimeError:
                # The waiter's loop has closed without unsubscribing; forget it.
                for sub in group:
                    self.remove(sub)
