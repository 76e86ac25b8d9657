"""Alembic environment: runs on the connection that ``Store.open`` passes in.

There is no ``alembic.ini``: :func:`hatchway.store.engine.alembic_config` builds
the config in code and puts an open connection, already inside the migration
transaction, into ``config.attributes``.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from hatchway.store.schema import metadata


def run_migrations_online() -> None:
    connection = context.config.attributes.get("connection")
    if not isinstance(connection, Connection):
        raise RuntimeError("run hatchway migrations through Store.open or upgrade_to_head")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode rebuilds tables instead.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("hatchway migrations run online only")
run_migrations_online()
