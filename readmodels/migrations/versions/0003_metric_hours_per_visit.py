"""metric hours say whether their values are single visits' (a viewer sees those only
summed over enough visits); the hours already held learn it from their points

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-07 21:20:10.399473
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("metric_hour", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("per_visit", sa.Boolean(), server_default=sa.false(), nullable=False)
        )
    op.execute(
        "UPDATE metric_hour SET per_visit = TRUE WHERE EXISTS (SELECT 1 FROM metric_point p"
        " WHERE p.store = metric_hour.store AND p.name = metric_hour.name"
        " AND p.zone = metric_hour.zone AND p.hour = metric_hour.hour"
        " AND p.window_start IS NULL)"
    )


def downgrade() -> None:
    with op.batch_alter_table("metric_hour", schema=None) as batch_op:
        batch_op.drop_column("per_visit")
