"""hatchway's persistent state behind one repository interface.

SQLite (a file under the data dir) is the embedded default; PostgreSQL is used
when the URL says so. Both run the same SQLAlchemy Core statements and the same
Alembic migrations, and the same tests run against both.
"""

from hatchway.store.device_revocations import (
    CrlRecord,
    RevocationClosed,
    RevocationRecord,
    RevokedCertificate,
)
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
from hatchway.store.keyrotation import DeviceRotation, ServerKeyRow
from hatchway.store.login_errors import (
    ClientExists,
    LoginSessionExists,
    RefreshFamilyExists,
    RefreshTokenInvalid,
    RefreshTokenReused,
    StaleSession,
    UnknownClient,
    UnknownUser,
    UserCodeTaken,
    UserExists,
)
from hatchway.store.login_records import (
    AuditEvent,
    AuditRecord,
    RefreshRecord,
    Rotation,
    SessionFamilyRecord,
    UserRecord,
)
from hatchway.store.messages import AcceptRequest, Advance
from hatchway.store.records import (
    COMMAND_TRANSITIONS,
    DEVICE_TRANSITIONS,
    AcceptResult,
    CommandRecord,
    CommandStatus,
    Delivery,
    DeviceRecord,
    DeviceStatus,
    JsonObject,
    MessageRecord,
    SealedDelivery,
)
from hatchway.store.schema import MAX_ID_LENGTH, MAX_KID_LENGTH, MAX_USERNAME_LENGTH
from hatchway.store.store import Store
from hatchway.store.users import username_key

__all__ = [
    "COMMAND_TRANSITIONS",
    "DEVICE_TRANSITIONS",
    "MAX_ID_LENGTH",
    "MAX_KID_LENGTH",
    "MAX_USERNAME_LENGTH",
    "AcceptRequest",
    "AcceptResult",
    "Advance",
    "AuditEvent",
    "AuditRecord",
    "ClientExists",
    "CommandRecord",
    "CommandStatus",
    "CrlRecord",
    "Delivery",
    "DeviceExists",
    "DeviceRecord",
    "DeviceRotation",
    "DeviceStatus",
    "InvalidTransition",
    "JsonObject",
    "KeyIdTaken",
    "LoginSessionExists",
    "MessageRecord",
    "RefreshFamilyExists",
    "RefreshRecord",
    "RefreshTokenInvalid",
    "RefreshTokenReused",
    "ReplayedJti",
    "RevocationClosed",
    "RevocationRecord",
    "RevokedCertificate",
    "Rotation",
    "SealedDelivery",
    "SecretAlreadyUsed",
    "ServerKeyRow",
    "SessionFamilyRecord",
    "StaleSession",
    "Store",
    "StoreError",
    "UnknownClient",
    "UnknownCommand",
    "UnknownDevice",
    "UnknownUser",
    "UserCodeTaken",
    "UserExists",
    "UserRecord",
    "username_key",
]
