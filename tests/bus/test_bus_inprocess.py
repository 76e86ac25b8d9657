"""InProcessBus: fan-out, timeouts, cross-thread publish, cleanup on cancellation."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest

from hatchway.bus import (
    MAX_PAYLOAD_BYTES,
    RESYNC,
    Bus,
    InProcessBus,
    PostgresBus,
    bus_from_url,
)


async def test_many_waiters_each_woken_by_its_own_channel() -> None:
    """10,000 devices wait on their own session channel; each wake-up is targeted."""
    bus = InProcessBus()
    count = 10_000
    waiters = [asyncio.create_task(bus.wait(f"login.s{i}", timeout=30)) for i in range(count)]
    await asyncio.sleep(0)  # let every waiter register
    assert bus.subscriber_count() == count
    for i in range(0, count, 2):
        bus.publish(f"login.s{i}", f"approved:{i}")
    woken = await asyncio.gather(*waiters[::2])
    assert woken == [f"approved:{i}" for i in range(0, count, 2)]
    # The odd half heard nothing and is still waiting.
    assert not any(t.done() for t in waiters[1::2])
    assert bus.subscriber_count() == count // 2
    for t in waiters[1::2]:
        t.cancel()
    await asyncio.gather(*waiters[1::2], return_exceptions=True)
    assert bus.subscriber_count() == 0


async def test_fan_out_to_every_waiter_on_one_channel() -> None:
    bus = InProcessBus()
    waiters = [asyncio.create_task(bus.wait("admin", timeout=5)) for _ in range(500)]
    await asyncio.sleep(0)
    bus.publish("admin", "flow_disabled")
    assert await asyncio.gather(*waiters) == ["flow_disabled"] * 500


async def test_timeout_returns_none_and_unregisters() -> None:
    bus = InProcessBus()
    started = time.monotonic()
    assert await bus.wait("login.quiet", timeout=0.05) is None
    assert 0.04 <= time.monotonic() - started < 1.0
    assert bus.subscriber_count("login.quiet") == 0


async def test_publish_from_worker_thread_wakes_loop() -> None:
    bus = InProcessBus()
    with bus.subscribe("login.t") as sub:
        thread = threading.Thread(target=bus.publish, args=("login.t", "approved"))
        thread.start()
        assert await sub.get(timeout=5) == "approved"
        thread.join()
    # And from the loop's own thread's executor, via publish_async.
    with bus.subscribe("login.t") as sub:
        await bus.publish_async("login.t", "denied")
        assert await sub.get(timeout=5) == "denied"


async def test_publish_from_many_threads_reaches_waiters_on_two_loops() -> None:
    """Waiters on another thread's event loop are woken too (e.g. a second worker)."""
    bus = InProcessBus()
    other_result: list[str | None] = []
    ready = threading.Event()

    def other_loop() -> None:
        async def main() -> None:
            with bus.subscribe("login.x") as sub:
                ready.set()
                other_result.append(await sub.get(timeout=5))

        asyncio.run(main())

    thread = threading.Thread(target=other_loop)
    thread.start()
    assert ready.wait(5)
    with bus.subscribe("login.x") as sub:
        await asyncio.to_thread(bus.publish, "login.x", "approved")
        assert await sub.get(timeout=5) == "approved"
    thread.join(5)
    assert other_result == ["approved"]


async def test_subscribe_before_check_never_misses() -> None:
    """A payload published between subscribe() and get() is buffered, not lost."""
    bus = InProcessBus()
    with bus.subscribe("login.r") as sub:
        bus.publish("login.r", "approved")  # e.g. while the handler reads the store
        await asyncio.sleep(0)
        assert await sub.get(timeout=0) == "approved"
        assert await sub.get(timeout=0) is None


async def test_cancelled_waiter_is_removed() -> None:
    bus = InProcessBus()
    task = asyncio.create_task(bus.wait("login.c", timeout=None))
    await asyncio.sleep(0)
    assert bus.subscriber_count("login.c") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert bus.subscriber_count() == 0
    bus.publish("login.c", "approved")  # nobody left; nothing breaks


async def test_async_iteration_and_close_ends_it() -> None:
    bus = InProcessBus()
    received: list[str] = []

    async def reader() -> None:
        async with bus.subscribe("events") as sub:
            async for payload in sub:
                received.append(payload)

    task = asyncio.create_task(reader())
    await asyncio.sleep(0)
    for p in ("a", "b", "c"):
        bus.publish("events", p)
    await asyncio.sleep(0.01)
    await bus.close()
    await asyncio.wait_for(task, 5)
    assert received == ["a", "b", "c"]
    with pytest.raises(RuntimeError):
        bus.subscribe("events")


async def test_subscription_of_a_closed_loop_is_dropped() -> None:
    bus = InProcessBus()

    async def register() -> None:
        bus.subscribe("login.gone")  # never closed: its loop just ends

    await asyncio.to_thread(asyncio.run, register())
    assert bus.subscriber_count("login.gone") == 1
    bus.publish("login.gone", "x")
    assert bus.subscriber_count("login.gone") == 0


@pytest.mark.parametrize("channel", ["", "a b", "a\nb", "x" * 201, "ümlaut", "a;DROP"])
def test_bad_channels_refused(channel: str) -> None:
    with pytest.raises(ValueError):
        InProcessBus().publish(channel, "p")


@pytest.mark.parametrize("payload", ["\x00", RESYNC, "x" * (MAX_PAYLOAD_BYTES + 1), "é" * 3501])
def test_bad_payloads_refused(payload: str) -> None:
    with pytest.raises(ValueError):
        InProcessBus().publish("ok", payload)


async def test_bus_is_an_async_context_manager() -> None:
    async with InProcessBus() as bus:
        assert isinstance(bus, Bus)
        sub = bus.subscribe("x")
    # Closing ends the subscription at once, not after the timeout.
    started = time.monotonic()
    assert await sub.get(timeout=1) is None and sub.closed
    assert time.monotonic() - started < 0.5


def test_bus_from_url_picks_by_backend() -> None:
    assert isinstance(bus_from_url(None), InProcessBus)
    assert isinstance(bus_from_url("sqlite:////tmp/x.sqlite3"), InProcessBus)
    assert isinstance(bus_from_url("postgresql+psycopg://u@h/db"), PostgresBus)
    assert isinstance(bus_from_url("postgresql://u@h/db"), PostgresBus)
