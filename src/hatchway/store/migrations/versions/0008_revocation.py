"""Operator-side revocation: revoked devices, revoked certificates, signed CRLs.

Revision ID: 0008_revocation
Revises: 0007_key_rotation
Create Date: 2026-12-01

Issue 9, "Revocation (fig. 7 from the operator's side)": ``hatchway device revoke``
marks a device revoked (``devices.status`` = ``'revoked'``, a value, not a column)
with a row in ``device_revocations`` that also keeps the sealed de-registration
notice; its certificate's serial goes to ``revoked_certificates``; each CRL the dev
CA signs is kept in ``crls`` by its CRL number. Only new tables: nothing existing
changes shape, so the downgrade drops them (revoked devices become de-registered).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008_revocation"
down_revision = "0007_key_rotation"
branch_labels = None
depends_on = None

_ID = 255


def upgrade() -> None:
    op.create_table(
        "device_revocations",
        sa.Column("device_id", sa.String(_ID), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.Column("notice_until", sa.Double(), nullable=False),
        sa.Column("notice_sent_at", sa.Double(), nullable=True),
        sa.Column("notice_mid", sa.String(_ID), nullable=True),
        sa.Column("notice_exp", sa.Double(), nullable=True),
        sa.Column("notice_reply", sa.Text(), nullable=True),
        sa.Column("notice_pushed_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("device_id", name="pk_device_revocations"),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name="fk_device_revocations_device_id_devices",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "revoked_certificates",
        sa.Column("serial", sa.String(40), nullable=False),
        sa.Column("device_id", sa.String(_ID), nullable=False),
        sa.Column("revoked_at", sa.Double(), nullable=False),
        sa.Column("code", sa.String(32), nullable=False),
        sa.PrimaryKeyConstraint("serial", name="pk_revoked_certificates"),
    )
    op.create_table(
        "crls",
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("this_update", sa.Double(), nullable=False),
        sa.Column("next_update", sa.Double(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("number", name="pk_crls"),
    )


def downgrade() -> None:
    # An older server knows no 'revoked' status; de-registered refuses the same way.
    op.execute("UPDATE devices SET status = 'deregistered' WHERE status = 'revoked'")
    op.drop_table("crls")
    op.drop_table("revoked_certificates")
    op.drop_table("device_revocations")
