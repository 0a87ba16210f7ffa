"""The eye-care workflow: expected visits from the Modality Worklist, performed procedure steps
(MPPS), the failsafe list, and HL7 deliveries beside the DICOM ones (``report_delivery.channel``
and the ORU^R01 it sends, ``payload_sha256``; existing rows are DICOM deliveries).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "expected_visit",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("visit_key", sa.String(length=96), nullable=False),
        sa.Column("scheduled_date", sa.String(length=8), nullable=False),
        sa.Column("scheduled_time", sa.String(length=16), nullable=False),
        sa.Column("accession_number", sa.String(length=16), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("requested_procedure_id", sa.String(length=16), nullable=False),
        sa.Column("step_id", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("patient_name", sa.String(length=324), nullable=False),
        sa.Column("modality", sa.String(length=16), nullable=False),
        sa.Column("station_ae", sa.String(length=16), nullable=False),
        sa.Column("procedure_code", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=128), nullable=False),
        sa.Column("first_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_seen_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("case_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("matched_by", sa.String(length=16), nullable=False),
        sa.Column("matched_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_pk"],
            ["screening_case.id"],
            name=op.f("fk_expected_visit_case_pk_screening_case"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_expected_visit")),
        sa.UniqueConstraint("site", "visit_key", name=op.f("uq_expected_visit_site_visit_key")),
    )
    with op.batch_alter_table("expected_visit", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_expected_visit_accession_number"), ["accession_number"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_expected_visit_case_pk"), ["case_pk"], unique=False)
        batch_op.create_index(
            "ix_expected_visit_site_day", ["site", "scheduled_date"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_expected_visit_study_instance_uid"), ["study_instance_uid"], unique=False
        )

    op.create_table(
        "performed_step",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column(
            "status",
            sa.Enum(
                "in_progress",
                "completed",
                "discontinued",
                name="stepstatus",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("calling_ae", sa.String(length=16), nullable=False),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("accession_number", sa.String(length=16), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("referenced", sa.JSON(), nullable=False),
        sa.Column("missing", sa.JSON(), nullable=False),
        sa.Column("discontinued_reason", sa.String(length=128), nullable=False),
        sa.Column("case_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["case_pk"],
            ["screening_case.id"],
            name=op.f("fk_performed_step_case_pk_screening_case"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_performed_step")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_performed_step_sop_instance_uid")),
    )
    with op.batch_alter_table("performed_step", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_performed_step_case_pk"), ["case_pk"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_performed_step_study_instance_uid"), ["study_instance_uid"], unique=False
        )

    op.create_table(
        "failsafe_item",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("site", sa.String(length=64), nullable=False),
        sa.Column("day", sa.String(length=8), nullable=False),
        sa.Column(
            "kind",
            sa.Enum(
                "not_imaged",
                "missing_images",
                "discontinued",
                "not_read_by_model",
                "not_graded",
                "referral_no_outcome",
                "not_delivered",
                name="failsafekind",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("subject", sa.String(length=64), nullable=False),
        sa.Column("visit_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("case_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("resolved_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "closed_by_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("close_reason", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_pk"], ["screening_case.id"], name=op.f("fk_failsafe_item_case_pk_screening_case")
        ),
        sa.ForeignKeyConstraint(
            ["closed_by_pk"], ["person.id"], name=op.f("fk_failsafe_item_closed_by_pk_person")
        ),
        sa.ForeignKeyConstraint(
            ["visit_pk"],
            ["expected_visit.id"],
            name=op.f("fk_failsafe_item_visit_pk_expected_visit"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_failsafe_item")),
        sa.UniqueConstraint("kind", "subject", name=op.f("uq_failsafe_item_kind_subject")),
    )
    with op.batch_alter_table("failsafe_item", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_failsafe_item_closed_at"), ["closed_at"], unique=False)
        batch_op.create_index("ix_failsafe_item_site_day", ["site", "day"], unique=False)

    with op.batch_alter_table("report_delivery", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "channel",
                sa.Enum("dicom", "hl7", name="deliverychannel", native_enum=False, length=24),
                server_default="dicom",
                nullable=False,
            )
        )
        batch_op.add_column(sa.Column("payload_sha256", sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("report_delivery", schema=None) as batch_op:
        batch_op.drop_column("payload_sha256")
        batch_op.drop_column("channel")

    with op.batch_alter_table("failsafe_item", schema=None) as batch_op:
        batch_op.drop_index("ix_failsafe_item_site_day")
        batch_op.drop_index(batch_op.f("ix_failsafe_item_closed_at"))

    op.drop_table("failsafe_item")
    with op.batch_alter_table("performed_step", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_performed_step_study_instance_uid"))
        batch_op.drop_index(batch_op.f("ix_performed_step_case_pk"))

    op.drop_table("performed_step")
    with op.batch_alter_table("expected_visit", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_expected_visit_study_instance_uid"))
        batch_op.drop_index("ix_expected_visit_site_day")
        batch_op.drop_index(batch_op.f("ix_expected_visit_case_pk"))
        batch_op.drop_index(batch_op.f("ix_expected_visit_accession_number"))

    op.drop_table("expected_visit")
