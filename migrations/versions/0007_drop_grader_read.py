"""Drop ``grader_read``: reads are per visit (``case_read``, revision 0006) and nothing has
written per-image reads since. The upgrade refuses while the table still holds rows, so that
no read is dropped unseen; the downgrade brings the empty table back as it was.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    rows = op.get_bind().execute(sa.text("SELECT count(*) FROM grader_read")).scalar_one()
    if rows:
        raise RuntimeError(
            f"grader_read holds {rows} per-image read(s) from before reads were per visit: "
            "copy them out (e.g. COPY grader_read TO a file) and delete them, then upgrade again"
        )
    with op.batch_alter_table("grader_read", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grader_read_instance_pk"))
        batch_op.drop_index(batch_op.f("ix_grader_read_case_pk"))
    op.drop_table("grader_read")


def downgrade() -> None:
    op.create_table(
        "grader_read",
        sa.Column("id", ID, nullable=False),
        sa.Column("case_pk", ID, nullable=False),
        sa.Column("instance_pk", ID, nullable=False),
        sa.Column("grader_pk", ID, nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("referral", sa.Boolean(), nullable=False),
        sa.Column("quality", sa.String(length=32), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_pk"], ["screening_case.id"], name=op.f("fk_grader_read_case_pk_screening_case")
        ),
        sa.ForeignKeyConstraint(
            ["grader_pk"], ["person.id"], name=op.f("fk_grader_read_grader_pk_person")
        ),
        sa.ForeignKeyConstraint(
            ["instance_pk"], ["instance.id"], name=op.f("fk_grader_read_instance_pk_instance")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_grader_read")),
        sa.UniqueConstraint(
            "instance_pk", "grader_pk", name=op.f("uq_grader_read_instance_pk_grader_pk")
        ),
    )
    with op.batch_alter_table("grader_read", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_grader_read_case_pk"), ["case_pk"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_grader_read_instance_pk"), ["instance_pk"], unique=False
        )
