"""accept_message: replay window, jti and message insert as one transaction."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import func, select
from store_enrol import enrol_device
from store_replay import Rejected, window_advance

from hatchway.errors import InvalidMessage
from hatchway.store import ReplayedJti, Store, UnknownDevice
from hatchway.store.schema import seen_jti

pytest_plugins = ["store_fixtures"]


def _accept(
    store: Store, device: str, seq: int, jti: str, mid: str | None = None, **kw: Any
) -> Any:
    return store.accept_message(
        device,
        seq=seq,
        jti=jti,
        exp=kw.pop("exp", 10_000.0),
        mid=mid,
        typ=kw.pop("typ", "telemetry"),
        body=kw.pop("body", {"seq": seq}),
        now=kw.pop("now", 1000.0 + seq),
        advance=kw.pop("advance", window_advance(seq)),
    )


def _jti_rows(store: Store) -> int:
    with store.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(seen_jti)).scalar_one())


class Recorder:
    """An ``advance`` that records what the store handed it."""

    def __init__(self, result: tuple[int, int]) -> None:
        self.result = result
        self.seen: list[tuple[int, int]] = []

    def __call__(self, highest: int, bitmap: int) -> tuple[int, int]:
        self.seen.append((highest, bitmap))
        return self.result


def test_accept_stores_message(store: Store, enrolled_device: str) -> None:
    result = _accept(store, enrolled_device, 1, "j1", mid="m1", body={"t": 21.5})
    assert result.duplicate is False
    [message] = store.list_messages(enrolled_device)
    assert message.message_id == result.message_id
    assert (message.seq, message.jti, message.mid, message.typ) == (1, "j1", "m1", "telemetry")
    assert message.body == {"t": 21.5}
    assert message.received_at == 1001.0
    assert message.device_id == enrolled_device


def test_list_newest_last_and_count(store: Store, enrolled_device: str) -> None:
    for seq in range(1, 8):
        _accept(store, enrolled_device, seq, f"j{seq}")
    assert [m.seq for m in store.list_messages(enrolled_device)] == list(range(1, 8))
    assert [m.seq for m in store.list_messages(enrolled_device, limit=3)] == [5, 6, 7]
    assert store.count_messages(enrolled_device) == 7
    assert store.count_messages("nobody") == 0
    assert store.list_messages("nobody") == []


def test_window_is_loaded_and_saved(store: Store, enrolled_device: str) -> None:
    first = Recorder((5, 0b10001))
    _accept(store, enrolled_device, 5, "a", advance=first)
    assert first.seen == [(0, 0)]  # a new device starts from an empty window
    second = Recorder((6, 0b100011))
    _accept(store, enrolled_device, 6, "b", advance=second)
    assert second.seen == [(5, 0b10001)]


def test_wide_bitmap_does_not_overflow(store: Store, enrolled_device: str) -> None:
    wide = (1 << 1023) | (1 << 64) | 1
    _accept(store, enrolled_device, 9, "a", advance=Recorder((2**63 - 1, wide)))
    probe = Recorder((2**63 - 1, wide))
    _accept(store, enrolled_device, 10, "b", advance=probe)
    assert probe.seen == [(2**63 - 1, wide)]


def test_out_of_range_window_is_refused(store: Store, enrolled_device: str) -> None:
    with pytest.raises(ValueError, match="out-of-range"):
        _accept(store, enrolled_device, 1, "a", advance=Recorder((2**63, 0)))
    with pytest.raises(ValueError, match="out-of-range"):
        _accept(store, enrolled_device, 1, "a", advance=Recorder((1, -1)))
    assert _jti_rows(store) == 0


def test_advance_raising_rolls_back_everything(store: Store, enrolled_device: str) -> None:
    _accept(store, enrolled_device, 3, "j3")
    with pytest.raises(Rejected):
        _accept(store, enrolled_device, 3, "fresh-jti")
    assert _jti_rows(store) == 1
    assert store.count_messages(enrolled_device) == 1
    # The rejected call did not consume "fresh-jti".
    assert _accept(store, enrolled_device, 4, "fresh-jti").duplicate is False


def test_replayed_jti_is_rejected_and_rolled_back(store: Store, enrolled_device: str) -> None:
    _accept(store, enrolled_device, 1, "same")
    probe = Recorder((2, 0b11))
    with pytest.raises(ReplayedJti) as err:
        _accept(store, enrolled_device, 2, "same", advance=probe)
    assert isinstance(err.value, InvalidMessage)
    assert str(err.value) == "invalid message"
    assert store.count_messages(enrolled_device) == 1
    # The window advance of the rejected message was not saved.
    after = Recorder((2, 0b11))
    _accept(store, enrolled_device, 2, "other", advance=after)
    assert after.seen == [(1, 1)]


def test_jti_is_scoped_per_device(store: Store, enrolled_device: str) -> None:
    store.provision_device("dev-2", "h", now=1.0)
    enrol_device(store, "dev-2")
    _accept(store, enrolled_device, 1, "shared")
    assert _accept(store, "dev-2", 1, "shared").duplicate is False


def test_duplicate_mid_is_not_stored_twice(store: Store, enrolled_device: str) -> None:
    first = _accept(store, enrolled_device, 1, "j1", mid="reading-1")
    retry = _accept(store, enrolled_device, 2, "j2", mid="reading-1")
    assert retry.duplicate is True
    assert retry.message_id == first.message_id
    assert store.count_messages(enrolled_device) == 1
    # The retransmission's own seq and jti are consumed all the same.
    with pytest.raises(ReplayedJti):
        _accept(store, enrolled_device, 3, "j2")
    with pytest.raises(Rejected):
        _accept(store, enrolled_device, 2, "j-new")


def test_messages_without_mid_are_never_merged(store: Store, enrolled_device: str) -> None:
    _accept(store, enrolled_device, 1, "j1", body={"x": 1})
    _accept(store, enrolled_device, 2, "j2", body={"x": 1})
    assert store.count_messages(enrolled_device) == 2


def test_unknown_device(store: Store) -> None:
    with pytest.raises(UnknownDevice):
        _accept(store, "ghost", 1, "j")


def test_oversized_identifiers_are_refused(store: Store, enrolled_device: str) -> None:
    with pytest.raises(ValueError):
        _accept(store, enrolled_device, 1, "j" * 256)
    with pytest.raises(ValueError):
        _accept(store, enrolled_device, 1, "j", mid="m" * 256)
    assert _jti_rows(store) == 0


def test_purge_expired_message_jti(store: Store, enrolled_device: str) -> None:
    _accept(store, enrolled_device, 1, "old", exp=100.0)
    _accept(store, enrolled_device, 2, "new", exp=300.0)
    assert store.purge_expired_jti(now=200.0) == 1
    assert _jti_rows(store) == 1
    with pytest.raises(ReplayedJti):
        _accept(store, enrolled_device, 3, "new")


def test_next_outbound_seq(store: Store, enrolled_device: str) -> None:
    assert [store.next_outbound_seq(enrolled_device) for _ in range(3)] == [1, 2, 3]
    store.provision_device("dev-2", "h", now=1.0)
    assert store.next_outbound_seq("dev-2") == 1
    with pytest.raises(UnknownDevice):
        store.next_outbound_seq("ghost")


def test_only_enrolled_devices_get_messages_in(store: Store, provisioned_device: str) -> None:
    """Checked in the accept transaction, so a replica with a stale key cache is safe."""
    with pytest.raises(UnknownDevice):
        _accept(store, provisioned_device, 1, "j1")
    enrol_device(store, provisioned_device)
    _accept(store, provisioned_device, 1, "j1")
    store.deregister_device(provisioned_device, now=3000.0)
    with pytest.raises(UnknownDevice):
        _accept(store, provisioned_device, 2, "j2")
    assert store.count_messages(provisioned_device) == 1


def test_accept_reserves_the_reply_seq_in_the_same_transaction(
    store: Store, enrolled_device: str
) -> None:
    first = _accept(store, enrolled_device, 1, "j1")
    second = _accept(store, enrolled_device, 2, "j2")
    assert (first.reply_seq, second.reply_seq) == (1, 2)
    assert store.next_outbound_seq(enrolled_device) == 3
    with pytest.raises(Rejected):
        _accept(store, enrolled_device, 2, "j3")  # a rejected message reserves nothing
    assert store.next_outbound_seq(enrolled_device) == 4
