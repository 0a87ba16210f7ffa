"""Arbitration decisions record what they were made on and who signed them: each vote names
the version of the grader's read it was cast on (one vote per arbiter and read version, so an
amendment reopens voting), the decision keeps its basis (read id and version, the model's
prediction ids) and every signer, and an admin may assign a case nobody of its site can decide.
Votes from before carry their arbitration's read.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    with op.batch_alter_table("arbitration_vote") as batch:
        batch.add_column(sa.Column("read_pk", ID, nullable=True))
        batch.create_foreign_key(
            batch.f("fk_arbitration_vote_read_pk_case_read"), "case_read", ["read_pk"], ["id"]
        )
        batch.drop_constraint("uq_arbitration_vote_arbitration_pk_arbiter_pk", type_="unique")
        batch.create_unique_constraint(
            batch.f("uq_arbitration_vote_arbitration_pk_arbiter_pk_read_pk"),
            ["arbitration_pk", "arbiter_pk", "read_pk"],
        )
    op.execute(
        "UPDATE arbitration_vote SET read_pk = (SELECT read_pk FROM arbitration_case "
        "WHERE arbitration_case.id = arbitration_vote.arbitration_pk)"
    )
    with op.batch_alter_table("arbitration_decision") as batch:
        batch.add_column(sa.Column("basis", sa.JSON(), nullable=True))
        batch.add_column(sa.Column("signers", sa.JSON(), nullable=True))
    with op.batch_alter_table("arbitration_case") as batch:
        batch.add_column(sa.Column("assigned_pk", ID, nullable=True))
        batch.create_foreign_key(
            batch.f("fk_arbitration_case_assigned_pk_person"), "person", ["assigned_pk"], ["id"]
        )


def downgrade() -> None:
    with op.batch_alter_table("arbitration_case") as batch:
        batch.drop_constraint("fk_arbitration_case_assigned_pk_person", type_="foreignkey")
        batch.drop_column("assigned_pk")
    with op.batch_alter_table("arbitration_decision") as batch:
        batch.drop_column("signers")
        batch.drop_column("basis")
    # Only the newest vote per arbiter survives the older, narrower constraint.
    op.execute(
        "DELETE FROM arbitration_vote WHERE id NOT IN (SELECT max(id) FROM arbitration_vote "
        "GROUP BY arbitration_pk, arbiter_pk)"
    )
    with op.batch_alter_table("arbitration_vote") as batch:
        batch.drop_constraint(
            "uq_arbitration_vote_arbitration_pk_arbiter_pk_read_pk", type_="unique"
        )
        batch.create_unique_constraint(
            batch.f("uq_arbitration_vote_arbitration_pk_arbiter_pk"),
            ["arbitration_pk", "arbiter_pk"],
        )
        batch.drop_constraint("fk_arbitration_vote_read_pk_case_read", type_="foreignkey")
        batch.drop_column("read_pk")
