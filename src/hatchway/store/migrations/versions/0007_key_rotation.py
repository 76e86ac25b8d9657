"""Key rotation: device-key rotations and the server's message-key generations.

Revision ID: 0007_key_rotation
Revises: 0006_firmware
Create Date: 2026-12-01

Issue 9 "Key rotation" (docs/key-rotation.md). ``device_key_rotations`` keeps each
completed device-key rotation under its message id, so a retransmission gets the same
certificate and the old key keeps resolving during the overlap; ``server_keys`` holds
the server's message-key generations (private halves wrapped), shared by replicas.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_key_rotation"
down_revision = "0006_firmware"
branch_labels = None
depends_on = None

_ID = 255
_KID = 512


def upgrade() -> None:
    op.create_table(
        "device_key_rotations",
        sa.Column("device_id", sa.String(_ID), nullable=False),
        sa.Column("mid", sa.String(_ID), nullable=False),
        sa.Column("old_signing_kid", sa.String(_KID), nullable=False),
        sa.Column("old_signing_jwk", sa.Text(), nullable=False),
        sa.Column("new_signing_kid", sa.String(_KID), nullable=False),
        sa.Column("new_encryption_kid", sa.String(_KID), nullable=False),
        sa.Column("certificate_pem", sa.Text(), nullable=False),
        sa.Column("rotated_at", sa.Double(), nullable=False),
        sa.Column("retires_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("device_id", "mid", name="pk_device_key_rotations"),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.device_id"],
            name="fk_device_key_rotations_device_id_devices",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_device_key_rotations_old_signing_kid", "device_key_rotations", ["old_signing_kid"]
    )
    op.create_table(
        "server_keys",
        sa.Column("generation", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("signing_kid", sa.String(_KID), nullable=False),
        sa.Column("encryption_kid", sa.String(_KID), nullable=False),
        sa.Column("wrapped", sa.Text(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("retires_at", sa.Double(), nullable=True),
        sa.PrimaryKeyConstraint("generation", name="pk_server_keys"),
    )


def downgrade() -> None:
    op.drop_table("server_keys")
    op.drop_index("ix_device_key_rotations_old_signing_kid", "device_key_rotations")
    op.drop_table("device_key_rotations")
