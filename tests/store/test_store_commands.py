"""Operator commands: queue, delivery, results, and the transition table."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from hatchway.store import (
    CommandRecord,
    CommandStatus,
    Delivery,
    InvalidTransition,
    SealedDelivery,
    Store,
    UnknownCommand,
    UnknownDevice,
)
from hatchway.store.commands import SealCommand

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


def sealer(tag: str, *, exp: float = 100.0) -> SealCommand:
    """A stand-in for the message service's sealing: a recognisable reply per command."""

    def seal(command: CommandRecord) -> SealedDelivery:
        jti = f"{tag}-{command.command_id[:8]}"
        return SealedDelivery(jti=jti, exp=exp, reply=f"sealed.{jti}".encode())

    return seal


def test_full_lifecycle(store: Store, provisioned_device: str) -> None:
    cid = store.queue_command(provisioned_device, {"op": "reboot"}, now=10.0)
    first = store.deliver_command(provisioned_device, mid="m1", now=11.0, seal=sealer("j1"))
    assert first is not None and first.command_id == cid and not first.repeated
    assert first.reply == f"sealed.{first.jti}".encode()
    delivered = store.get_command(cid)
    assert delivered is not None
    assert delivered.status is CommandStatus.DELIVERED
    assert (delivered.delivered_at, delivered.delivery_jti) == (11.0, first.jti)
    # Delivered but unanswered commands are still pending (listed for the operator).
    assert [c.command_id for c in store.pending_commands(provisioned_device)] == [cid]
    # ...but not handed out to another poll while the delivery is unexpired,
    assert store.deliver_command(provisioned_device, mid="m2", now=99.0, seal=sealer("x")) is None
    # and handed out again, under a new jti, once it has expired.
    second = store.deliver_command(provisioned_device, mid="m3", now=100.0, seal=sealer("j2"))
    assert second is not None and second.command_id == cid and second.jti != first.jti
    redelivered = store.get_command(cid)
    assert redelivered is not None and redelivered.delivery_jti == second.jti
    assert store.answers_delivery(provisioned_device, cid, first.jti)
    assert store.answers_delivery(provisioned_device, cid, second.jti)
    store.record_command_result(provisioned_device, cid, {"ok": True}, now=101.0)
    done = store.get_command(cid)
    assert done is not None
    assert done.status is CommandStatus.DONE
    assert done.result == {"ok": True}
    assert done.completed_at == 101.0
    assert store.pending_commands(provisioned_device) == []
    assert store.deliver_command(provisioned_device, mid="m4", now=500.0, seal=sealer("y")) is None


def test_a_repeated_poll_mid_gets_the_same_delivery(store: Store, provisioned_device: str) -> None:
    cid = store.queue_command(provisioned_device, {"op": "open-valve"}, now=1.0)
    store.queue_command(provisioned_device, {"op": "second"}, now=1.0)
    first = store.deliver_command(provisioned_device, mid="m1", now=2.0, seal=sealer("j1"))
    again = store.deliver_command(provisioned_device, mid="m1", now=3.0, seal=sealer("j9"))
    assert first is not None and again is not None and first.command_id == cid
    assert (again.command_id, again.jti, again.reply) == (cid, first.jti, first.reply)
    assert again.repeated and not first.repeated
    record = store.get_command(cid)
    assert record is not None and (record.delivered_at, record.delivery_jti) == (2.0, first.jti)
    # Once the delivery has expired the same mid gets nothing: never a second delivery.
    assert store.deliver_command(provisioned_device, mid="m1", now=100.0, seal=sealer("z")) is None


def test_a_retransmitted_poll_never_gets_a_new_delivery(
    store: Store, provisioned_device: str
) -> None:
    cid = store.queue_command(provisioned_device, {"op": "a"}, now=1.0)
    late = store.deliver_command(
        provisioned_device, mid="m1", now=2.0, seal=sealer("j1"), retransmission=True
    )
    assert late is None
    got = store.deliver_command(provisioned_device, mid="m2", now=3.0, seal=sealer("j2"))
    assert got is not None and got.command_id == cid
    # ...but it does get the delivery its first copy got.
    again = store.deliver_command(
        provisioned_device, mid="m2", now=4.0, seal=sealer("j3"), retransmission=True
    )
    assert again is not None and again.repeated and again.jti == got.jti


