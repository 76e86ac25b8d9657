"""The gateway's window of uplinks in flight (sans-I/O): whatever order uplinks finish
in, they are released (answered and PUBACKed) in the order they arrived, as MQTT 5
§4.6 [MQTT-4.6.0-2] requires, and nothing at or after a failed one is released."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hatchway.mqtt.window import AckWindow


def test_an_early_finisher_waits_for_the_uplinks_ahead_of_it() -> None:
    window: AckWindow[str] = AckWindow(4)
    tickets = [window.admit(name) for name in "abcd"]
    assert window.full
    assert window.finish(tickets[2]) == []  # c is done, but a and b are not
    assert window.finish(tickets[1]) == []
    assert window.finish(tickets[0]) == ["a", "b", "c"]
    assert len(window) == 1 and not window.full
    window.admit("e")
    assert window.finish(tickets[3]) == ["d"]


def test_a_failure_halts_the_window_for_good() -> None:
    window: AckWindow[str] = AckWindow(8)
    a, b, c = (window.admit(name) for name in "abc")
    assert window.finish(c) == []
    assert window.finish(b, failed=True) == []
    assert window.finish(a) == ["a"]  # before the failure: still acknowledged
    assert window.halted and len(window) == 2  # b and c wait for the broker's redelivery


@pytest.mark.parametrize("ticket", [-1, 3, 99])
def test_unknown_and_repeated_tickets_are_refused(ticket: int) -> None:
    window: AckWindow[int] = AckWindow(4)
    first = window.admit(0)
    window.admit(1)
    window.admit(2)
    with pytest.raises(KeyError):
        window.finish(ticket)
    assert window.finish(first) == [0]
    with pytest.raises(KeyError):
        window.finish(first)  # released already: finishing twice is a bug


def test_a_full_window_admits_nothing_more() -> None:
    window: AckWindow[int] = AckWindow(2)
    window.admit(0)
    window.admit(1)
    with pytest.raises(OverflowError):
        window.admit(2)
    with pytest.raises(ValueError, match="at least one"):
        AckWindow(0)


@st.composite
def schedules(draw: st.DrawFn) -> tuple[int, list[int], set[int]]:
    """A window size, an order in which uplinks finish, and which of them fail."""
    count = draw(st.integers(1, 60))
    order = draw(st.permutations(range(count)))
    failed = draw(st.sets(st.integers(0, count - 1), max_size=3))
    return draw(st.integers(1, 16)), list(order), failed


@given(schedules())
def test_release_order_is_arrival_order(schedule: tuple[int, list[int], set[int]]) -> None:
    """Uplinks arrive as the window has room and finish in any order; what is released
    is exactly the arrival-order prefix before the first failure, each uplink only
    after it and all before it finished."""
    size, order, failed = schedule
    window: AckWindow[int] = AckWindow(size)
    arrived: list[int] = []
    in_flight: set[int] = set()
    finished: set[int] = set()
    released: list[int] = []
    pending = list(order)
    while pending or in_flight:
        while not window.full and len(arrived) < len(order):
            n = len(arrived)
            assert window.admit(n) == n
            arrived.append(n)
            in_flight.add(n)
        # The next to finish, in the drawn order, among those that have arrived.
        n = next(x for x in pending if x in in_flight)
        pending.remove(n)
        in_flight.discard(n)
        finished.add(n)
        out = window.finish(n, failed=n in failed)
        assert all(x in finished for x in out)
        released += out
        if window.halted:
            break
    cut = min(failed, default=len(order))
    assert window.halted == bool(failed)
    assert released == list(range(cut))
