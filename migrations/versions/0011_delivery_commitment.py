"""Report deliveries ask the PACS before sending again and request Storage Commitment; outbox
rows taken by a worker for inline work carry the time they were taken (a lease).

``report_delivery``: ``in_doubt`` (a C-STORE whose answer was never recorded), ``sending_at``
(an attempt in progress), ``commitment_uid``, ``commitment_requested_at``, ``committed_at``.
``outbox``: ``taken_at``, ``taken_by``.

Revision ID: 0011
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("report_delivery", schema=None) as batch:
        batch.add_column(
            sa.Column("in_doubt", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("sending_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("commitment_uid", sa.String(64), nullable=True))
        batch.add_column(
            sa.Column("commitment_requested_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch.add_column(sa.Column("committed_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index(batch.f("ix_report_delivery_commitment_uid"), ["commitment_uid"])
    with op.batch_alter_table("outbox", schema=None) as batch:
        batch.add_column(sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("taken_by", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch:
        batch.drop_column("taken_by")
        batch.drop_column("taken_at")
    with op.batch_alter_table("report_delivery", schema=None) as batch:
        batch.drop_index(batch.f("ix_report_delivery_commitment_uid"))
        batch.drop_column("committed_at")
        batch.drop_column("commitment_requested_at")
        batch.drop_column("commitment_uid")
        batch.drop_column("sending_at")
        batch.drop_column("in_doubt")
