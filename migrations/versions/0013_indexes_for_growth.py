"""Indexes the archive needs as it grows (bench/growth.py, docs/scaling.md): the study export
selects a date range of a site's visits, the dashboard the visits of the last weeks and the
deliveries whose commitment is awaited, without reading the whole archive.

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

UNCOMMITTED = "commitment_requested_at IS NOT NULL AND committed_at IS NULL"

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_study_study_date", "study", ["study_date"], unique=False)
    op.create_index(
        "ix_screening_case_site_opened_at", "screening_case", ["site", "opened_at"], unique=False
    )
    op.create_index(
        "ix_report_delivery_uncommitted",
        "report_delivery",
        ["commitment_requested_at"],
        unique=False,
        postgresql_where=sa.text(UNCOMMITTED),
        sqlite_where=sa.text(UNCOMMITTED),
    )


def downgrade() -> None:
    op.drop_index("ix_report_delivery_uncommitted", table_name="report_delivery")
    op.drop_index("ix_screening_case_site_opened_at", table_name="screening_case")
    op.drop_index("ix_study_study_date", table_name="study")
