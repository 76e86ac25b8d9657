"""PostgresBus: a login approved on one replica wakes the device waiting on another.

Two PostgresBus instances on the same database play replicas A and B. Each test
uses its own PostgreSQL channel, so parallel runs never hear each other. Without
PostgreSQL these skip locally and fail when CI=true.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import threading
from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest
from psycopg import sql

from hatchway.bus import RESYNC, PostgresBus, postgres_conninfo
from tests.services import require

pytestmark = pytest.mark.postgres

PG_URL = os.environ.get(
    "HATCHWAY_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
CONNINFO = postgres_conninfo(PG_URL)


def _reachable() -> bool:
    try:
        with psycopg.connect(CONNINFO, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


@pytest.fixture
def pg_channel() -> Iterator[str]:
    require(_reachable(), f"PostgreSQL at {CONNINFO}")
    yield f"hw_bus_test_{secrets.token_hex(6)}"


@pytest.fixture
async def replicas(pg_channel: str) -> AsyncIterator[tuple[PostgresBus, PostgresBus]]:
    a = PostgresBus(CONNINFO, pg_channel=pg_channel, reconnect_initial=0.05)
    b = PostgresBus(CONNINFO, pg_channel=pg_channel, reconnect_initial=0.05)
    await a.start()
    await b.start()
    yield a, b
    await a.close()
    await b.close()


def _backends(pg_channel: str) -> list[tuple[int, str]]:
    """(pid, application_name) of this test's bus connections."""
    with psycopg.connect(CONNINFO, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid, application_name FROM pg_stat_activity WHERE application_name = %s",
            (f"hatchway-bus:{pg_channel}",),
        ).fetchall()
    return [(int(pid), str(name)) for pid, name in rows]


async def test_approval_on_replica_a_wakes_waiter_on_replica_b(
    replicas: tuple[PostgresBus, PostgresBus],
) -> None:
    a, b = replicas
    waiter = asyncio.create_task(b.wait("login.hwl1.abc", timeout=10))
    await asyncio.sleep(0)
    # The approval handler runs in a worker thread on replica A.
    await asyncio.to_thread(a.publish, "login.hwl1.abc", "approved")
    assert await waiter == "approved"
    assert b.subscriber_count() == 0


async def test_payload_survives_the_wire(replicas: tuple[PostgresBus, PostgresBus]) -> None:
    a, b = replicas
    payload = '{"state":"approved","by":"Ünïcødé\\n✓"}\nsecond line'
    with b.subscribe("login.p") as sub:
        await a.publish_async("login.p", payload)
        assert await sub.get(timeout=10) == payload


async def test_many_waiters_share_one_listen_connection(
    pg_channel: str, replicas: tuple[PostgresBus, PostgresBus]
) -> None:
    """2,000 waiters on B: still one LISTEN connection per replica, all woken."""
    a, b = replicas
    count = 2000
    subs = [b.subscribe(f"login.s{i}") for i in range(count)]
    listeners = {pid for pid, _ in _backends(pg_channel)} & {a.listener_pid, b.listener_pid}
    assert listeners == {a.listener_pid, b.listener_pid}

    def approve_all() -> None:
        for i in range(count):
            a.publish(f"login.s{i}", str(i))

    await asyncio.to_thread(approve_all)
    got = await asyncio.gather(*(s.get(timeout=30) for s in subs))
    assert got == [str(i) for i in range(count)]
    for s in subs:
        s.close()
    assert b.subscriber_count() == 0
    # Publishing pooled its connections instead of opening one per NOTIFY.
    assert len(_backends(pg_channel)) <= 2 + 4


async def test_waiter_on_the_publishing_replica_is_woken_too(
    replicas: tuple[PostgresBus, PostgresBus],
) -> None:
    a, b = replicas
    with a.subscribe("login.same") as mine, b.subscribe("login.same") as theirs:
        await a.publish_async("login.same", "approved")
        assert await mine.get(timeout=10) == "approved"
        assert await theirs.get(timeout=10) == "approved"
        # Exactly once each: no second, local-shortcut delivery.
        assert await mine.get(timeout=0.2) is None


async def test_cancelled_waiter_cleans_up(replicas: tuple[PostgresBus, PostgresBus]) -> None:
    a, b = replicas
    task = asyncio.create_task(b.wait("login.cancel", timeout=None))
    await asyncio.sleep(0.01)
    assert b.subscriber_count("login.cancel") == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert b.subscriber_count() == 0
    await a.publish_async("login.cancel", "approved")  # nobody listening; no error


