"""Revision 0005_command_delivery applies on top of a populated older database."""

from __future__ import annotations

from alembic import command
from alembic.script import ScriptDirectory
from sqlalchemy import inspect

from hatchway.store import CommandStatus, SealedDelivery, Store
from hatchway.store.engine import alembic_config, create_store_engine

pytest_plugins = ["store_fixtures"]


def test_a_command_delivered_before_the_upgrade_can_still_be_answered(store_url: str) -> None:
    engine = create_store_engine(store_url)
    with engine.connect() as conn, conn.begin():
        command.upgrade(alembic_config(conn), "0002")
    engine.dispose()
    old = Store(create_store_engine(store_url))
    with old:
        old.provision_device("dev-1", "hash-1", now=1.0)
        cid = old.queue_command("dev-1", {"op": "reboot"}, now=2.0)
        with old.engine.begin() as conn:  # what 0002's mark_command_delivered left behind
            conn.exec_driver_sql(
                "UPDATE commands SET status = 'delivered', delivered_at = 3.0,"
                " delivery_jti = 'legacy-jti'"
            )
    with Store.open(store_url) as upgraded:
        with upgraded.engine.connect() as conn:
            assert "command_deliveries" in inspect(conn).get_table_names()
        assert upgraded.answers_delivery("dev-1", cid, "legacy-jti")
        assert not upgraded.answers_delivery("dev-1", cid, "other-jti")
        # With no delivery row it counts as expired: the next poll may hand it out.
        again = upgraded.deliver_command(
            "dev-1",
            mid="m",
            now=4.0,
            seal=lambda c: SealedDelivery(jti="new-jti", exp=10.0, reply=b"sealed"),
        )
        assert again is not None and again.command_id == cid
        record = upgraded.get_command(cid)
        assert record is not None and record.status is CommandStatus.DELIVERED


def test_downgrade_below_0005_drops_only_the_delivery_table(store: Store, store_url: str) -> None:
    store.provision_device("dev-1", "hash-1", now=1.0)
    cid = store.queue_command("dev-1", {"op": "reboot"}, now=2.0)
    store.deliver_command(
        "dev-1",
        mid="m",
        now=3.0,
        seal=lambda c: SealedDelivery(jti="j", exp=10.0, reply=b"sealed"),
    )
    with store.engine.connect() as conn, conn.begin():
        config = alembic_config(conn)
        below = ScriptDirectory.from_config(config).get_revision("0005_command_delivery")
        command.downgrade(config, str(below.down_revision))
        tables = set(inspect(conn).get_table_names())
    assert "command_deliveries" not in tables and "commands" in tables
    record = store.get_command(cid)
    assert record is not None and record.delivery_jti == "j"
