"""ReplayWindow (RFC 4303 §3.4.3 sliding window) and the device-side JtiCache."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hatchway.errors import InvalidMessage
from hatchway.msgsec import JtiCache, ReplayWindow


def _accept_all(window: ReplayWindow, seqs: list[int]) -> ReplayWindow:
    for seq in seqs:
        window = window.accept(seq)
    return window


def test_in_order() -> None:
    w = _accept_all(ReplayWindow(), list(range(100)))
    assert w.highest == 99 and w.bitmap == (1 << 64) - 1


def test_out_of_order_within_the_window() -> None:
    w = _accept_all(ReplayWindow(), [10, 5, 9, 0, 7])
    assert w.highest == 10
    assert w.accept(6).bitmap != w.bitmap


@pytest.mark.parametrize("seqs", [[0, 0], [5, 3, 5], [5, 3, 3], [70, 10, 10]])
def test_replay_rejected(seqs: list[int]) -> None:
    w = _accept_all(ReplayWindow(), seqs[:-1])
    with pytest.raises(InvalidMessage):
        w.accept(seqs[-1])


def test_too_old_rejected_and_edge_accepted() -> None:
    w = ReplayWindow().accept(100)
    assert w.accept(100 - 63).highest == 100  # the oldest slot still inside
    with pytest.raises(InvalidMessage):
        w.accept(100 - 64)


def test_large_jump_clears_the_bitmap() -> None:
    w = _accept_all(ReplayWindow(), [1, 2, 3]).accept(2**40)
    assert w.bitmap == 1
    w.accept(2**40 - 1)
    with pytest.raises(InvalidMessage):
        w.accept(3)


@pytest.mark.parametrize("bad", [-1, 2**53, True, 1.0, "1"])
def test_out_of_range_seq(bad: object) -> None:
    with pytest.raises(InvalidMessage):
        ReplayWindow().accept(bad)  # type: ignore[arg-type]


def test_window_state_is_validated() -> None:
    for kwargs in ({"size": 0}, {"size": 5000}, {"highest": -2}, {"bitmap": 1 << 64}):
        with pytest.raises(ValueError):
            ReplayWindow(**kwargs)  # type: ignore[arg-type]
    assert ReplayWindow(size=8).accept(3).size == 8


@settings(max_examples=300, deadline=None)
@given(
    seqs=st.lists(
        st.one_of(st.integers(0, 200), st.integers(0, 2**53 - 1)), min_size=1, max_size=80
    ),
    size=st.sampled_from([1, 8, 64, 128]),
)
def test_property_never_accepts_twice_or_too_old(seqs: list[int], size: int) -> None:
    window = ReplayWindow(size=size)
    accepted: set[int] = set()
    for seq in seqs:
        too_old = seq <= window.highest - size
        try:
            window = window.accept(seq)
        except InvalidMessage:
            assert seq in accepted or too_old
            continue
        assert seq not in accepted
        assert not too_old
        accepted.add(seq)
    assert window.highest == max(accepted)


def test_jti_cache_forgets_after_exp() -> None:
    cache = JtiCache()
    cache.check_and_add("a", 110, now=100)
    with pytest.raises(InvalidMessage):
        cache.check_and_add("a", 110, now=105)
    assert "a" in cache
    cache.check_and_add("a", 200, now=110)  # exp <= now: forgotten, accepted again
    assert len(cache) == 1


def test_jti_cache_bounded() -> None:
    cache = JtiCache(max_entries=2)
    cache.check_and_add("a", 10, now=0)
    cache.check_and_add("b", 20, now=0)
    with pytest.raises(InvalidMessage):
        cache.check_and_add("c", 30, now=5)
    cache.check_and_add("c", 30, now=10)  # "a" expired, room again
    assert "a" not in cache and len(cache) == 2
