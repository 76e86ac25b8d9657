"""accept_batch: group commit keeps accept_message's semantics item by item (issue 10 §1)."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from store_enrol import enrol_device

from hatchway.errors import InvalidMessage
from hatchway.msgsec import ReplayWindow
from hatchway.store import AcceptRequest, AcceptResult, ReplayedJti, Store, UnknownDevice
from hatchway.store.schema import messages, seen_jti

pytest_plugins = ["store_fixtures"]


def advance_for(seq: int) -> Any:
    """The protocol core's window, as MessageService uses it (refuses with InvalidMessage)."""

    def advance(highest: int, bitmap: int) -> tuple[int, int]:
        moved = ReplayWindow(highest=highest, bitmap=bitmap).accept(seq)
        return moved.highest, moved.bitmap

    return advance


def req(device: str, seq: int, jti: str, mid: str | None = None, **kw: Any) -> AcceptRequest:
    return AcceptRequest(
        device,
        seq=seq,
        jti=jti,
        exp=kw.pop("exp", 10_000.0),
        mid=mid,
        typ=kw.pop("typ", "telemetry"),
        body=kw.pop("body", {"seq": seq}),
        now=kw.pop("now", 1000.0 + seq),
        advance=kw.pop("advance", advance_for(seq)),
        signing_kid=kw.pop("signing_kid", None),
    )


def count(store: Store, table: Any) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(table)).scalar_one())


@pytest.fixture
def two_devices(store: Store, enrolled_device: str) -> tuple[str, str]:
    store.provision_device("dev-2", "hash-2", now=1000.0)
    enrol_device(store, "dev-2")
    return enrolled_device, "dev-2"


def test_two_devices_interleaved_in_one_batch(store: Store, two_devices: tuple[str, str]) -> None:
    a, b = two_devices
    batch = [req(a, 1, "a1"), req(b, 1, "b1"), req(a, 2, "a2"), req(b, 3, "b3"), req(b, 2, "b2")]
    out = store.accept_batch(batch)
    assert all(isinstance(o, AcceptResult) and not o.duplicate for o in out)
    results = [o for o in out if isinstance(o, AcceptResult)]
    # Each device's reply sequence numbers count up in request order.
    assert [r.reply_seq for r in results] == [1, 1, 2, 2, 3]
    assert len({r.message_id for r in results}) == 5
    assert [m.seq for m in store.list_messages(a)] == [1, 2]
    assert [m.seq for m in store.list_messages(b)] == [1, 3, 2]
    # The windows were persisted: every seq is now a replay, in a later batch.
    again = store.accept_batch([req(a, 2, "a2x"), req(b, 3, "b3x"), req(b, 4, "b4")])
    assert isinstance(again[0], InvalidMessage) and isinstance(again[1], InvalidMessage)
    assert isinstance(again[2], AcceptResult) and again[2].reply_seq == 4


def test_duplicate_mid_in_one_batch_is_stored_once(store: Store, enrolled_device: str) -> None:
    d = enrolled_device
    out = store.accept_batch([req(d, 1, "j1", mid="m1"), req(d, 2, "j2", mid="m1")])
    first, second = out
    assert isinstance(first, AcceptResult) and isinstance(second, AcceptResult)
    assert (first.duplicate, second.duplicate) == (False, True)
    # The duplicate names the original, so it gets the same acknowledgement.
    assert second.message_id == first.message_id
    assert second.reply_seq == first.reply_seq + 1
    assert store.count_messages(d) == 1
    # Both copies consumed their jti (a retransmission under fresh protection).
    assert count(store, seen_jti) == 2
    # And a third copy in a later batch is still the same message.
    [third] = store.accept_batch([req(d, 3, "j3", mid="m1")])
    assert isinstance(third, AcceptResult) and third.duplicate
    assert third.message_id == first.message_id


def test_replays_within_a_batch_are_refused(store: Store, enrolled_device: str) -> None:
    d = enrolled_device
    out = store.accept_batch(
        [req(d, 1, "j1"), req(d, 1, "j1-again"), req(d, 2, "j1"), req(d, 3, "j3")]
    )
    assert isinstance(out[0], AcceptResult)
    assert isinstance(out[1], InvalidMessage)  # same seq
    assert isinstance(out[2], ReplayedJti)  # fresh seq, reused jti
    assert isinstance(out[3], AcceptResult)
    assert [m.seq for m in store.list_messages(d)] == [1, 3]
    assert count(store, seen_jti) == 2


