"""Image-quality verdicts up to 32 characters ("ungradable:no_trained_model" did not fit 16).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TABLES = ("prediction", "grader_read")


def upgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "quality",
                existing_type=sa.VARCHAR(length=16),
                type_=sa.String(length=32),
                existing_nullable=False,
            )


def downgrade() -> None:
    for table in TABLES:
        # Longer verdicts are cut to what revision 0003 can hold (they all start "ungradable").
        op.execute(f"UPDATE {table} SET quality = substr(quality, 1, 16)")
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.alter_column(
                "quality",
                existing_type=sa.String(length=32),
                type_=sa.VARCHAR(length=16),
                existing_nullable=False,
            )
