"""Findings of classes a model does not assess: threshold and decision may be NULL.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

COLUMNS = (("threshold", sa.Float()), ("positive", sa.Boolean()))


def upgrade() -> None:
    with op.batch_alter_table("prediction_finding", schema=None) as batch_op:
        for name, kind in COLUMNS:
            batch_op.alter_column(name, existing_type=kind, nullable=True)


def downgrade() -> None:
    # Revision 0004 cannot say "not assessed", and "absent" would be false: those finding rows
    # go (each prediction's probabilities column still holds every class's probability).
    op.execute("DELETE FROM prediction_finding WHERE positive IS NULL OR threshold IS NULL")
    with op.batch_alter_table("prediction_finding", schema=None) as batch_op:
        for name, kind in COLUMNS:
            batch_op.alter_column(name, existing_type=kind, nullable=False)
