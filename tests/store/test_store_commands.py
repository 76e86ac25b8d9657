"""Operator commands: queue, delivery, results, and the transition table."""

from __future__ import annotations

import pytest

from hatchway.store import (
    CommandStatus,
    InvalidTransition,
    Store,
    UnknownCommand,
    UnknownDevice,
)

pytest_plugins = ["store_fixtures"]


def test_queue_and_pending_oldest_first(store: Store, provisioned_device: str) -> None:
    ids = [store.queue_command(provisioned_device, {"op": f"c{i}"}, now=50.0) for i in range(4)]
    assert len(set(ids)) == 4
    assert all(len(i) == 32 and int(i, 16) >= 0 for i in ids)
    pending = store.pending_commands(provisioned_device)
    assert [c.command_id for c in pending] == ids
    assert [c.body for c in pending] == [{"op": f"c{i}"} for i in range(4)]
    assert all(c.status is CommandStatus.QUEUED and c.created_at == 50.0 for c in pending)
    assert [c.command_id for c in store.pending_commands(provisioned_device, limit=2)] == ids[:2]


def test_queue_for_unknown_device(store: Store) -> None:
    with pytest.raises(UnknownDevice):
        store.queue_command("ghost", {"op": "reboot"}, now=1.0)


def test_pending_is_per_device(store: Store, provisioned_device: str) -> None:
    store.provision_device("other", "h", now=1.0)
    mine = store.queue_command(provisioned_device, {"op": "a"}, now=1.0)
    store.queue_command("other", {"op": "b"}, now=1.0)
    assert [c.command_id for c in store.pending_commands(provisioned_device)] == [mine]


def test_full_lifecycle(store: Store, provisioned_device: str) -> None:
    cid = store.queue_command(provisioned_device, {"op": "reboot"}, now=10.0)
    store.mark_command_delivered(cid, jti="jti-1", now=11.0)
    delivered = store.get_command(cid)
    assert delivered is not None
    assert delivered.status is CommandStatus.DELIVERED
    assert (delivered.delivered_at, delivered.delivery_jti) == (11.0, "jti-1")
    # Delivered but unanswered commands are still pending (they may be resent).
    assert [c.command_id for c in store.pending_commands(provisioned_device)] == [cid]
    store.mark_command_delivered(cid, jti="jti-2", now=20.0)
    redelivered = store.get_command(cid)
    assert redelivered is not None and redelivered.delivery_jti == "jti-2"
    store.record_command_result(provisioned_device, cid, {"ok": True}, now=21.0)
    done = store.get_command(cid)
    assert done is not None
    assert done.status is CommandStatus.DONE
    assert done.result == {"ok": True}
    assert done.completed_at == 21.0
    assert store.pending_commands(provisioned_device) == []


def test_result_may_overtake_delivery_bookkeeping(store: Store, provisioned_device: str) -> None:
    cid = store.queue_command(provisioned_device, {"op": "ping"}, now=1.0)
    store.record_command_result(provisioned_device, cid, {"pong": 1}, now=2.0)
    record = store.get_command(cid)
    assert record is not None and record.status is CommandStatus.DONE


def test_done_is_final(store: Store, provisioned_device: str) -> None:
    cid = store.queue_command(provisioned_device, {"op": "ping"}, now=1.0)
    store.record_command_result(provisioned_device, cid, {"first": 1}, now=2.0)
    with pytest.raises(InvalidTransition, match="done -> done"):
        store.record_command_result(provisioned_device, cid, {"second": 2}, now=3.0)
    with pytest.raises(InvalidTransition, match="done -> delivered"):
        store.mark_command_delivered(cid, jti="late", now=4.0)
    record = store.get_command(cid)
    assert record is not None and record.result == {"first": 1}


def test_result_from_another_device_is_unknown(store: Store, provisioned_device: str) -> None:
    store.provision_device("intruder", "h", now=1.0)
    cid = store.queue_command(provisioned_device, {"op": "ping"}, now=1.0)
    with pytest.raises(UnknownCommand):
        store.record_command_result("intruder", cid, {"owned": True}, now=2.0)
    record = store.get_command(cid)
    assert record is not None and record.status is CommandStatus.QUEUED


def test_unknown_command_ids(store: Store, provisioned_device: str) -> None:
    assert store.get_command("0" * 32) is None
    with pytest.raises(UnknownCommand):
        store.mark_command_delivered("0" * 32, jti="j", now=1.0)
    with pytest.raises(UnknownCommand):
        store.record_command_result(provisioned_device, "0" * 32, {}, now=1.0)


def test_bodies_must_be_json_objects(store: Store, provisioned_device: str) -> None:
    with pytest.raises(TypeError):
        store.queue_command(provisioned_device, ["not", "an", "object"], now=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.queue_command(provisioned_device, {"x": float("nan")}, now=1.0)
    assert store.pending_commands(provisioned_device) == []
