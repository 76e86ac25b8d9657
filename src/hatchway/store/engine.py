"""Engines for SQLite and PostgreSQL, write transactions, and Alembic upgrades.

SQLite needs three things the driver does not do by default:

* WAL, so readers never block the writer (the server reads from many threads);
* ``foreign_keys=ON``, which SQLite leaves off for backwards compatibility;
* a real ``BEGIN IMMEDIATE`` for write transactions. Python's ``sqlite3`` (before
  3.12's ``autocommit``) issues its own deferred BEGIN lazily; a deferred
  transaction that reads and then writes fails at once with SQLITE_BUSY when
  another writer got in first, instead of waiting. Taking the write lock up
  front makes concurrent writers queue on the busy timeout. This follows
  SQLAlchemy's "pysqlite serializable" recipe: the driver's transaction handling
  is switched off and SQLAlchemy emits BEGIN itself.

PostgreSQL needs none of this; row locks (``SELECT ... FOR UPDATE``) serialise
the writers that must be serialised, and ``with_for_update`` renders nothing on
SQLite, so the same statements serve both.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import Connection, make_url

from hatchway.errors import ConfigurationError
from hatchway.extras import require_psycopg

#: Execution option that marks an engine's transactions as writers.
WRITE_OPTION = "hatchway_write"

#: How long a SQLite writer waits for the lock before giving up (seconds).
SQLITE_BUSY_TIMEOUT = 30.0

# Arbitrary constant: the pg_advisory_xact_lock key that serialises concurrent
# schema upgrades when several replicas start at once.
_MIGRATION_LOCK_KEY = 0x68617463  # "hatc"


def create_store_engine(url: str) -> Engine:
    """Create an engine for ``url`` with the per-dialect settings above."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        if parsed.database in (None, "", ":memory:"):
            # Each pooled connection would get its own empty in-memory database.
            raise ConfigurationError("the SQLite store needs a file path, not :memory:")
        engine = create_engine(
            parsed, connect_args={"timeout": SQLITE_BUSY_TIMEOUT, "check_same_thread": False}
        )
        _install_sqlite_hooks(engine)
        return engine
    if backend == "postgresql":
        # psycopg (the ``postgres`` extra) is the one driver hatchway ships for
        # PostgreSQL, and the bus needs it anyway; a bare ``postgresql://`` would
        # otherwise make SQLAlchemy look for psycopg2.
        require_psycopg()
        if parsed.drivername == "postgresql":
            parsed = parsed.set(drivername="postgresql+psycopg")
        try:
            return create_engine(parsed, pool_pre_ping=True)
        except ImportError as exc:  # another driver named in the URL, not installed
            raise ConfigurationError(f"the database driver is not installed: {exc}") from None
    raise ConfigurationError(f"unsupported database backend {backend!r}")


def _install_sqlite_hooks(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Hand transaction control to SQLAlchemy (see module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
            # FULL, not WAL's usual NORMAL: a replay window or a consumed secret
            # lost to a power cut would let an old message or secret be reused.
            cursor.execute("PRAGMA synchronous=FULL")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        writer = conn.get_execution_options().get(WRITE_OPTION, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if writer else "BEGIN")


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic ``Config`` built in code; the scripts ship inside the package."""
    config = Config()
    location = resources.files("hatchway.store") / "migrations"
    config.set_main_option("script_location", str(location))
    config.set_main_option("path_separator", "os")
    if connection is not None:
        config.attributes["connection"] = connection
    return config


def upgrade_to_head(write_engine: Engine) -> None:
    """Bring the schema to the newest revision; a no-op when it is already there."""
    with write_engine.connect() as conn, conn.begin():
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK_KEY})
        command.upgrade(alembic_config(conn), "head")
