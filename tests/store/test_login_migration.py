"""Revision 0002 (login tables) applies on top of a populated 0001 database."""

from __future__ import annotations

from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from hatchway.store import Store
from hatchway.store.engine import alembic_config, create_store_engine

pytest_plugins = ["store_fixtures"]

def _head() -> str:
    (head,) = ScriptDirectory.from_config(alembic_config()).get_heads()
    return head


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
            assert MigrationContext.configure(conn).get_current_revision() == _head()


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


def test_upgrade_from_0002_caps_existing_sign_ins(store_url: str) -> None:
    """Revision 0004 gives sign-ins made before it the default 90-day absolute end,
    so no existing session keeps sliding forever, and keeps their tokens."""
    engine = create_store_engine(store_url)
    with engine.connect() as conn, conn.begin():
        command.upgrade(alembic_config(conn), "0002")
    # Rows as revision 0002 wrote them (today's code writes the new columns).
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO refresh_families (family_id, username, username_key, client_id,"
                " device_name, scope, created_at, last_used_at)"
                " VALUES ('fam-old', 'alice', 'alice', 'hatchway-cli', 'TV', '', 1000, 1000)"
            )
        )
        conn.execute(
            text(
                "INSERT INTO refresh_tokens (token_hash, family_id, created_at, expires_at)"
                " VALUES (:h, 'fam-old', 1000, 5000)"
            ),
            {"h": b"\x01" * 32},
        )
    engine.dispose()
    with Store.open(store_url) as upgraded:
        family = upgraded.get_session_family("fam-old")
        token = upgraded.get_refresh_token(b"\x01" * 32)
    assert family is not None and family.expires_at == 1000.0 + 90 * 24 * 3600
    assert token is not None and token.expires_at == 5000.0
