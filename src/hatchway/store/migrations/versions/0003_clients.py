"""Registered clients; confirm-code choices; the operator's unlock time.

Revision ID: 0003_clients
Revises: 0002
Create Date: 2026-12-01

Issue 8:

* §1 registered clients (RFC 6749 §2, RFC 7591 §2 field names): the
  ``clients`` table. Client secrets are stored as their SHA-256 only.
* §2 confirm-code anti-phishing: ``login_sessions.code_choices`` (the real
  user code among two decoys) and ``confirm_failures``; an index on
  ``(user_code, created_at)`` so a Deny that arrives after the device
  collected its tokens finds the ended session and can say so.
* defect 5.1: ``users.unlocked_at``, the operator's unlock time in its own
  column; until now ``updated_at`` served as both, so a successful sign-in
  looked like an unlock.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003_clients"
down_revision = "0002"
branch_labels = None
depends_on = None

_ID = 255
_CLIENT_NAME = 80


def upgrade() -> None:
    op.create_table(
        "clients",
        sa.Column("client_id", sa.String(_ID), nullable=False),
        sa.Column("name", sa.String(_CLIENT_NAME), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False, server_default=sa.true()),
        sa.Column("scopes", sa.Text(), nullable=False),
        sa.Column("anti_phishing", sa.String(32), nullable=False),
        sa.Column("access_ttl", sa.Integer(), nullable=True),
        sa.Column("refresh_ttl", sa.Integer(), nullable=True),
        sa.Column("client_type", sa.String(16), nullable=False),
        sa.Column("token_endpoint_auth_method", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.String(128), nullable=True),
        sa.Column("jwks", sa.Text(), nullable=True),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        sa.PrimaryKeyConstraint("client_id", name="pk_clients"),
    )
    # Plain ADD/DROP COLUMN on both engines (SQLite >= 3.35 drops columns in
    # place), so the partial unique index on login_sessions is never rebuilt.
    op.add_column("users", sa.Column("unlocked_at", sa.Double(), nullable=True))
    op.add_column("login_sessions", sa.Column("code_choices", sa.Text(), nullable=True))
    op.add_column(
        "login_sessions",
        sa.Column("confirm_failures", sa.Integer(), nullable=False, server_default="0"),
    )
    op.create_index(
        "ix_login_sessions_user_code_created_at", "login_sessions", ["user_code", "created_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_login_sessions_user_code_created_at", table_name="login_sessions")
    op.drop_column("login_sessions", "confirm_failures")
    op.drop_column("login_sessions", "code_choices")
    op.drop_column("users", "unlocked_at")
    op.drop_table("clients")