def test_replay_across_batches_and_after_reopening(
    store_url: str, store: Store, enrolled_device: str
) -> None:
    first = Store.open(store_url)
    try:
        assert isinstance(first.accept_batch([req(enrolled_device, 5, "j5")])[0], AcceptResult)
    finally:
        first.close()
    # A fresh engine (as after a restart) sees the committed window and jti.
    reopened = Store.open(store_url)
    try:
        out = reopened.accept_batch([req(enrolled_device, 5, "j6"), req(enrolled_device, 6, "j5")])
        assert isinstance(out[0], InvalidMessage)
        assert isinstance(out[1], ReplayedJti)
        assert reopened.count_messages(enrolled_device) == 1
    finally:
        reopened.close()


def test_a_refused_item_does_not_fail_the_others(
    store: Store, two_devices: tuple[str, str]
) -> None:
    a, b = two_devices
    store.provision_device("dev-3", "hash-3", now=1000.0)  # provisioned, never enrolled
    out = store.accept_batch(
        [
            req(a, 1, "a1"),
            req("nobody", 1, "n1"),
            req("dev-3", 1, "p1"),
            req(b, 1, "b1", signing_kid="not-its-key"),
            req(a, 2, "x" * 500),  # jti too long for the schema
            req(a, 3, "a3", body={"bad": float("nan")}),  # not JSON
            req(b, 2, "b2", signing_kid="k-dev-2"),
        ]
    )
    kinds = [type(o) for o in out]
    assert kinds == [
        AcceptResult,
        UnknownDevice,
        UnknownDevice,
        UnknownDevice,
        ValueError,
        ValueError,
        AcceptResult,
    ]
    # Refused items left nothing: their seq and jti are still free.
    assert count(store, seen_jti) == 2
    assert count(store, messages) == 2
    later = store.accept_batch([req(a, 2, "a2"), req(a, 3, "a3"), req(b, 1, "b1")])
    assert all(isinstance(o, AcceptResult) for o in later)


def test_batch_matches_one_at_a_time(store: Store) -> None:
    """The same requests, batched or not, give the same outcomes and the same rows."""
    script = [
        ("dev-1", 3, "j1", "m1"),
        ("dev-2", 1, "j2", "m2"),
        ("dev-1", 1, "j3", "m3"),
        ("dev-1", 3, "j4", "m4"),  # replayed seq
        ("dev-2", 2, "j5", "m2"),  # duplicate mid
        ("dev-1", 2, "j1", "m5"),  # replayed jti
        ("dev-1", 100, "j6", None),  # far ahead: older ones fall out of the window
        ("dev-1", 2, "j7", "m7"),  # now too old
        ("dev-3", 1, "j9", "m9"),  # unknown device
        ("dev-2", 3, "j8", "m8"),
    ]

    def one(r: AcceptRequest) -> AcceptResult | Exception:
        try:
            return store.accept_message(
                r.device_id,
                seq=r.seq,
                jti=r.jti,
                exp=r.exp,
                mid=r.mid,
                typ=r.typ,
                body=r.body,
                now=r.now,
                advance=r.advance,
            )
        except (InvalidMessage, UnknownDevice, ValueError) as exc:
            return exc

    def run(prefix: str, batched: bool) -> tuple[list[Any], list[Any]]:
        for device in ("dev-1", "dev-2"):
            store.provision_device(prefix + device, "h-" + prefix + device, now=1000.0)
            enrol_device(store, prefix + device)
        requests = [req(prefix + d, s, j, m) for d, s, j, m in script]
        out = store.accept_batch(requests) if batched else [one(r) for r in requests]
        rows = [
            (m.seq, m.jti, m.mid)
            for d in ("dev-1", "dev-2")
            for m in store.list_messages(prefix + d)
        ]
        shape = [
            (o.duplicate, o.reply_seq) if isinstance(o, AcceptResult) else type(o).__name__
            for o in out
        ]
        return shape, rows

    batched, single = run("b-", True), run("s-", False)
    assert batched == single
    assert batched[0][4] == (True, 2)  # the duplicate mid, acknowledged as such


def test_an_unexpected_error_rolls_back_the_whole_batch(store: Store, enrolled_device: str) -> None:
    def broken(highest: int, bitmap: int) -> tuple[int, int]:
        raise RuntimeError("not a refusal: the batch must fail")

    with pytest.raises(RuntimeError):
        store.accept_batch(
            [req(enrolled_device, 1, "j1"), req(enrolled_device, 2, "j2", advance=broken)]
        )
    assert count(store, messages) == 0
    assert count(store, seen_jti) == 0
    assert store.accept_batch([]) == []
