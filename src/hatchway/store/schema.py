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
    Boolean,
    Column,
    Double,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
    true,
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

# Every sealed COMMAND message a device was sent (revision 0005_command_delivery).
# One row per poll ``mid``: a retransmitted poll gets the stored reply again, never
# a second delivery, and a command has at most one unexpired delivery at a time.
command_deliveries = Table(
    "command_deliveries",
    metadata,
    Column(
        "command_id",
        String(32),
        ForeignKey("commands.command_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("jti", String(MAX_ID_LENGTH), primary_key=True),
    Column("device_id", String(MAX_ID_LENGTH), _device_fk(), nullable=False),
    # NULL for a poll without a mid (a third-party device): nothing to repeat then.
    Column("poll_mid", String(MAX_ID_LENGTH), nullable=True),
    Column("delivered_at", Double, nullable=False),
    Column("exp", Double, nullable=False),
    # The compact JWE (ASCII), returned verbatim to a retransmission of the poll.
    Column("reply", Text, nullable=False),
    UniqueConstraint("device_id", "poll_mid"),
)

# --- Cross-device login (US 9,635,022 B2): revision 0002 -------------------

#: Longest username (as typed, case preserved) the store accepts.
MAX_USERNAME_LENGTH = 64

# Usernames are unique case-insensitively: the key is the NFKC-casefolded name
# (hatchway.store.users.username_key), which can be longer than the name itself.
users = Table(
    "users",
    metadata,
    Column("username_key", String(MAX_ID_LENGTH), primary_key=True),
    Column("username", String(MAX_USERNAME_LENGTH), nullable=False),
    # ScramVerifier.to_json(): salt, iterations, StoredKey, ServerKey. Never a password.
    Column("verifier", Text, nullable=False),
    Column("disabled", Boolean, nullable=False, server_default=false()),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    # hatchway.login.ratelimit.AttemptState, one column per field, so every
    # replica sees the same back-off and lockout.
    Column("failed_attempts", Integer, nullable=False, server_default="0"),
    Column("blocked_until", Double, nullable=False, server_default="0"),
    Column("locked", Boolean, nullable=False, server_default=false()),
    Column("last_failure_at", Double, nullable=True),
    # Revision 0003_clients: when an operator last ran `users unlock`. Its own
    # column, so that a successful sign-in (which bumps updated_at) cannot
    # reset every client IP's failure count (issue 8 defect 5.1).
    Column("unlocked_at", Double, nullable=True),
)

#: Session states in which a user code still names a session (ACTIVE_STATES).
ACTIVE_LOGIN_STATES = ("pending", "approved")
_ACTIVE_LOGIN_SQL = "state IN ('pending', 'approved')"

# Mirrors hatchway.login.states.LoginSession. Keyed by the SHA-256 of the device
# code: the code itself is never stored, so a database dump cannot be polled with.
login_sessions = Table(
    "login_sessions",
    metadata,
    Column("device_code_hash", LargeBinary, primary_key=True),
    Column("user_code", String(16), nullable=False),
    Column("username", String(MAX_USERNAME_LENGTH), nullable=False),
    Column("client_id", String(MAX_ID_LENGTH), nullable=False),
    Column("scope", Text, nullable=False),
    Column("device_name", Text, nullable=False),
    Column("initiator_ip", String(64), nullable=False),
    Column("initiator_user_agent", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    Column("interval", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("last_poll_at", Double, nullable=True),
    Column("match_number", String(8), nullable=True),
    Column("match_failures", Integer, nullable=False, server_default="0"),
    Column("decided_at", Double, nullable=True),
    Column("approver_ip", String(64), nullable=True),
    Column("approver_user_agent", Text, nullable=True),
    # Revision 0003_clients, confirm-code anti-phishing: the three codes the QR
    # page offers (the real one among two decoys, in display order) and how
    # many wrong picks the session has seen.
    Column("code_choices", Text, nullable=True),
    Column("confirm_failures", Integer, nullable=False, server_default="0"),
    # A user code is reused only once its session is over; a partial unique
    # index says exactly that on both engines.
    Index(
        "uq_login_sessions_user_code_active",
        "user_code",
        unique=True,
        sqlite_where=text(_ACTIVE_LOGIN_SQL),
        postgresql_where=text(_ACTIVE_LOGIN_SQL),
    ),
    # The expiry sweep and the pending count scan by state and deadline.
    Index(None, "state", "expires_at"),
    # Finds an *ended* session by its code, so a late Deny can say "too late".
    Index(None, "user_code", "created_at"),
)

# One row per sign-in (a "session family", OAuth 2.1 §4.3.1 / RFC 6819
# §5.2.2.3): every rotated refresh token belongs to it, and revoking it ends
# them all.
refresh_families = Table(
    "refresh_families",
    metadata,
    Column("family_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("username", String(MAX_USERNAME_LENGTH), nullable=False),
    Column("username_key", String(MAX_ID_LENGTH), nullable=False),
    Column("client_id", String(MAX_ID_LENGTH), nullable=False),
    Column("device_name", Text, nullable=False),
    Column("scope", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("last_used_at", Double, nullable=True),
    Column("revoked_at", Double, nullable=True),
    # Revision 0004: the absolute end of the sign-in, however often it refreshes.
    # NULL only for rows that predate 0004 and were not backfilled.
    Column("expires_at", Double, nullable=True),
    Index(None, "username_key"),
)

refresh_tokens = Table(
    "refresh_tokens",
    metadata,
    # SHA-256 of the opaque token; the token itself is never stored.
    Column("token_hash", LargeBinary, primary_key=True),
    Column(
        "family_id",
        String(MAX_ID_LENGTH),
        ForeignKey("refresh_families.family_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("created_at", Double, nullable=False),
    Column("expires_at", Double, nullable=False),
    # Set when the token is rotated; presenting it again is reuse.
    Column("used_at", Double, nullable=True),
    # Revision 0004, set when rotated: the successor's hash, and the successor
    # itself sealed under a key derived from *this* token (hatchway.flows.oauth.
    # successor), so a retry within the reuse interval gets the same successor
    # and a database dump alone reveals no live token.
    Column("successor_hash", LargeBinary, nullable=True),
    Column("successor_sealed", LargeBinary, nullable=True),
    Index(None, "family_id"),
)

# Revision 0004: access tokens (RFC 9068 JWTs) revoked before their ``exp``
# (RFC 7009), by ``jti``. A row is useless after ``exp`` and is swept then.
revoked_access_tokens = Table(
    "revoked_access_tokens",
    metadata,
    Column("jti", String(MAX_ID_LENGTH), primary_key=True),
    Column("exp", Double, nullable=False),
    Index(None, "exp"),
)

audit_log = Table(
    "audit_log",
    metadata,
    Column("id", SurrogateKey, primary_key=True, autoincrement=True),
    Column("at", Double, nullable=False),
    Column("event", String(32), nullable=False),
    Column("username", String(MAX_USERNAME_LENGTH), nullable=True),
    Column("ip", String(64), nullable=True),
    Column("user_agent", Text, nullable=True),
    Column("session_ref", String(MAX_ID_LENGTH), nullable=True),
    Column("detail", Text, nullable=True),
    Index(None, "event", "id"),
    sqlite_autoincrement=True,
)

# Runtime switches shared by every replica (e.g. the admin's "login flow off").
settings = Table(
    "settings",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
)

# --- Registered clients (issue 8 §1): revision 0003_clients ----------------

#: Longest client display name (hatchway.clients.model.MAX_CLIENT_NAME_LENGTH).
MAX_CLIENT_NAME_LENGTH = 80

# Mirrors hatchway.clients.model.ClientRecord. The client secret is never
# stored, only its SHA-256 (secret_hash); scopes are space-separated tokens.
clients = Table(
    "clients",
    metadata,
    Column("client_id", String(MAX_ID_LENGTH), primary_key=True),
    Column("name", String(MAX_CLIENT_NAME_LENGTH), nullable=False),
    Column("enabled", Boolean, nullable=False, server_default=true()),
    Column("scopes", Text, nullable=False),
    Column("anti_phishing", String(32), nullable=False),
    Column("access_ttl", Integer, nullable=True),
    Column("refresh_ttl", Integer, nullable=True),
    Column("client_type", String(16), nullable=False),
    Column("token_endpoint_auth_method", String(32), nullable=False),
    Column("secret_hash", String(128), nullable=True),
    Column("jwks", Text, nullable=True),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
)

# --- Key rotation (issue 9, docs/key-rotation.md): revision 0007_key_rotation ---

# One row per completed device-key rotation, keyed by the KEY_ROTATE message's mid:
# a retransmission finds it and gets the same certificate. The old signing key
# still resolves to the device until ``retires_at``, and only while the device's
# current key is still ``new_signing_kid`` (a later rotation or a reset ends it).
device_key_rotations = Table(
    "device_key_rotations",
    metadata,
    Column("device_id", String(MAX_ID_LENGTH), _device_fk(), primary_key=True),
    Column("mid", String(MAX_ID_LENGTH), primary_key=True),
    Column("old_signing_kid", String(MAX_KID_LENGTH), nullable=False),
    Column("old_signing_jwk", Text, nullable=False),
    Column("new_signing_kid", String(MAX_KID_LENGTH), nullable=False),
    Column("new_encryption_kid", String(MAX_KID_LENGTH), nullable=False),
    Column("certificate_pem", Text, nullable=False),
    Column("rotated_at", Double, nullable=False),
    Column("retires_at", Double, nullable=False),
    Index(None, "old_signing_kid"),
)

# The server's message-key generations, shared by every replica. The private JWKs
# are AES-GCM wrapped under a key derived from the data dir's message-keys.json, so
# the database alone does not hold them in the clear. The highest generation signs;
# a generation with ``retires_at`` in the past opens nothing any more.
server_keys = Table(
    "server_keys",
    metadata,
    Column("generation", Integer, primary_key=True, autoincrement=False),
    Column("signing_kid", String(MAX_KID_LENGTH), nullable=False),
    Column("encryption_kid", String(MAX_KID_LENGTH), nullable=False),
    Column("wrapped", Text, nullable=False),
    Column("created_at", Double, nullable=False),
    Column("retires_at", Double, nullable=True),
)

# --- Firmware update (issue 9): revision 0006_firmware ----------------------

#: Longest release id (hatchway.firmware.wire.RELEASE_ID) and group name.
MAX_RELEASE_ID_LENGTH = 128

# The firmware trust store (hatchway.firmware.keys.TrustedKey), one row per key;
# ``entry`` is TrustedKey.to_json() and ``status`` a copy of its status for queries.
firmware_keys = Table(
    "firmware_keys",
    metadata,
    Column("kid", String(MAX_KID_LENGTH), primary_key=True),
    Column("status", String(16), nullable=False),
    Column("entry", Text, nullable=False),
    Column("updated_at", Double, nullable=False),
)

# One published image. The content key encrypts its chunks; it is wrapped to each
# device at delivery. Its encrypted chunks are rows of ``firmware_chunks``.
firmware_releases = Table(
    "firmware_releases",
    metadata,
    Column("release_id", String(MAX_RELEASE_ID_LENGTH), primary_key=True),
    Column("device_class", String(MAX_ID_LENGTH), nullable=False),
    Column("version", String(64), nullable=False),
    Column("seq", BigInteger, nullable=False),
    Column("kid", String(MAX_KID_LENGTH), nullable=False),
    Column("manifest", Text, nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("chunk_count", Integer, nullable=False),
    Column("content_key", LargeBinary, nullable=False),
    Column("created_at", Double, nullable=False),
    UniqueConstraint("device_class", "version"),
)

# The sealed chunks of a release (``ChunkCipher.seal``: iv || ct || tag), written with
# the release row in one transaction, so every replica can serve them: each fills its
# own file cache in the data dir from here on first request (server/fw_chunks.py).
firmware_chunks = Table(
    "firmware_chunks",
    metadata,
    Column(
        "release_id",
        String(MAX_RELEASE_ID_LENGTH),
        ForeignKey("firmware_releases.release_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("idx", Integer, primary_key=True, autoincrement=False),
    Column("sealed", LargeBinary, nullable=False),
)

device_groups = Table(
    "device_groups",
    metadata,
    Column("group_name", String(MAX_RELEASE_ID_LENGTH), primary_key=True),
    Column("device_id", String(MAX_ID_LENGTH), _device_fk(), primary_key=True),
    Column("added_at", Double, nullable=False),
)

# ``waves``: cumulative device counts, JSON list (hatchway.firmware.rollout.plan_waves).
firmware_rollouts = Table(
    "firmware_rollouts",
    metadata,
    Column("rollout_id", String(32), primary_key=True),
    Column(
        "release_id",
        String(MAX_RELEASE_ID_LENGTH),
        ForeignKey("firmware_releases.release_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("group_name", String(MAX_RELEASE_ID_LENGTH), nullable=False),
    Column("waves", Text, nullable=False),
    Column("wave", Integer, nullable=False),
    Column("max_failures", Integer, nullable=False),
    Column("confirm_within", Integer, nullable=True),
    Column("state", String(16), nullable=False),
    Column("created_at", Double, nullable=False),
    Column("updated_at", Double, nullable=False),
    Index(None, "release_id", "created_at"),
)

# A device's state for one release (hatchway.firmware.rollout.DEVICE_FW_TRANSITIONS);
# ``command_id`` is the command row that carries its offer through the delivery machinery.
firmware_devices = Table(
    "firmware_devices",
    metadata,
    Column(
        "release_id",
        String(MAX_RELEASE_ID_LENGTH),
        ForeignKey("firmware_releases.release_id", ondelete="CASCADE"),
        primary_key=True,
    ),
    Column("device_id", String(MAX_ID_LENGTH), _device_fk(), primary_key=True),
    Column(
        "rollout_id",
        String(32),
        ForeignKey("firmware_rollouts.rollout_id", ondelete="CASCADE"),
        nullable=False,
    ),
    Column("wave", Integer, nullable=False),
    Column("state", String(16), nullable=False),
    Column("progress", Integer, nullable=True),
    Column("reason", String(64), nullable=True),
    Column("command_id", String(32), nullable=True),
    Column("updated_at", Double, nullable=False),
    Index(None, "rollout_id", "wave", "state"),
    Index(None, "command_id"),
)

# --- Operator-side revocation (issue 9, fig. 7): revision 0008_revocation ---

#: A certificate serial as lower-case hex (RFC 5280 allows up to 20 octets).
MAX_SERIAL_LENGTH = 40

# One row per revoked device (devices.status = 'revoked'), deleted by `provision
# --force`. The de-registration notice is sealed once and kept, so a retransmission
# of the message it answered gets the very same bytes.
device_revocations = Table(
    "device_revocations",
    metadata,
    Column("device_id", String(MAX_ID_LENGTH), _device_fk(), primary_key=True),
    Column("revoked_at", Double, nullable=False),
    Column("reason", Text, nullable=False),
    Column("code", String(32), nullable=False),
    # After this, a device that was never told gets no notice either, only refusals.
    Column("notice_until", Double, nullable=False),
    Column("notice_sent_at", Double, nullable=True),
    Column("notice_mid", String(MAX_ID_LENGTH), nullable=True),
    Column("notice_exp", Double, nullable=True),
    Column("notice_reply", Text, nullable=True),
    # Set by the replica that pushed the notice on the MQTT downlink (one push).
    Column("notice_pushed_at", Double, nullable=True),
)

# Every device certificate ever revoked: the CRL's entries. Not tied to the device
# row, so `provision --force` (a new enrolment, a new certificate) keeps the old one
# revoked.
revoked_certificates = Table(
    "revoked_certificates",
    metadata,
    Column("serial", String(MAX_SERIAL_LENGTH), primary_key=True),
    Column("device_id", String(MAX_ID_LENGTH), nullable=False),
    Column("revoked_at", Double, nullable=False),
    Column("code", String(32), nullable=False),
)

# Each CRL the dev CA signed, by CRL number (RFC 5280 §5.2.3: monotonically
# increasing). Kept in the store so every replica serves the same, newest one.
crls = Table(
    "crls",
    metadata,
    Column("number", BigInteger, primary_key=True, autoincrement=False),
    Column("this_update", Double, nullable=False),
    Column("next_update", Double, nullable=False),
    Column("der", LargeBinary, nullable=False),
)
