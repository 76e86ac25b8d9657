"""Shared budgets of the login flow: memory for one process, Redis for replicas.

See :mod:`hatchway.limits.base` for the interface and why it looks like this.
:func:`limits_from_settings` picks the backend: Redis when ``HATCHWAY_REDIS_URL``
is set (the ``redis`` package is then needed, and imported only then), else
process memory.
"""

from __future__ import annotations

from hatchway.config import Settings
from hatchway.limits.base import Bucket, Limits, LimitsUnavailable
from hatchway.limits.memory import MemoryLimits, UsedOnce

__all__ = [
    "Bucket",
    "Limits",
    "LimitsUnavailable",
    "MemoryLimits",
    "UsedOnce",
    "limits_from_settings",
]


def limits_from_settings(settings: Settings) -> Limits:
    """Redis limits if ``settings.redis_url`` is set, else memory limits."""
    if not settings.redis_url:
        return MemoryLimits()
    from hatchway.limits.redis_limits import RedisLimits  # optional extra

    return RedisLimits(settings.redis_url, prefix=settings.redis_prefix)
