"""Batch claims on instances (a worker's lease on an image it is reading) and the model
registry's activation history per route and site.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_activation",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("route", sa.String(length=16), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column(
            "model_version_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("activated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("activated_by", sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(
            ["model_version_pk"],
            ["model_version.id"],
            name=op.f("fk_model_activation_model_version_pk_model_version"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_activation")),
    )
    with op.batch_alter_table("model_activation", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_model_activation_activated_at"), ["activated_at"], unique=False
        )

    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.add_column(sa.Column("claimed_by", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("claimed_at", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_column("claimed_at")
        batch_op.drop_column("claimed_by")

    with op.batch_alter_table("model_activation", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_model_activation_activated_at"))

    op.drop_table("model_activation")
