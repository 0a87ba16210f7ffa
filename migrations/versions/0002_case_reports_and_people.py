"""One report per screening case (covering its predictions, optionally an arbitration
decision); people, grader reads, arbitration cases and decisions, audit events.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "person",
        sa.Column("id", ID, nullable=False),
        sa.Column("username", sa.String(length=64), nullable=False),
        sa.Column("display_name", sa.String(length=128), nullable=False),
        sa.Column(
            "role",
            sa.Enum(
                "grader",
                "arbiter",
                "statistician",
                "admin",
                name="role",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("password_hash", sa.String(length=256), nullable=True),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_person")),
        sa.UniqueConstraint("username", name=op.f("uq_person_username")),
    )
    op.create_table(
        "arbitration_case",
        sa.Column("id", ID, nullable=False),
        sa.Column("case_pk", ID, nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "state",
            sa.Enum("open", "decided", name="arbitrationstate", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_pk"],
            ["screening_case.id"],
            name=op.f("fk_arbitration_case_case_pk_screening_case"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_arbitration_case")),
        sa.UniqueConstraint("case_pk", name=op.f("uq_arbitration_case_case_pk")),
    )
    with op.batch_alter_table("arbitration_case", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_arbitration_case_state"), ["state"], unique=False)

    op.create_table(
        "audit_event",
        sa.Column("id", ID, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("person_pk", ID, nullable=True),
        sa.Column("action", sa.String(length=64), nullable=False),
        sa.Column("case_pk", ID, nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_pk"], ["screening_case.id"], name=op.f("fk_audit_event_case_pk_screening_case")
        ),
        sa.ForeignKeyConstraint(
            ["person_pk"], ["person.id"], name=op.f("fk_audit_event_person_pk_person")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_audit_event_at"), ["at"], unique=False)
        batch_op.create_index(batch_op.f("ix_audit_event_case_pk"), ["case_pk"], unique=False)

    op.create_table(
        "arbitration_decision",
        sa.Column("id", ID, nullable=False),
        sa.Column("arbitration_pk", ID, nullable=False),
        sa.Column("case_pk", ID, nullable=False),
        sa.Column("decided_by_pk", ID, nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("referral", sa.Boolean(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        sa.Column("decided_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["arbitration_pk"],
            ["arbitration_case.id"],
            name=op.f("fk_arbitration_decision_arbitration_pk_arbitration_case"),
        ),
        sa.ForeignKeyConstraint(
            ["case_pk"],
            ["screening_case.id"],
            name=op.f("fk_arbitration_decision_case_pk_screening_case"),
        ),
        sa.ForeignKeyConstraint(
            ["decided_by_pk"],
            ["person.id"],
            name=op.f("fk_arbitration_decision_decided_by_pk_person"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_arbitration_decision")),
    )
    with op.batch_alter_table("arbitration_decision", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_arbitration_decision_arbitration_pk"), ["arbitration_pk"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_arbitration_decision_case_pk"), ["case_pk"], unique=False
        )

    op.create_table(
        "grader_read",
        sa.Column("id", ID, nullable=False),
        sa.Column("case_pk", ID, nullable=False),
        sa.Column("instance_pk", ID, nullable=False),
        sa.Column("grader_pk", ID, nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("referral", sa.Boolean(), nullable=False),
        sa.Column("quality", sa.String(length=16), nullable=False),
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

    op.create_table(
        "report_prediction",
        sa.Column("report_pk", ID, nullable=False),
        sa.Column("prediction_pk", ID, nullable=False),
        sa.ForeignKeyConstraint(
            ["prediction_pk"],
            ["prediction.id"],
            name=op.f("fk_report_prediction_prediction_pk_prediction"),
        ),
        sa.ForeignKeyConstraint(
            ["report_pk"],
            ["report.id"],
            name=op.f("fk_report_prediction_report_pk_report"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("report_pk", "prediction_pk", name=op.f("pk_report_prediction")),
    )
    with op.batch_alter_table("report", schema=None) as batch_op:
        batch_op.add_column(sa.Column("case_pk", ID, nullable=True))
        batch_op.add_column(sa.Column("decision_pk", ID, nullable=True))
        batch_op.add_column(sa.Column("content_key", sa.String(length=512), nullable=True))
        batch_op.add_column(sa.Column("verified", sa.Boolean(), nullable=True))
        batch_op.add_column(sa.Column("pdf_sha256", sa.String(length=64), nullable=True))
    # Existing per-instance reports become one-image case reports.
    op.execute(
        "UPDATE report SET case_pk = (SELECT case_pk FROM instance WHERE instance.id = "
        "report.instance_pk), content_key = 'p:' || CAST(prediction_pk AS VARCHAR(20)), "
        "verified = false"
    )
    op.execute(
        "INSERT INTO report_prediction (report_pk, prediction_pk) "
        "SELECT id, prediction_pk FROM report"
    )
    with op.batch_alter_table("report", schema=None) as batch_op:
        batch_op.alter_column("case_pk", existing_type=ID, nullable=False)
        batch_op.alter_column("content_key", existing_type=sa.String(length=512), nullable=False)
        batch_op.alter_column("verified", existing_type=sa.Boolean(), nullable=False)
        batch_op.drop_index(batch_op.f("ix_report_instance_pk"))
        batch_op.drop_constraint(batch_op.f("uq_report_prediction_pk"), type_="unique")
        batch_op.drop_constraint(batch_op.f("fk_report_instance_pk_instance"), type_="foreignkey")
        batch_op.drop_constraint(
            batch_op.f("fk_report_prediction_pk_prediction"), type_="foreignkey"
        )
        batch_op.drop_column("prediction_pk")
        batch_op.drop_column("instance_pk")
        batch_op.create_index(batch_op.f("ix_report_case_pk"), ["case_pk"], unique=False)
        batch_op.create_unique_constraint(
            batch_op.f("uq_report_case_pk_content_key"), ["case_pk", "content_key"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_report_case_pk_screening_case"), "screening_case", ["case_pk"], ["id"]
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_report_decision_pk_arbitration_decision"),
            "arbitration_decision",
            ["decision_pk"],
            ["id"],
        )


def downgrade() -> None:
    bind = op.get_bind()
    blocking = bind.execute(
        sa.text(
            "SELECT count(*) FROM report WHERE decision_pk IS NOT NULL OR (SELECT count(*) "
            "FROM report_prediction WHERE report_pk = report.id) <> 1"
        )
    ).scalar()
    if blocking:
        raise RuntimeError(
            f"{blocking} report(s) cover several images or a decision; revision 0001 cannot "
            "hold them. Export them before downgrading."
        )
    with op.batch_alter_table("report", schema=None) as batch_op:
        batch_op.add_column(sa.Column("instance_pk", ID, nullable=True))
        batch_op.add_column(sa.Column("prediction_pk", ID, nullable=True))
    op.execute(
        "UPDATE report SET prediction_pk = (SELECT prediction_pk FROM report_prediction "
        "WHERE report_pk = report.id)"
    )
    op.execute(
        "UPDATE report SET instance_pk = (SELECT instance_pk FROM prediction "
        "WHERE prediction.id = report.prediction_pk)"
    )
    with op.batch_alter_table("report", schema=None) as batch_op:
        batch_op.alter_column("instance_pk", existing_type=ID, nullable=False)
        batch_op.alter_column("prediction_pk", existing_type=ID, nullable=False)
        batch_op.drop_constraint(
            batch_op.f("fk_report_decision_pk_arbitration_decision"), type_="foreignkey"
        )
        batch_op.drop_constraint(batch_op.f("fk_report_case_pk_screening_case"), type_="foreignkey")
        batch_op.drop_constraint(batch_op.f("uq_report_case_pk_content_key"), type_="unique")
        batch_op.drop_index(batch_op.f("ix_report_case_pk"))
        batch_op.drop_column("pdf_sha256")
        batch_op.drop_column("verified")
        batch_op.drop_column("content_key")
        batch_op.drop_column("decision_pk")
        batch_op.drop_column("case_pk")
        batch_op.create_foreign_key(
            batch_op.f("fk_report_prediction_pk_prediction"),
            "prediction",
            ["prediction_pk"],
            ["id"],
        )
        batch_op.create_foreign_key(
            batch_op.f("fk_report_instance_pk_instance"), "instance", ["instance_pk"], ["id"]
        )
        batch_op.create_unique_constraint(batch_op.f("uq_report_prediction_pk"), ["prediction_pk"])
        batch_op.create_index(batch_op.f("ix_report_instance_pk"), ["instance_pk"], unique=False)

    op.drop_table("report_prediction")
    with op.batch_alter_table("grader_read", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_grader_read_instance_pk"))
        batch_op.drop_index(batch_op.f("ix_grader_read_case_pk"))

    op.drop_table("grader_read")
    with op.batch_alter_table("arbitration_decision", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_arbitration_decision_case_pk"))
        batch_op.drop_index(batch_op.f("ix_arbitration_decision_arbitration_pk"))

    op.drop_table("arbitration_decision")
    with op.batch_alter_table("audit_event", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_audit_event_case_pk"))
        batch_op.drop_index(batch_op.f("ix_audit_event_at"))

    op.drop_table("audit_event")
    with op.batch_alter_table("arbitration_case", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_arbitration_case_state"))

    op.drop_table("arbitration_case")
    op.drop_table("person")
