"""Shared timing helper for the benchmarks under ``bench/``."""

from __future__ import annotations

import gc
import statistics
import time
from collections.abc import Callable


def median_us(fn: Callable[[], object], *, number: int, repeat: int) -> float:
    """Median over ``repeat`` runs of the mean time of ``number`` calls, in µs.

    The collector is paused inside a run so a stray collection does not land in
    one contender's sample and not another's.
    """
    fn()  # warm caches and lazy imports outside the measurement
    samples = []
    for _ in range(repeat):
        gc.collect()
        gc.disable()
        try:
            start = time.perf_counter()
            for _ in range(number):
                fn()
            samples.append((time.perf_counter() - start) / number * 1e6)
        finally:
            gc.enable()
    return statistics.median(samples)
