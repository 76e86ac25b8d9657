"""hatchway's notification bus: cross-process wake-ups (ARCHITECTURE.md, "Layers").

:class:`InProcessBus` is the embedded default; :class:`PostgresBus` serves several
replicas over LISTEN/NOTIFY. :func:`bus_from_url` picks one from the store's
database URL, so a deployment that shares a PostgreSQL store shares a bus too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sqlalchemy.engine import make_url

from hatchway.bus._hub import (
    CHANNEL_PATTERN,
    MAX_PAYLOAD_BYTES,
    RESYNC,
    Subscription,
    check_channel,
)
from hatchway.bus.base import Bus
from hatchway.bus.inprocess import InProcessBus
from hatchway.extras import require_psycopg

if TYPE_CHECKING:
    from hatchway.bus.postgres import PostgresBus, postgres_conninfo

# psycopg is the optional ``postgres`` extra: the PostgreSQL bus is imported on
# first use, so the plain install serves on the in-process bus (issue 7).
_LAZY = frozenset({"PostgresBus", "postgres_conninfo"})


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        require_psycopg()
        from hatchway.bus import postgres

        return getattr(postgres, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def bus_from_url(database_url: str | None) -> Bus:
    """PostgresBus for a ``postgresql`` URL, else an InProcessBus (SQLite, None).

    Raises ``ConfigurationError`` naming the ``postgres`` extra when psycopg is missing.
    """
    if database_url is not None and make_url(database_url).get_backend_name() == "postgresql":
        require_psycopg()
        from hatchway.bus.postgres import PostgresBus

        return PostgresBus.from_url(database_url)
    return InProcessBus()


__all__ = [
    "CHANNEL_PATTERN",
    "MAX_PAYLOAD_BYTES",
    "RESYNC",
    "Bus",
    "InProcessBus",
    "PostgresBus",
    "Subscription",
    "bus_from_url",
    "check_channel",
    "postgres_conninfo",
]
