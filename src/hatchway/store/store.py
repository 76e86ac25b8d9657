"""``Store``: the one repository interface over SQLite and PostgreSQL.

``Store.open(url)`` creates the engine, upgrades the schema to the newest Alembic
revision and returns a store whose methods are each one transaction. Methods are
synchronous and thread-safe (the server calls them from worker threads); every
method that needs the time takes ``now`` (POSIX seconds), as STYLE.md §8 asks.
"""

from __future__ import annotations

from sqlalchemy import Engine

from hatchway.store.audit import AuditRepository
from hatchway.store.clients import ClientRepository
from hatchway.store.commands import CommandRepository
from hatchway.store.device_revocations import DeviceRevocationRepository
from hatchway.store.devices import DeviceRepository
from hatchway.store.engine import create_store_engine, upgrade_to_head
from hatchway.store.firmware import FirmwareRepository
from hatchway.store.keyrotation import KeyRotationRepository
from hatchway.store.logins import LoginRepository
from hatchway.store.messages import MessageRepository
from hatchway.store.revocations import RevocationRepository
from hatchway.store.rollouts import RolloutRepository
from hatchway.store.tokens import TokenRepository
from hatchway.store.users import UserRepository


class Store(
    DeviceRepository,
    MessageRepository,
    CommandRepository,
    UserRepository,
    LoginRepository,
    TokenRepository,
    RevocationRepository,
    AuditRepository,
    ClientRepository,
    KeyRotationRepository,
    DeviceRevocationRepository,
    FirmwareRepository,
    RolloutRepository,
):
    """Everything hatchway persists, behind one interface.

    Message-level security: devices, messages, commands (revision 0001).
    Cross-device login: users, login sessions, refresh token families, the
    audit log and runtime flags (revision 0002). Registered clients
    (revision 0003_clients). Refresh lifetimes and revoked access tokens
    (revision 0004_token_lifetimes). Firmware keys, releases, groups and
    rollouts (revision 0006_firmware). Revoked devices, certificates and CRLs
    (revision 0008_revocation). Each entity is one repository
    mixin; later entities join the same way, with an Alembic revision each.
    """

    def __init__(self, engine: Engine) -> None:
        """Wrap an engine whose schema is already at head; prefer :meth:`open`."""
        super().__init__(engine)

    @classmethod
    def open(cls, url: str) -> Store:
        """Open ``url`` (``sqlite:///path`` or ``postgresql+psycopg://...``).

        Creates the schema on an empty database and applies any newer migrations;
        on a database already at head this changes nothing.
        """
        engine = create_store_engine(url)
        store = cls(engine)
        try:
            upgrade_to_head(store._write_engine)
        except BaseException:
            engine.dispose()
            raise
        return store

    @property
    def engine(self) -> Engine:
        """The underlying engine, for health checks and tests."""
        return self._engine

    def close(self) -> None:
        """Close every pooled connection. The store must not be used afterwards."""
        self._engine.dispose()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
