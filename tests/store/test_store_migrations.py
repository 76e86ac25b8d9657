"""Alembic: Store.open creates and upgrades the schema, and models match migrations."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, inspect, text

from hatchway.errors import ConfigurationError
from hatchway.store import Store
from hatchway.store.engine import alembic_config, create_store_engine
from hatchway.store.schema import metadata

pytest_plugins = ["store_fixtures"]


def _head() -> str:
    heads = ScriptDirectory.from_config(alembic_config()).get_heads()
    assert len(heads) == 1, "migrations must not branch"
    return heads[0]


def test_scripts_ship_inside_the_package() -> None:
    script = ScriptDirectory.from_config(alembic_config())
    location = Path(script.dir)
    assert location.parts[-2:] == ("store", "migrations")
    assert (location / "env.py").is_file()
    # Installers only ship .py files that live in packages.
    assert (location / "__init__.py").is_file()
    assert (location / "versions" / "__init__.py").is_file()
    revisions = list(script.walk_revisions())  # newest first; raises on branches
    assert revisions[0].revision == _head()
    assert revisions[-1].revision == "0001" and revisions[-1].down_revision is None


def test_open_on_empty_database_creates_head(store_url: str) -> None:
    engine = create_engine(store_url)
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() is None
    with Store.open(store_url):
        pass
    with engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == _head()
        tables = set(inspect(conn).get_table_names())
    engine.dispose()
    assert set(metadata.tables) <= tables


def test_second_open_is_a_no_op(store_url: str) -> None:
    with Store.open(store_url) as first:
        first.provision_device("kept", "h", now=1.0)
    with Store.open(store_url) as second:
        record = second.get_device("kept")
        with second.engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).all()
    assert record is not None
    assert [v[0] for v in versions] == [_head()]


def test_models_match_migrations(store: Store) -> None:
    """An autogenerate-style diff of schema.py against the migrated DB is empty."""
    with store.engine.connect() as conn:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        diff = compare_metadata(context, metadata)
    assert diff == []


def test_downgrade_and_upgrade_round_trip(store: Store) -> None:
    with store.engine.connect() as conn, conn.begin():
        command.downgrade(alembic_config(conn), "base")
        assert set(inspect(conn).get_table_names()) <= {"alembic_version"}
        command.upgrade(alembic_config(conn), "head")
        assert set(metadata.tables) <= set(inspect(conn).get_table_names())


def test_sqlite_connections_use_wal_and_foreign_keys(tmp_path: Path) -> None:
    store = Store.open(f"sqlite:///{tmp_path}/db.sqlite3")
    with store, store.engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30_000
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:", "mysql://u@h/db"])
def test_unsupported_urls_are_refused(url: str) -> None:
    with pytest.raises(ConfigurationError):
        create_store_engine(url)


def test_failed_open_releases_the_engine(tmp_path: Path) -> None:
    from sqlalchemy.exc import OperationalError

    with pytest.raises(OperationalError):
        Store.open(f"sqlite:///{tmp_path}/missing-dir/db.sqlite3")
