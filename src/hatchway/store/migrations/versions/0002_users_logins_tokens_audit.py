"""Users, login sessions, refresh tokens, audit log and settings.

Revision ID: 0002
Revises: 0001
Create Date: 2025-02-01

The storage for cross-device login (US 9,635,022 B2 claims 1–3 as RFC 8628):
SCRAM verifiers and per-account attempt state, device authorization sessions
keyed by the device code's SHA-256, rotating refresh token families (RFC 6819
§5.2.2.3), the audit log and the runtime switches shared by all replicas.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_ID = 255
_USERNAME = 64
_SURROGATE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
_ACTIVE = "state IN ('pending', 'approved')"


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("username_key", sa.String(_ID), nullable=False),
        sa.Column("username", sa.String(_USERNAME), nullable=False),
        sa.Column("verifier", sa.Text(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.Column("failed_attempts", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("blocked_until", sa.Double(), nullable=False, server_default="0"),
        sa.Column("locked", sa.Boolean(), nullable=False, server_default=sa.false()),
        sa.Column("last_failure_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("username_key", name="pk_users"),
    )
    op.create_table(
        "login_sessions",
        sa.Column("device_code_hash", sa.LargeBinary(), nullable=False),
        sa.Column("user_code", sa.String(16), nullable=False),
        sa.Column("username", sa.String(_USERNAME), nullable=False),
        sa.Column("client_id", sa.String(_ID), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("device_name", sa.Text(), nullable=False),
        sa.Column("initiator_ip", sa.String(64), nullable=False),
        sa.Column("initiator_user_agent", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("last_poll_at", sa.Double(), nullable=True),
        sa.Column("match_number", sa.String(8), nullable=True),
        sa.Column("match_failures", sa.Integer(), nullable=False, server_default="0"),
        sa.Column("decided_at", sa.Double(), nullable=True),
        sa.Column("approver_ip", sa.String(64), nullable=True),
        sa.Column("approver_user_agent", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("device_code_hash", name="pk_login_sessions"),
    )
    op.create_index(
        "uq_login_sessions_user_code_active",
        "login_sessions",
        ["user_code"],
        unique=True,
        sqlite_where=sa.text(_ACTIVE),
        postgresql_where=sa.text(_ACTIVE),
    )
    op.create_index("ix_login_sessions_state_expires_at", "login_sessions", ["state", "expires_at"])
    op.create_table(
        "refresh_families",
        sa.Column("family_id", sa.String(_ID), nullable=False),
        sa.Column("username", sa.String(_USERNAME), nullable=False),
        sa.Column("username_key", sa.String(_ID), nullable=False),
        sa.Column("client_id", sa.String(_ID), nullable=False),
        sa.Column("device_name", sa.Text(), nullable=False),
        sa.Column("scope", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("last_used_at", sa.Double(), nullable=True),
        sa.Column("revoked_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("family_id", name="pk_refresh_families"),
    )
    op.create_index("ix_refresh_families_username_key", "refresh_families", ["username_key"])
    op.create_table(
        "refresh_tokens",
        sa.Column("token_hash", sa.LargeBinary(), nullable=False),
        sa.Column("family_id", sa.String(_ID), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        sa.Column("used_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("token_hash", name="pk_refresh_tokens"),
        sa.ForeignKeyConstraint(
            ["family_id"],
            ["refresh_families.family_id"],
            name="fk_refresh_tokens_family_id_refresh_families",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_refresh_tokens_family_id", "refresh_tokens", ["family_id"])
    op.create_table(
        "audit_log",
        sa.Column("id", _SURROGATE, autoincrement=True, nullable=False),
        sa.Column("at", sa.Double(), nullable=False),
        sa.Column("event", sa.String(32), nullable=False),
        sa.Column("username", sa.String(_USERNAME), nullable=True),
        sa.Column("ip", sa.String(64), nullable=True),
        sa.Column("user_agent", sa.Text(), nullable=True),
        sa.Column("session_ref", sa.String(_ID), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_audit_log"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_audit_log_event_id", "audit_log", ["event", "id"])
    op.create_table(
        "settings",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_settings"),
    )


def downgrade() -> None:
    op.drop_table("settings")
    op.drop_index("ix_audit_log_event_id", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_refresh_tokens_family_id", table_name="refresh_tokens")
    op.drop_table("refresh_tokens")
    op.drop_index("ix_refresh_families_username_key", table_name="refresh_families")
    op.drop_table("refresh_families")
    op.drop_index("ix_login_sessions_state_expires_at", table_name="login_sessions")
    op.drop_index("uq_login_sessions_user_code_active", table_name="login_sessions")
    op.drop_table("login_sessions")
    op.drop_table("users")
