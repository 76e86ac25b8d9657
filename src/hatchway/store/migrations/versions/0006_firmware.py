"""Firmware update: trusted firmware keys, releases, device groups, rollouts, device state.

Revision ID: 0006_firmware
Revises: 0005_command_delivery
Create Date: 2026-12-01

Issue 9 (US 11,546,310 B2 figure 6). The firmware trust store moves from
``firmware-trust.json`` in the data dir into ``firmware_keys`` (the CLI imports an
existing file once). A published image is a ``firmware_releases`` row and its sealed
chunks are ``firmware_chunks`` rows (so every replica can serve them; each keeps a
file cache in its data dir); a rollout offers it to a device group in waves, and
``firmware_devices`` holds each device's state along the transition table in
``hatchway.firmware.rollout``.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006_firmware"
down_revision = "0005_command_delivery"
branch_labels = None
depends_on = None

_ID = 255
_KID = 512
_RELEASE = 128


def _device_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["device_id"],
        ["devices.device_id"],
        name=f"fk_{table}_device_id_devices",
        ondelete="CASCADE",
    )


def _release_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(
        ["release_id"],
        ["firmware_releases.release_id"],
        name=f"fk_{table}_release_id_firmware_releases",
        ondelete="CASCADE",
    )


def upgrade() -> None:
    big = sa.BigInteger()
    op.create_table(
        "firmware_keys",
        sa.Column("kid", sa.String(_KID), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("kid", name="pk_firmware_keys"),
    )
    op.create_table(
        "firmware_releases",
        sa.Column("release_id", sa.String(_RELEASE), nullable=False),
        sa.Column("device_class", sa.String(_ID), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("seq", big, nullable=False),
        sa.Column("kid", sa.String(_KID), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", big, nullable=False),
        sa.Column("chunk_count", sa.Integer(), nullable=False),
        sa.Column("content_key", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("release_id", name="pk_firmware_releases"),
        sa.UniqueConstraint(
            "device_class", "version", name="uq_firmware_releases_device_class_version"
        ),
    )
    op.create_table(
        "firmware_chunks",
        sa.Column("release_id", sa.String(_RELEASE), nullable=False),
        sa.Column("idx", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("release_id", "idx", name="pk_firmware_chunks"),
        _release_fk("firmware_chunks"),
    )
    op.create_table(
        "device_groups",
        sa.Column("group_name", sa.String(_RELEASE), nullable=False),
        sa.Column("device_id", sa.String(_ID), nullable=False),
        sa.Column("added_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("group_name", "device_id", name="pk_device_groups"),
        _device_fk("device_groups"),
    )
    op.create_table(
        "firmware_rollouts",
        sa.Column("rollout_id", sa.String(32), nullable=False),
        sa.Column("release_id", sa.String(_RELEASE), nullable=False),
        sa.Column("group_name", sa.String(_RELEASE), nullable=False),
        sa.Column("waves", sa.Text(), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("max_failures", sa.Integer(), nullable=False),
        sa.Column("confirm_within", sa.Integer(), nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("rollout_id", name="pk_firmware_rollouts"),
        _release_fk("firmware_rollouts"),
    )
    op.create_index(
        "ix_firmware_rollouts_release_id_created_at",
        "firmware_rollouts",
        ["release_id", "created_at"],
    )
    op.create_table(
        "firmware_devices",
        sa.Column("release_id", sa.String(_RELEASE), nullable=False),
        sa.Column("device_id", sa.String(_ID), nullable=False),
        sa.Column("rollout_id", sa.String(32), nullable=False),
        sa.Column("wave", sa.Integer(), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=True),
        sa.Column("reason", sa.String(64), nullable=True),
        sa.Column("command_id", sa.String(32), nullable=True),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("release_id", "device_id", name="pk_firmware_devices"),
        _release_fk("firmware_devices"),
        _device_fk("firmware_devices"),
        sa.ForeignKeyConstraint(
            ["rollout_id"],
            ["firmware_rollouts.rollout_id"],
            name="fk_firmware_devices_rollout_id_firmware_rollouts",
            ondelete="CASCADE",
        ),
    )
    op.create_index(
        "ix_firmware_devices_rollout_id_wave_state",
        "firmware_devices",
        ["rollout_id", "wave", "state"],
    )
    op.create_index("ix_firmware_devices_command_id", "firmware_devices", ["command_id"])


def downgrade() -> None:
    op.drop_table("firmware_devices")
    op.drop_table("firmware_rollouts")
    op.drop_table("device_groups")
    op.drop_table("firmware_chunks")
    op.drop_table("firmware_releases")
    op.drop_table("firmware_keys")
