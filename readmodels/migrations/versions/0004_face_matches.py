"""face matches: which visit was an enrolled member's (for a subject access export)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-07 22:17:48.287214
"""

from __future__ import annotations

import sqlalchemy as sa
import sqlmodel
from alembic import op

import readmodels.tables

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "face_match",
        sa.Column("id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("store", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("subject", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("member", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("watchlist", sa.Boolean(), nullable=False),
        sa.Column("confidence", sa.Float(), nullable=False),
        sa.Column("source", sqlmodel.sql.sqltypes.AutoString(length=128), nullable=False),
        sa.Column("at", readmodels.tables.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("face_match", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_face_match_member"), ["member"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("face_match", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_face_match_member"))

    op.drop_table("face_match")
