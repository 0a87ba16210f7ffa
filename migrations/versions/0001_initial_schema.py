"""Initial schema: patients, studies, screening cases, instances, models, predictions and
their findings, the outbox, reports and report deliveries.

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_version",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=32), nullable=False),
        sa.Column("route", sa.String(length=16), nullable=False),
        sa.Column("weights_sha256", sa.String(length=64), nullable=False),
        sa.Column("taxonomy_version", sa.String(length=32), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_model_version")),
        sa.UniqueConstraint("weights_sha256", name=op.f("uq_model_version_weights_sha256")),
    )
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("task_name", sa.String(length=64), nullable=False),
        sa.Column("args", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_outbox_sent_at"), ["sent_at"], unique=False)

    op.create_table(
        "patient",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("patient_id", sa.String(length=64), nullable=False),
        sa.Column("issuer", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=324), nullable=False),
        sa.Column("birth_date", sa.String(length=8), nullable=False),
        sa.Column("sex", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_patient")),
        sa.UniqueConstraint("patient_id", "issuer", name=op.f("uq_patient_patient_id_issuer")),
    )
    op.create_table(
        "study",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "patient_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("study_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("study_date", sa.String(length=8), nullable=False),
        sa.Column("accession_number", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["patient_pk"], ["patient.id"], name=op.f("fk_study_patient_pk_patient")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_study")),
        sa.UniqueConstraint("study_instance_uid", name=op.f("uq_study_study_instance_uid")),
    )
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_study_patient_pk"), ["patient_pk"], unique=False)

    op.create_table(
        "screening_case",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("study_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "state",
            sa.Enum("open", "closed", name="casestate", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("referral", sa.Boolean(), nullable=True),
        sa.Column("opened_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_image_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["study_pk"], ["study.id"], name=op.f("fk_screening_case_study_pk_study")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_screening_case")),
        sa.UniqueConstraint("study_pk", name=op.f("uq_screening_case_study_pk")),
    )
    op.create_table(
        "instance",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("case_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sop_class_uid", sa.String(length=64), nullable=False),
        sa.Column("series_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("transfer_syntax_uid", sa.String(length=64), nullable=False),
        sa.Column("laterality", sa.String(length=4), nullable=False),
        sa.Column("route", sa.String(length=16), nullable=False),
        sa.Column("calling_ae", sa.String(length=16), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column(
            "size_bytes", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "state",
            sa.Enum(
                "received",
                "predicted",
                "failed",
                name="instancestate",
                native_enum=False,
                length=24,
            ),
            nullable=False,
        ),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["case_pk"], ["screening_case.id"], name=op.f("fk_instance_case_pk_screening_case")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_instance")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_instance_sop_instance_uid")),
    )
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_instance_case_pk"), ["case_pk"], unique=False)
        batch_op.create_index(batch_op.f("ix_instance_state"), ["state"], unique=False)

    op.create_table(
        "prediction",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "instance_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "model_version_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("probabilities", sa.JSON(), nullable=False),
        sa.Column("thresholds", sa.JSON(), nullable=False),
        sa.Column("top3", sa.JSON(), nullable=False),
        sa.Column("referral", sa.Boolean(), nullable=False),
        sa.Column("quality", sa.String(length=16), nullable=False),
        sa.Column("provenance", sa.JSON(), nullable=False),
        sa.Column("heatmap_path", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_pk"], ["instance.id"], name=op.f("fk_prediction_instance_pk_instance")
        ),
        sa.ForeignKeyConstraint(
            ["model_version_pk"],
            ["model_version.id"],
            name=op.f("fk_prediction_model_version_pk_model_version"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction")),
        sa.UniqueConstraint(
            "instance_pk",
            "model_version_pk",
            name=op.f("uq_prediction_instance_pk_model_version_pk"),
        ),
    )
    with op.batch_alter_table("prediction", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_prediction_instance_pk"), ["instance_pk"], unique=False
        )

    op.create_table(
        "prediction_finding",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "prediction_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("code", sa.String(length=32), nullable=False),
        sa.Column("level", sa.Integer(), nullable=False),
        sa.Column("probability", sa.Float(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=False),
        sa.Column("positive", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(
            ["prediction_pk"],
            ["prediction.id"],
            name=op.f("fk_prediction_finding_prediction_pk_prediction"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_prediction_finding")),
        sa.UniqueConstraint(
            "prediction_pk", "code", name=op.f("uq_prediction_finding_prediction_pk_code")
        ),
    )
    with op.batch_alter_table("prediction_finding", schema=None) as batch_op:
        batch_op.create_index(
            "ix_prediction_finding_code_positive", ["code", "positive"], unique=False
        )

    op.create_table(
        "report",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "instance_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "prediction_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "predecessor_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("sop_instance_uid", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["instance_pk"], ["instance.id"], name=op.f("fk_report_instance_pk_instance")
        ),
        sa.ForeignKeyConstraint(
            ["predecessor_pk"], ["report.id"], name=op.f("fk_report_predecessor_pk_report")
        ),
        sa.ForeignKeyConstraint(
            ["prediction_pk"], ["prediction.id"], name=op.f("fk_report_prediction_pk_prediction")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report")),
        sa.UniqueConstraint("prediction_pk", name=op.f("uq_report_prediction_pk")),
        sa.UniqueConstraint("sop_instance_uid", name=op.f("uq_report_sop_instance_uid")),
    )
    with op.batch_alter_table("report", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_report_instance_pk"), ["instance_pk"], unique=False)

    op.create_table(
        "report_delivery",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column(
            "report_pk", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("destination", sa.String(length=128), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending", "delivered", "dead", name="deliverystate", native_enum=False, length=24
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["report_pk"], ["report.id"], name=op.f("fk_report_delivery_report_pk_report")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_report_delivery")),
        sa.UniqueConstraint(
            "report_pk", "destination", name=op.f("uq_report_delivery_report_pk_destination")
        ),
    )
    with op.batch_alter_table("report_delivery", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_report_delivery_state"), ["state"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("report_delivery", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_delivery_state"))

    op.drop_table("report_delivery")
    with op.batch_alter_table("report", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_report_instance_pk"))

    op.drop_table("report")
    with op.batch_alter_table("prediction_finding", schema=None) as batch_op:
        batch_op.drop_index("ix_prediction_finding_code_positive")

    op.drop_table("prediction_finding")
    with op.batch_alter_table("prediction", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_prediction_instance_pk"))

    op.drop_table("prediction")
    with op.batch_alter_table("instance", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_instance_state"))
        batch_op.drop_index(batch_op.f("ix_instance_case_pk"))

    op.drop_table("instance")
    op.drop_table("screening_case")
    with op.batch_alter_table("study", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_study_patient_pk"))

    op.drop_table("study")
    op.drop_table("patient")
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_outbox_sent_at"))

    op.drop_table("outbox")
    op.drop_table("model_version")
