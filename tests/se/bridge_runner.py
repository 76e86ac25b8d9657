"""A real ``Bridge`` on loopback, in a thread with its own event loop, for sync tests.

The card is a real ``SoftCard`` (optionally wrapped by ``RecordingCard``, which
passes every call through and remembers the APDUs that reached the card). Every log
record of WARNING and above, from any logger (hatchway, websockets, asyncio), is
kept so a test can assert that client input never produced an ERROR.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from hatchway.se.bridge import Bridge, CardTransport


@dataclass
class RecordingCard:
    """Passes through to ``card``; records what the bridge transmitted to it."""

    card: CardTransport
    seen: list[bytes] = field(default_factory=list)

    def transmit(self, apdu: bytes) -> bytes:
        self.seen.append(apdu)
        return self.card.transmit(apdu)

    def reset(self) -> bytes:
        return self.card.reset()


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def at_least(self, level: int) -> list[str]:
        return [f"{r.name}: {r.getMessage()}" for r in self.records if r.levelno >= level]


@dataclass
class RunningBridge:
    bridge: Bridge
    port: int
    logs: Records

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/"


@contextmanager
def running_bridge(
    card: CardTransport, origins: list[str], **kwargs: Any
) -> Iterator[RunningBridge]:
    bridge = Bridge(card, origins, port=0, **kwargs)
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    stop: asyncio.Event | None = None
    failure: list[BaseException] = []

    async def main() -> None:
        nonlocal stop
        stop = asyncio.Event()
        await bridge.run(stop, lambda _port: ready.set())

    def thread_main() -> None:
        try:
            loop.run_until_complete(main())
        except BaseException as exc:  # reported to the test below
            failure.append(exc)
            ready.set()
        finally:
            loop.close()

    logs = Records()
    root = logging.getLogger()
    root.addHandler(logs)
    thread = threading.Thread(target=thread_main, name="bridge", daemon=True)
    thread.start()
    try:
        if not ready.wait(20) or failure:
            raise RuntimeError(f"the bridge did not start: {failure}")
        yield RunningBridge(bridge, bridge.port, logs)
    finally:
        if stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(20)
        root.removeHandler(logs)
    if failure:
        raise failure[0]