async def test_listener_reconnects_and_tells_waiters_to_resync(
    replicas: tuple[PostgresBus, PostgresBus],
) -> None:
    a, b = replicas
    with b.subscribe("login.r") as sub:
        old_pid = b.listener_pid
        assert old_pid is not None
        with psycopg.connect(CONNINFO, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (old_pid,))
        # Whatever was sent while B was away is lost, so B says "re-read".
        assert await sub.get(timeout=10) == RESYNC
        assert b.reconnects == 1 and b.listener_pid not in (None, old_pid)
        await a.publish_async("login.r", "approved")
        assert await sub.get(timeout=10) == "approved"


async def test_publish_recovers_from_a_dead_pooled_connection(
    pg_channel: str, replicas: tuple[PostgresBus, PostgresBus]
) -> None:
    a, b = replicas
    with b.subscribe("login.d") as sub:
        await a.publish_async("login.d", "one")
        assert await sub.get(timeout=10) == "one"
        # Kill A's idle publishing connection (every bus backend but the listeners).
        listeners = {a.listener_pid, b.listener_pid}
        publishers = [pid for pid, _ in _backends(pg_channel) if pid not in listeners]
        assert publishers
        with psycopg.connect(CONNINFO, autocommit=True) as admin:
            for pid in publishers:
                admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        await a.publish_async("login.d", "two")
        assert await sub.get(timeout=10) == "two"


async def test_start_fails_loudly_without_a_database() -> None:
    bus = PostgresBus("postgresql://postgres@127.0.0.1:1/none", connect_timeout=1)
    with pytest.raises(psycopg.OperationalError):
        await bus.start()
    await bus.close()


def test_pg_channel_is_validated_and_quoted(pg_channel: str) -> None:
    for bad in ("", "Upper", "a-b", "a;listen b", "x" * 64):
        with pytest.raises(ValueError):
            PostgresBus(CONNINFO, pg_channel=bad)
    # The LISTEN statement quotes the identifier rather than splicing it in.
    rendered = sql.SQL("LISTEN {}").format(sql.Identifier(pg_channel))
    with psycopg.connect(CONNINFO) as conn:
        assert rendered.as_string(conn) == f'LISTEN "{pg_channel}"'


async def test_publish_from_many_threads(replicas: tuple[PostgresBus, PostgresBus]) -> None:
    a, b = replicas
    subs = [b.subscribe(f"login.t{i}") for i in range(40)]
    threads = [threading.Thread(target=a.publish, args=(f"login.t{i}", f"p{i}")) for i in range(40)]
    for t in threads:
        t.start()
    got = await asyncio.gather(*(s.get(timeout=20) for s in subs))
    for t in threads:
        t.join()
    assert got == [f"p{i}" for i in range(40)]
    for s in subs:
        s.close()


def test_conninfo_from_sqlalchemy_url() -> None:
    assert postgres_conninfo("postgresql+psycopg://u:p%40ss@h:5433/db?options=-cx%3D1") == (
        "postgresql://u:p%40ss@h:5433/db?options=-cx%3D1"
    )
    with pytest.raises(ValueError):
        postgres_conninfo("sqlite:///x")


class _Proxy:
    """A TCP proxy to PostgreSQL that a test can cut and restore: a network outage."""

    def __init__(self) -> None:
        self.port = 0
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", 5432)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for w in self._writers:
            w.close()
        self._writers.clear()
        await self._server.wait_closed()


async def test_listener_backs_off_through_an_outage_then_resyncs(pg_channel: str) -> None:
    proxy = _Proxy()
    await proxy.start()
    via_proxy = CONNINFO.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
    assert via_proxy != CONNINFO
    b = PostgresBus(via_proxy, pg_channel=pg_channel, reconnect_initial=0.05, reconnect_max=0.2)
    a = PostgresBus(CONNINFO, pg_channel=pg_channel)
    await b.start()
    try:
        with b.subscribe("login.o") as sub:
            await proxy.cut()  # the database is unreachable for B for a while
            await asyncio.sleep(0.6)  # several failed reconnects, backing off
            assert b.listener_pid is None and b.reconnects == 0
            await a.publish_async("login.o", "lost")  # sent while B is away
            await proxy.start()  # same port: the network is back
            assert await sub.get(timeout=10) == RESYNC
            assert b.reconnects == 1
            await a.publish_async("login.o", "approved")
            assert await sub.get(timeout=10) == "approved"
    finally:
        await a.close()
        await b.close()
        await proxy.cut()
