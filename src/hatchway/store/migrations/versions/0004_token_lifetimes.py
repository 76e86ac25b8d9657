"""Refresh token lifetime cap and reuse interval; revoked access tokens.

Revision ID: 0004_token_lifetimes
Revises: 0003_clients
Create Date: 2026-12-01

* ``refresh_families.expires_at``: the absolute end of a sign-in (issue 8 §3;
  before this revision a family slid forever). Existing families are backfilled
  with ``created_at`` + 90 days, the default of
  ``HATCHWAY_LOGIN_REFRESH_MAX_LIFETIME``, so no sign-in stays uncapped.
* ``refresh_tokens.successor_hash`` / ``successor_sealed``: what a rotation
  produced, so a retry within the reuse interval gets the same successor.
* ``revoked_access_tokens``: RFC 7009 revocation of access tokens by ``jti``.

Only nullable columns are added, and they are dropped with plain ``ALTER TABLE``
(SQLite ≥ 3.35 drops columns natively): a batch rebuild of ``refresh_families`` would
drop the parent table, and with ``foreign_keys=ON`` that cascades to every
refresh token.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_token_lifetimes"
# Written against "0002"; chained after the client registry once merged with it.
down_revision = "0003_clients"
branch_labels = None
depends_on = None

_ID = 255
_DEFAULT_MAX_LIFETIME = 90 * 24 * 3600


def upgrade() -> None:
    op.add_column("refresh_families", sa.Column("expires_at", sa.Double(), nullable=True))
    families = sa.table(
        "refresh_families", sa.column("created_at", sa.Double), sa.column("expires_at", sa.Double)
    )
    op.execute(
        families.update()
        .where(families.c.expires_at.is_(None))
        .values(expires_at=families.c.created_at + _DEFAULT_MAX_LIFETIME)
    )
    op.add_column("refresh_tokens", sa.Column("successor_hash", sa.LargeBinary(), nullable=True))
    op.add_column("refresh_tokens", sa.Column("successor_sealed", sa.LargeBinary(), nullable=True))
    op.create_table(
        "revoked_access_tokens",
        sa.Column("jti", sa.String(_ID), nullable=False),
        sa.Column("exp", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("jti", name="pk_revoked_access_tokens"),
    )
    op.create_index("ix_revoked_access_tokens_exp", "revoked_access_tokens", ["exp"])


def downgrade() -> None:
    op.drop_index("ix_revoked_access_tokens_exp", table_name="revoked_access_tokens")
    op.drop_table("revoked_access_tokens")
    op.execute("ALTER TABLE refresh_tokens DROP COLUMN successor_sealed")
    op.execute("ALTER TABLE refresh_tokens DROP COLUMN successor_hash")
    op.execute("ALTER TABLE refresh_families DROP COLUMN expires_at")
