"""Command deliveries: one sealed COMMAND message per poll mid.

Revision ID: 0005_command_delivery
Revises: 0002
Create Date: 2026-12-01

US 11,546,310 B2 claim 5 (commands over the message-level channel). A poll held
back on the path and released after its retransmission had been answered got the
same command a second time under a new jti (issue 7, part 2 item 2). Each delivery
is now a row keyed by the poll's mid and keeps the sealed reply, so a repeated poll
gets the same bytes back; a command has at most one unexpired delivery.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_command_delivery"
down_revision = "0004_token_lifetimes"
branch_labels = None
depends_on = None

_ID = 255


def upgrade() -> None:
    op.create_table(
        "command_deliveries",
        sa.Column("command_id", sa.String(32), nullable=False),
        sa.Column("jti", sa.String(_ID), nullable=False),
        sa.Column("device_id", sa.String(_ID), nullable=False),
        sa.Column("poll_mid", sa.String(_ID), nullable=True),
        sa.Column("delivered_at", sa.Double(), nullable=False),
        sa.Column("exp", sa.Double(), nullable=False),
        sa.Column("reply", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("command_id", "jti", name="pk_command_deliveries"),
        sa.UniqueConstraint(
            "device_id", "poll_mid", name="uq_command_deliveries_device_id_poll_mid"
        ),
        sa.ForeignKeyConstraint(
            ["command_id"],
            ["commands.command_id"],
            name="fk_command_deliveries_command_id_commands",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name="fk_command_deliveries_device_id_devices",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("command_deliveries")
