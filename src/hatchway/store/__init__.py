"""hatchway's persistent state behind one repository interface.

SQLite (a file under the data dir) is the embedded default; PostgreSQL is used
when the URL says so. Both run the same SQLAlchemy Core statements and the same
Alembic migrations, and the same tests run against both.
"""

from hatchway.store.errors import (
    DeviceExists,
    InvalidTransition,
    KeyIdTaken,
    ReplayedJti,
    SecretAlreadyUsed,
    StoreError,
    UnknownCommand,
    UnknownDevice,
)
from hatchway.store.messages import Advance
from hatchway.store.records import (
    COMMAND_TRANSITIONS,
    DEVICE_TRANSITIONS,
    AcceptResult,
    CommandRecord,
    CommandStatus,
    DeviceRecord,
    DeviceStatus,
    JsonObject,
    MessageRecord,
)
from hatchway.store.schema import MAX_ID_LENGTH, MAX_KID_LENGTH
from hatchway.store.store import Store

__all__ = [
    "COMMAND_TRANSITIONS",
    "DEVICE_TRANSITIONS",
    "MAX_ID_LENGTH",
    "MAX_KID_LENGTH",
    "AcceptResult",
    "Advance",
    "CommandRecord",
    "CommandStatus",
    "DeviceExists",
    "DeviceRecord",
    "DeviceStatus",
    "InvalidTransition",
    "JsonObject",
    "KeyIdTaken",
    "MessageRecord",
    "ReplayedJti",
    "SecretAlreadyUsed",
    "Store",
    "StoreError",
    "UnknownCommand",
    "UnknownDevice",
]
