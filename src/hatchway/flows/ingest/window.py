"""The replay-window step a store transaction applies to a device's stored window."""

from __future__ import annotations

from collections.abc import Callable

from hatchway.msgsec import ReplayWindow


def window_advance(seq: int, window_size: int) -> Callable[[int, int], tuple[int, int]]:
    """``advance`` for :class:`~hatchway.store.AcceptRequest`: the stored window moved
    past ``seq``, or ``InvalidMessage`` when ``seq`` is a replay or too old."""
    mask = (1 << window_size) - 1

    def advance(highest: int, bitmap: int) -> tuple[int, int]:
        # Masked so that shrinking HATCHWAY_REPLAY_WINDOW never strands a device
        # whose stored bitmap is wider than the new window.
        window = ReplayWindow(highest=highest, bitmap=bitmap & mask, size=window_size)
        moved = window.accept(seq)
        return moved.highest, moved.bitmap

    return advance
