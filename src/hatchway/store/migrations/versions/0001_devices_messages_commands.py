"""Devices, replay windows, seen jtis, single-use tokens, messages and commands.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

The first schema for message-level security (US 11,546,310 B2): one-time
enrolment secrets, per-device replay windows, durable message and command queues.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = 255
_SURROGATE = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _device_id() -> sa.Column[str]:
    return sa.Column("device_id", sa.String(_ID), nullable=False)


def _device_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["device_id"],
        ["devices.device_id"],
        name=f"fk_{table}_device_id_devices",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    op.create_table(
        "devices",
        _device_id(),
        sa.Column("secret_hash", sa.Text(), nullable=False),
        sa.Column("secret_used_at", sa.Double(), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("signing_jwk", sa.Text(), nullable=True),
        sa.Column("signing_kid", sa.String(512), nullable=True),
        sa.Column("encryption_jwk", sa.Text(), nullable=True),
        sa.Column("suite", sa.Text(), nullable=True),
        sa.Column("certificate_pem", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("enrolled_at", sa.Double(), nullable=True),
        sa.Column("deregistered_at", sa.Double(), nullable=True),
        sa.Column("outbound_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.PrimaryKeyConstraint("device_id", name="pk_devices"),
        sa.UniqueConstraint("signing_kid", name="uq_devices_signing_kid"),
    )
    op.create_table(
        "replay_windows",
        _device_id(),
        sa.Column("highest_seq", sa.BigInteger(), nullable=False),
        sa.Column("bitmap", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", name="pk_replay_windows"),
        _device_fk("replay_windows"),
    )
    op.create_table(
        "seen_jti",
        _device_id(),
        sa.Column("jti", sa.String(_ID), nullable=False),
        sa.Column("exp", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "jti", name="pk_seen_jti"),
        _device_fk("seen_jti"),
    )
    op.create_index("ix_seen_jti_exp", "seen_jti", ["exp"])
    op.create_table(
        "used_tokens",
        sa.Column("jti", sa.String(_ID), nullable=False),
        sa.Column("exp", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("jti", name="pk_used_tokens"),
    )
    op.create_index("ix_used_tokens_exp", "used_tokens", ["exp"])
    op.create_table(
        "messages",
        sa.Column("id", _SURROGATE, autoincrement=True, nullable=False),
        _device_id(),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("jti", sa.String(_ID), nullable=False),
        sa.Column("mid", sa.String(_ID), nullable=True),
        sa.Column("typ", sa.String(_ID), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("received_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_messages"),
        sa.UniqueConstraint("device_id", "mid", name="uq_messages_device_id_mid"),
        _device_fk("messages"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_messages_device_id_id", "messages", ["device_id", "id"])
    op.create_table(
        "commands",
        sa.Column("id", _SURROGATE, autoincrement=True, nullable=False),
        sa.Column("command_id", sa.String(32), nullable=False),
        _device_id(),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("delivered_at", sa.Double(), nullable=True),
        sa.Column("delivery_jti", sa.String(_ID), nullable=True),
        sa.Column("result", sa.Text(), nullable=True),
        sa.Column("completed_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_commands"),
        sa.UniqueConstraint("command_id", name="uq_commands_command_id"),
        _device_fk("commands"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_commands_device_id_status_id", "commands", ["device_id", "status", "id"])


def downgrade() -> None:
    op.drop_index("ix_commands_device_id_status_id", table_name="commands")
    op.drop_table("commands")
    op.drop_index("ix_messages_device_id_id", table_name="messages")
    op.drop_table("messages")
    op.drop_index("ix_used_tokens_exp", table_name="used_tokens")
    op.drop_table("used_tokens")
    op.drop_index("ix_seen_jti_exp", table_name="seen_jti")
    op.drop_table("seen_jti")
    op.drop_table("replay_windows")
    op.drop_table("devices")
