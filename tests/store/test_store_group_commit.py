"""GroupCommitter: an acknowledgement is released only after its batch committed.

"Acknowledged ⇒ stored" (issue 10 §1): MessageService seals the ack after the
committer's future resolves, so the future must never resolve before the commit.
The kill -9 end-to-end test covers the whole server; these pin the mechanism.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from typing import Any

import pytest
from store_enrol import enrol_device

from hatchway.errors import InvalidMessage
from hatchway.flows.ingest import GroupCommitter
from hatchway.msgsec import ReplayWindow
from hatchway.store import AcceptRequest, AcceptResult, Store

pytest_plugins = ["store_fixtures"]

WAIT = 30.0  # generous: the machine may be loaded; a pass never waits this long


def req(
    device: str, seq: int, jti: str, mid: str | None = None, advance: Any = None
) -> AcceptRequest:
    def window(highest: int, bitmap: int) -> tuple[int, int]:
        moved = ReplayWindow(highest=highest, bitmap=bitmap).accept(seq)
        return moved.highest, moved.bitmap

    return AcceptRequest(
        device, seq, jti, 10_000.0, mid, "telemetry", {"n": seq}, 1000.0, advance or window
    )


def test_ack_resolves_only_after_commit(store_url: str, store: Store, enrolled_device: str) -> None:
    committer = GroupCommitter(store, writers=1)  # one writer, so the gate holds it
    observer = Store.open(store_url)  # another connection: sees committed rows only
    gate, holding = threading.Event(), threading.Event()
    seen_while_in_batch: list[tuple[bool, int]] = []
    first: Future[AcceptResult]

    def hold(highest: int, bitmap: int) -> tuple[int, int]:
        holding.set()
        assert gate.wait(WAIT)
        return ReplayWindow(highest=highest, bitmap=bitmap).accept(1).highest, 1

    def check(highest: int, bitmap: int) -> tuple[int, int]:
        # Runs in the same batch as `first`, after it was accepted but before commit.
        seen_while_in_batch.append((first.done(), observer.count_messages(enrolled_device)))
        moved = ReplayWindow(highest=highest, bitmap=bitmap).accept(3)
        return moved.highest, moved.bitmap

    try:
        gated = committer.submit(req(enrolled_device, 1, "j1", advance=hold))
        assert holding.wait(WAIT)  # the writer is inside batch 1
        # Queued meanwhile, so both land in batch 2 together.
        first = committer.submit(req(enrolled_device, 2, "j2", mid="m2"))
        second = committer.submit(req(enrolled_device, 3, "j3", advance=check))
        gate.set()
        assert gated.result(WAIT).reply_seq == 1
        assert first.result(WAIT).reply_seq == 2
        assert second.result(WAIT).reply_seq == 3
        # Inside batch 2: `first` not yet acknowledged and not yet visible elsewhere.
        assert seen_while_in_batch == [(False, 1)]
        # Once acknowledged, it is visible to every other connection.
        assert observer.count_messages(enrolled_device) == 3
        assert (committer.batches, committer.messages) == (2, 3)
    finally:
        gate.set()
        committer.close()
        observer.close()


@pytest.mark.parametrize("writers", [1, 2])
def test_concurrent_callers_share_commits(store: Store, enrolled_device: str, writers: int) -> None:
    devices = [enrolled_device]
    for i in range(2, 6):
        store.provision_device(f"dev-{i}", f"hash-{i}", now=1000.0)
        enrol_device(store, f"dev-{i}")
        devices.append(f"dev-{i}")
    committer = GroupCommitter(store, max_batch=16, writers=writers)
    per_device = 20
    errors: list[BaseException] = []
    replies: dict[str, list[int]] = {d: [] for d in devices}

    def device_thread(device: str) -> None:
        try:
            for seq in range(1, per_device + 1):
                # Every message sent twice (a retransmission with a fresh seq/jti).
                a = committer.accept(req(device, 2 * seq, f"{device}-a{seq}", mid=f"m{seq}"))
                b = committer.accept(req(device, 2 * seq + 1, f"{device}-b{seq}", mid=f"m{seq}"))
                assert (a.duplicate, b.duplicate, a.message_id) == (False, True, b.message_id)
                replies[device] += [a.reply_seq, b.reply_seq]
        except BaseException as exc:  # reported below, from the test thread
            errors.append(exc)

    threads = [threading.Thread(target=device_thread, args=(d,)) for d in devices]
    for t in threads:
        t.start()
    for t in threads:
        t.join(WAIT)
    committer.close()
    assert errors == []
    for device in devices:
        assert store.count_messages(device) == per_device
        assert replies[device] == list(range(1, 2 * per_device + 1))
    assert committer.messages == 2 * per_device * len(devices)


def test_refusal_and_batch_failure_reach_only_their_callers(
    store: Store, enrolled_device: str
) -> None:
    committer = GroupCommitter(store)
    try:
        assert committer.accept(req(enrolled_device, 1, "j1")).reply_seq == 1
        with pytest.raises(InvalidMessage):
            committer.accept(req(enrolled_device, 1, "j1b"))  # replayed seq: refused alone

        def broken(highest: int, bitmap: int) -> tuple[int, int]:
            raise RuntimeError("database gone")

        with pytest.raises(RuntimeError):
            committer.accept(req(enrolled_device, 2, "j2", advance=broken))
        # The writer survives a failed batch.
        assert committer.accept(req(enrolled_device, 2, "j2")).reply_seq == 2
    finally:
        committer.close()
    assert store.count_messages(enrolled_device) == 2
    with pytest.raises(RuntimeError):
        committer.submit(req(enrolled_device, 3, "j3"))
    with pytest.raises(ValueError):
        GroupCommitter(store, max_batch=0)
    with pytest.raises(ValueError):
        GroupCommitter(store, writers=0)
    expected = 2 if store.engine.dialect.name == "postgresql" else 1
    assert GroupCommitter(store).writers == expected


def test_a_caller_that_gave_up_is_dropped_and_the_writer_survives(
    store: Store, enrolled_device: str
) -> None:
    """asyncio.wrap_future cancels the future when the waiting task is cancelled."""
    committer = GroupCommitter(store, writers=1)
    gate, holding = threading.Event(), threading.Event()

    def hold(highest: int, bitmap: int) -> tuple[int, int]:
        holding.set()
        assert gate.wait(WAIT)
        return 1, 1

    try:
        gated = committer.submit(req(enrolled_device, 1, "j1", advance=hold))
        assert holding.wait(WAIT)
        gone = committer.submit(req(enrolled_device, 2, "j2"))
        kept = committer.submit(req(enrolled_device, 3, "j3"))
        assert gone.cancel()
        gate.set()
        assert gated.result(WAIT).reply_seq == 1
        assert kept.result(WAIT).reply_seq == 2
        assert committer.accept(req(enrolled_device, 4, "j4")).reply_seq == 3
    finally:
        gate.set()
        committer.close()
    assert [m.seq for m in store.list_messages(enrolled_device)] == [1, 3, 4]
