"""A reference sliding replay window for store tests (RFC 4303 §3.4.3 style).

The real window lives in the protocol core; the store only persists what an
``advance`` callable returns, so tests need one that behaves like the real one.
"""

from __future__ import annotations

from collections.abc import Callable


class Rejected(Exception):
    """The sequence number is a replay or too old for the window."""


def window_advance(seq: int, width: int = 1024) -> Callable[[int, int], tuple[int, int]]:
    """``advance`` for ``seq``: bit ``k`` of the bitmap means ``highest - k`` was seen."""
    mask = (1 << width) - 1

    def advance(highest: int, bitmap: int) -> tuple[int, int]:
        if seq > highest:
            return seq, ((bitmap << (seq - highest)) | 1) & mask
        offset = highest - seq
        if offset >= width or (bitmap >> offset) & 1:
            raise Rejected(seq)
        return highest, bitmap | (1 << offset)

    return advance
