"""The bus across replicas: PostgreSQL LISTEN/NOTIFY.

Every replica keeps exactly one dedicated connection that LISTENs on one
PostgreSQL channel (``hatchway_bus`` by default); bus channels travel inside the
payload as ``<channel>\\n<payload>`` and are fanned out in memory by the hub.
One PostgreSQL channel rather than one per waiter because LISTEN state lives in
the backend: 10,000 waiting devices would otherwise mean 10,000 LISTEN/UNLISTEN
round trips and a listen list PostgreSQL scans for every notification. The cost,
that every replica sees every notification, is small: there is one per login.

``publish`` runs ``SELECT pg_notify(%s, %s)`` with bound parameters on a small
pool of autocommit connections, so channel text is never spliced into SQL; the
one identifier that is (``LISTEN <name>``) is validated and quoted.

When the listener connection is lost it reconnects with exponential back-off
and jitter, and then broadcasts :data:`~hatchway.bus.RESYNC` to every waiter,
because notifications sent while it was away are gone (PostgreSQL does not
queue them for a session that is not listening).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import threading
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.engine import make_url

from hatchway.bus._hub import RESYNC
from hatchway.bus.base import Bus

log = logging.getLogger(__name__)

DEFAULT_PG_CHANNEL = "hatchway_bus"
_PG_IDENTIFIER = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# libpq keepalives, so a silently dead network is noticed in about 25 s
# instead of never (the listener only reads and would otherwise wait forever).
_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
}


def postgres_conninfo(database_url: str) -> str:
    """A libpq URI from a SQLAlchemy URL (``postgresql+psycopg://...`` -> ``postgresql://``)."""
    url = make_url(database_url)
    if url.get_backend_name() != "postgresql":
        raise ValueError("not a PostgreSQL URL")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


class PostgresBus(Bus):
    """LISTEN on one connection per replica, NOTIFY from a few pooled ones."""

    def __init__(
        self,
        conninfo: str,
        *,
        pg_channel: str = DEFAULT_PG_CHANNEL,
        max_idle_publishers: int = 4,
        connect_timeout: int = 5,
        reconnect_initial: float = 0.1,
        reconnect_max: float = 5.0,
    ) -> None:
        super().__init__()
        if not _PG_IDENTIFIER.fullmatch(pg_channel):
            raise ValueError("pg_channel must be a lower-case SQL identifier (max 63 chars)")
        self._conninfo = conninfo
        self._pg_channel = pg_channel
        self._connect_kwargs: dict[str, Any] = {
            **_KEEPALIVES,
            "autocommit": True,
            "connect_timeout": connect_timeout,
            "application_name": f"hatchway-bus:{pg_channel}"[:63],
        }
        self._max_idle = max_idle_publishers
        self._idle: list[psycopg.Connection[Any]] = []
        self._idle_lock = threading.Lock()
        self._reconnect_initial = reconnect_initial
        self._reconnect_max = reconnect_max
        self._listener: psycopg.AsyncConnection[Any] | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        self.reconnects = 0
        """How often the listener had to reconnect (for health reports)."""

    @classmethod
    def from_url(cls, database_url: str, **kwargs: Any) -> PostgresBus:
        return cls(postgres_conninfo(database_url), **kwargs)

    @property
    def listener_pid(self) -> int | None:
        """Backend pid of the LISTEN connection while connected (health checks)."""
        conn = self._listener
        return None if conn is None or conn.closed else conn.info.backend_pid

    # -- listening ----------------------------------------------------------

    async def start(self) -> None:
        """Connect and LISTEN; raises if PostgreSQL cannot be reached now.

        Later losses are retried in the background, forever, until :meth:`close`.
        """
        if self._closed:
            raise RuntimeError("the bus is closed")
        if self._task is not None:
            return
        self._listener = await self._listen()
        self._task = asyncio.create_task(self._run(), name="hatchway-bus-listener")

    async def _listen(self) -> psycopg.AsyncConnection[Any]:
        conn = await psycopg.AsyncConnection.connect(self._conninfo, **self._connect_kwargs)
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._pg_channel)))
        except BaseException:
            await conn.close()
            raise
        return conn

    async def _run(self) -> None:
        delay = self._reconnect_initial
        while True:
            conn = self._listener
            if conn is None:
                try:
                    conn = await self._listen()
                except (psycopg.Error, OSError) as exc:
                    log.warning("bus listener: reconnect failed (%s); retry in %.1fs", exc, delay)
                    # Jitter spreads replicas that lost the database at the same moment.
                    await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter
                    delay = min(delay * 2, self._reconnect_max)
                    continue
                self._listener = conn
                self.reconnects += 1
                delay = self._reconnect_initial
                log.info("bus listener: reconnected")
                self._hub.broadcast(RESYNC)
            try:
                async for note in conn.notifies():
                    self._on_notify(note.payload)
            except (psycopg.Error, OSError) as exc:
                log.warning("bus listener: connection lost (%s)", exc)
            finally:
                self._listener = None
                with contextlib.suppress(psycopg.Error, OSError):
                    await conn.close()

    def _on_notify(self, raw: str) -> None:
        channel, sep, payload = raw.partition("\n")
        if not sep:
            log.warning("bus listener: ignoring a notification without a channel")
            return
        self._hub.dispatch(channel, payload)

    # -- publishing ---------------------------------------------------------

    def publish(self, channel: str, payload: str) -> None:
        """NOTIFY every replica (this one included, through its own listener)."""
        self._check(channel, payload)
        if self._closed:
            raise RuntimeError("the bus is closed")
        message = f"{channel}\n{payload}"
        for attempt in (1, 2):
            conn = self._take()
            try:
                conn.execute("SELECT pg_notify(%s, %s)", (self._pg_channel, message))
            except psycopg.OperationalError:
                conn.close()
                # A pooled connection may have died while idle; one fresh retry.
                if attempt == 2:
                    raise
                continue
            self._give_back(conn)
            return

    def _take(self) -> psycopg.Connection[Any]:
        with self._idle_lock:
            if self._idle:
                return self._idle.pop()
        return psycopg.Connection.connect(self._conninfo, **self._connect_kwargs)

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        with self._idle_lock:
            if not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(conn)
                return
        conn.close()

    # -- shutdown -----------------------------------------------------------

    async def close(self) -> None:
        """Stop listening, close every connection, end every subscription."""
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._listener is not None:
            await self._listener.close()
            self._listener = None
        with self._idle_lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()
        await super().close()
