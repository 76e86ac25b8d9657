"""The store's tables, as SQLAlchemy Core metadata.

This module is the model that Alembic migrations must match; a test compares it
with a freshly migrated database so the two cannot drift apart.

Conventions that keep SQLite and PostgreSQL behaving the same:

* times are POSIX seconds in ``DOUBLE`` columns, always passed in by the caller;
* JSON is ``json.dumps`` text, not a native JSON type, so both engines store and
  return identical strings;
* the replay bitmap is hex text, so a window wider than 63 bits never overflows
  a signed 64-bit integer;
* constraint names follow one naming convention, so later migrations (users,
  login sessions, refresh tokens, audit log) can refer to them on both engines.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

#: Longest identifier (device id, jti, mid, typ) the store accepts. Callers cap
#: remote input at this length; the store checks again so that PostgreSQL and
#: SQLite (which ignores VARCHAR lengths) reject the same values.
MAX_ID_LENGTH = 255

#: Longest JWK ``kid`` the store indexes (hatchway.msgsec accepts up to 256).
MAX_KID_LENGTH = 512

metadata = MetaData(naming_convention=NAMING_CONVENTION)

# SQLite only auto-assigns INTEGER PRIMARY KEY columns, so the 64-bit surrogate
# keys are plain INTEGER there (which SQLite stores as 64-bit anyway).
SurrogateKey = BigInteger().with_variant(Integer(), "sqlite")


def _device_fk() -> ForeignKey:
    return ForeignKey("devices.device_id", ondelete="CASCADE")


devices = Table(
    "devices",
    metadata,
    Column("device_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("secret_hash", Text, nullable=False),
    Column("secret_used_at", Double, nullable=True),
    Column("status", String(16), nullable=False),
    Column("signing_jwk", Text, nullable=True),
    # The signing key's kid, copied out of signing_jwk so that a message's JWS
    # header can find its sender. Unique: one enrolled key belongs to one device,
    # so a device cannot claim another's kid and divert its messages.
    Column("signing_kid", String(MAX_KID_LENGTH), nullable=True),
    Column("encryption_jwk", Text, nullable=True),
    Column("suite", Text, nullable=True),
    Column("certificate_pem", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("enrolled_at", Double, nullable=True),
    Column("deregistered_at", Double, nullable=True),
    # Last server->device sequence number handed out; 0 means none yet.
    Column("outbound_seq", BigInteger, nullable=False, server_default="0"),
    UniqueConstraint("signing_kid"),
)

# One row per device, created with the device. accept_message locks this row,
# which is what serialises concurrent messages from the same device.
replay_windows = Table(
    "replay_windows",
    metadata,
    Column("device_id", String(MAX_ID_LENGTH), _device_fk(), primary_key=True),
    Column("highest_seq", BigInteger, nullable=False),
    Column("bitmap", Text, nullable=False),
)

seen_jti = Table(
    "seen_jti",
    metadata,
    Column("device_id", String(MAX_ID_LENGTH), _device_fk(), primary_key=True),
    Column("jti", String(MAX_ID_LENGTH), primary_key=True),
    Column("exp", Double, nullable=False),
    Index(None, "exp"),
)

# Server-issued single-use tokens (enrolment tokens). Kept apart from seen_jti so
# a device cannot burn a token's jti by sending a message that reuses it.
used_tokens = Table(
    "used_tokens",
    metadata,
    Column("jti", String(MAX_ID_LENGTH), primary_key=True),
    Column("exp", Double, nullable=False),
    Index(None, "exp"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("device_id", String(MAX_ID_LENGTH), _device_fk(), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("jti", String(MAX_ID_LENGTH), nullable=False),
    Column("mid", String(MAX_ID_LENGTH), nullable=True),
    Column("typ", String(MAX_ID_LENGTH), nullable=False),
    Column("body", Text, nullable=False),
    Column("received_at", Double, nullable=False),
    # NULL mids are distinct on both engines, so only real mids deduplicate.
    UniqueConstraint("device_id", "mid"),
    Index(None, "device_id", "id"),
    # AUTOINCREMENT keeps SQLite from reusing ids, so id order is arrival order.
    sqlite_autoincrement=True,
)

commands = Table(
    "commands",
    metadata,
    Column("id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("command_id", String(32), nullable=False),
    Column("device_id", String(MAX_ID_LENGTH), _device_fk(), nullable=False),
    Column("body", Text, nullable=False),
    Column("status", String(16), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("delivered_at", Double, nullable=True),
    Column("delivery_jti", String(MAX_ID_LENGTH), nullable=True),
    Column("result", Text, nullable=True),
    Column("completed_at", Double, nullable=True),
    UniqueConstraint("command_id"),
    Index(None, "device_id", "status", "id"),
    sqlite_autoincrement=True,
)
