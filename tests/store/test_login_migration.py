"""Revisions 0002 (login tables), 0003_clients and 0004_token_lifetimes apply on top
of populated databases."""

from __future__ import annotations

from alembic import command
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

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


def test_upgrade_from_0002_keeps_users_and_adds_clients(store_url: str) -> None:
    from hatchway.clients import new_client
    from hatchway.runtime import SeededRandom

    engine = create_store_engine(store_url)
    with engine.connect() as conn, conn.begin():
        command.upgrade(alembic_config(conn), "0002")
        conn.exec_driver_sql(
            "INSERT INTO users (username_key, username, verifier, created_at, updated_at) "
            "VALUES ('bob', 'Bob', '{}', 1.0, 2.0)"
        )
    engine.dispose()
    with Store.open(store_url) as upgraded:
        user = upgraded.get_user("bob")
        assert user is not None and user.updated_at == 2.0 and user.unlocked_at is None
        record, _ = new_client("tv", "TV", now=3.0, random=SeededRandom())
        upgraded.add_client(record)
        assert upgraded.get_client("tv") == record
    # And back: 0002 has neither the clients table nor the new columns.
    engine = create_store_engine(store_url)
    with engine.connect() as conn, conn.begin():
        command.downgrade(alembic_config(conn), "0002")
        inspector = inspect(conn)
        assert "clients" not in inspector.get_table_names()
        assert "unlocked_at" not in {c["name"] for c in inspector.get_columns("users")}
        columns = {c["name"] for c in inspector.get_columns("login_sessions")}
        assert not columns & {"code_choices", "confirm_failures"}
        assert "uq_login_sessions_user_code_active" in {
            i["name"] for i in inspector.get_indexes("login_sessions")
        }
    engine.dispose()