def test_poll_mids_are_per_device(store: Store, provisioned_device: str) -> None:
    store.provision_device("other", "h", now=1.0)
    mine = store.queue_command(provisioned_device, {"op": "a"}, now=1.0)
    theirs = store.queue_command("other", {"op": "b"}, now=1.0)
    got_mine = store.deliver_command(provisioned_device, mid="m", now=2.0, seal=sealer("a"))
    got_theirs = store.deliver_command("other", mid="m", now=2.0, seal=sealer("b"))
    assert got_mine is not None and got_mine.command_id == mine
    assert got_theirs is not None and got_theirs.command_id == theirs and not got_theirs.repeated
    assert not store.answers_delivery("other", mine, got_mine.jti)
    assert not store.answers_delivery(provisioned_device, theirs, got_theirs.jti)
    assert not store.answers_delivery(provisioned_device, mine, got_theirs.jti)


def test_polls_without_a_mid_never_get_an_outstanding_command(
    store: Store, provisioned_device: str
) -> None:
    cid = store.queue_command(provisioned_device, {"op": "a"}, now=1.0)
    got = store.deliver_command(provisioned_device, mid=None, now=2.0, seal=sealer("a"))
    assert got is not None and got.command_id == cid
    assert store.deliver_command(provisioned_device, mid=None, now=3.0, seal=sealer("b")) is None


def test_a_failed_seal_leaves_the_command_queued(store: Store, provisioned_device: str) -> None:
    cid = store.queue_command(provisioned_device, {"op": "a"}, now=1.0)

    def broken(command: CommandRecord) -> SealedDelivery:
        raise RuntimeError("key unavailable")

    with pytest.raises(RuntimeError):
        store.deliver_command(provisioned_device, mid="m", now=2.0, seal=broken)
    record = store.get_command(cid)
    assert record is not None and record.status is CommandStatus.QUEUED
    got = store.deliver_command(provisioned_device, mid="m", now=3.0, seal=sealer("a"))
    assert got is not None and not got.repeated


def test_concurrent_copies_of_one_poll_get_one_delivery(
    store: Store, provisioned_device: str
) -> None:
    """Eight copies of one poll race (threads, one connection each): one delivery."""
    cid = store.queue_command(provisioned_device, {"op": "a"}, now=1.0)
    store.queue_command(provisioned_device, {"op": "b"}, now=1.0)
    start = threading.Barrier(8)

    def poll(n: int) -> Delivery | None:
        start.wait()
        return store.deliver_command(provisioned_device, mid="m", now=2.0, seal=sealer(f"j{n}"))

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(poll, range(8)))
    assert all(r is not None for r in results)
    assert {(r.command_id, r.jti, r.reply) for r in results if r is not None} == {
        (results[0].command_id, results[0].jti, results[0].reply)  # type: ignore[union-attr]
    }
    assert sum(1 for r in results if r is not None and not r.repeated) == 1
    assert results[0] is not None and results[0].command_id == cid


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
    # A done command is never delivered again.
    assert store.deliver_command(provisioned_device, mid="m", now=4.0, seal=sealer("x")) is None
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
    assert not store.answers_delivery(provisioned_device, "0" * 32, "j")
    with pytest.raises(UnknownDevice):
        store.deliver_command("ghost", mid="m", now=1.0, seal=sealer("j"))
    with pytest.raises(UnknownCommand):
        store.record_command_result(provisioned_device, "0" * 32, {}, now=1.0)


def test_bodies_must_be_json_objects(store: Store, provisioned_device: str) -> None:
    with pytest.raises(TypeError):
        store.queue_command(provisioned_device, ["not", "an", "object"], now=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        store.queue_command(provisioned_device, {"x": float("nan")}, now=1.0)
    assert store.pending_commands(provisioned_device) == []
