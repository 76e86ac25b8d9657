"""Revision 0002 (login tables) applies on top of a populated 0001 database."""

from __future__ import annotations

from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect

from hatchway.store import Store
from hatchway.store.engine import alembic_config, create_store_engine

pytest_plugins = ["store_fixtures"]

LOGIN_TABLES = {"users", "login_sessions", "refresh_families", "refresh_tokens", "audit_log"}


def test_upgrade_from_0001_keeps_devices(store_url: str) -> None:
    engine = create_store_engine(store_url)
    with engine.connect() as conn, conn.begin():
        command.upgrade(alembic_config(conn), "0001")
    engine.dispose()
    # An existing message-security deployment, before the login flow existed.
    with Store(create_store_engine(store_url)) as old:
        old.provision_device("dev-1", "hash-1", now=1.0)
    with Store.open(store_url) as upgraded:
        assert upgraded.get_device("dev-1") is not None
        upgraded.set_flag("login_flow", "on", now=2.0)
        with upgraded.engine.connect() as conn:
            current = MigrationContext.configure(conn).get_current_revision()
    # Later revisions apply on top of 0002; the database ends at the one head.
    assert current == ScriptDirectory.from_config(alembic_config()).get_current_head()


def test_downgrade_to_0001_drops_only_login_tables(store: Store, store_url: str) -> None:
    store.provision_device("dev-1", "hash-1", now=1.0)
    with store.engine.connect() as conn, conn.begin():
        command.downgrade(alembic_config(conn), "0001")
    engine = create_engine(store_url)
    with engine.connect() as conn:
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert not tables & (LOGIN_TABLES | {"settings"})
    assert "devices" in tables
    assert store.get_device("dev-1") is not None
