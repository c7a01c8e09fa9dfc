"""the API: its tokens (hashed) and its audit; a rebuild of the projections keeps both

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-07 15:09:07.585368
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import readmodels.tables

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_audit",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("at", readmodels.tables.UTCDateTime(), nullable=False),
        sa.Column("token_id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("who", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("store", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("target", sqlmodel.sql.sqltypes.AutoString(length=256), nullable=False),
        sa.Column("detail", sqlmodel.sql.sqltypes.AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("api_audit", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_audit_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_api_audit_token_id"), ["token_id"], unique=False)

    op.create_table(
        "api_token",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=32), nullable=False),
        sa.Column("secret_hash", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("role", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("stores", sa.JSON(), nullable=False),
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("created_at", readmodels.tables.UTCDateTime(), nullable=False),
        sa.Column("revoked_at", readmodels.tables.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )


def downgrade() -> None:
    op.drop_table("api_token")
    with op.batch_alter_table("api_audit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_audit_token_id"))
        batch_op.drop_index(batch_op.f("ix_api_audit_at"))

    op.drop_table("api_audit")
