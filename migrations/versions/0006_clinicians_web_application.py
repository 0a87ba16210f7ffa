"""The clinicians' web application: sites, sessions, case reads, triage, votes, append-only audit.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

ROLES_OLD = ("grader", "arbiter", "statistician", "admin")
ROLES_NEW = (*ROLES_OLD, "senior_arbiter")

APPEND_ONLY = """
CREATE OR REPLACE FUNCTION audit_event_append_only() RETURNS trigger AS $$
BEGIN
  RAISE EXCEPTION 'audit_event is append-only: % refused', TG_OP;
END;
$$ LANGUAGE plpgsql;
CREATE TRIGGER audit_event_append_only BEFORE UPDATE OR DELETE ON audit_event
  FOR EACH ROW EXECUTE FUNCTION audit_event_append_only();
"""


def _when(dt: str = "created_at") -> sa.Column[sa.DateTime]:
    return sa.Column(dt, sa.DateTime(timezone=True), nullable=False)


def upgrade() -> None:
    with op.batch_alter_table("person") as batch:
        batch.alter_column(
            "role",
            existing_type=sa.Enum(*ROLES_OLD, name="role", native_enum=False, length=24),
            type_=sa.Enum(*ROLES_NEW, name="role", native_enum=False, length=24),
            existing_nullable=False,
        )
        batch.add_column(
            sa.Column("failed_logins", sa.Integer(), nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("locked_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(
            sa.Column("arbitrate_all", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("api_token_sha256", sa.String(64), nullable=True))
        batch.create_unique_constraint("uq_person_api_token_sha256", ["api_token_sha256"])
    op.create_table(
        "person_site",
        sa.Column(
            "person_pk",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("person.id"),
            primary_key=True,
        ),
        sa.Column("site", sa.String(64), primary_key=True),
    )
    big = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table(
        "web_session",
        sa.Column("id", big, primary_key=True, autoincrement=True),
        sa.Column("token_sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("person_pk", big, sa.ForeignKey("person.id"), nullable=False, index=True),
        sa.Column("csrf_token", sa.String(64), nullable=False),
        _when(),
        _when("last_seen_at"),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("address", sa.String(64), nullable=False),
    )
    with op.batch_alter_table("screening_case") as batch:
        batch.add_column(sa.Column("site", sa.String(64), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("urgent", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("leased_to_pk", big, sa.ForeignKey("person.id"), nullable=True))
        batch.add_column(sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("graded_at", sa.DateTime(timezone=True), nullable=True))
        batch.create_index("ix_screening_case_site", ["site"])
    unread = sa.text("graded_at IS NULL")
    op.create_index(
        "ix_screening_case_worklist",
        "screening_case",
        ["site", "urgent", "opened_at", "id"],
        postgresql_where=unread,
        sqlite_where=unread,
    )
    op.create_table(
        "case_read",
        sa.Column("id", big, primary_key=True, autoincrement=True),
        sa.Column("case_pk", big, sa.ForeignKey("screening_case.id"), nullable=False, index=True),
        sa.Column("grader_pk", big, sa.ForeignKey("person.id"), nullable=False, index=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("eyes", sa.JSON(), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("referral", sa.Boolean(), nullable=False),
        sa.Column("reading_ms", sa.Integer(), nullable=True),
        sa.Column(
            "source",
            sa.Enum("web", "csv", "api", name="readsource", native_enum=False, length=24),
            nullable=False,
        ),
        sa.Column("amends_pk", big, sa.ForeignKey("case_read.id"), nullable=True),
        sa.Column("amend_reason", sa.Text(), nullable=False),
        sa.Column("blinded", sa.Boolean(), nullable=True),
        _when(),
        sa.UniqueConstraint("case_pk", "grader_pk", "version"),
    )
    with op.batch_alter_table("arbitration_case") as batch:
        batch.add_column(sa.Column("conflict", sa.String(24), nullable=False, server_default=""))
        batch.add_column(
            sa.Column("rule_version", sa.String(32), nullable=False, server_default="")
        )
        batch.add_column(sa.Column("read_pk", big, sa.ForeignKey("case_read.id"), nullable=True))
        batch.add_column(
            sa.Column("inclusion_probability", sa.Float(), nullable=False, server_default="1")
        )
        batch.add_column(
            sa.Column("escalated", sa.Boolean(), nullable=False, server_default=sa.false())
        )
        batch.add_column(sa.Column("outcome", sa.String(24), nullable=True))
    op.create_table(
        "triage",
        sa.Column("id", big, primary_key=True, autoincrement=True),
        sa.Column("case_pk", big, sa.ForeignKey("screening_case.id"), nullable=False, unique=True),
        sa.Column("read_pk", big, sa.ForeignKey("case_read.id"), nullable=False),
        sa.Column("rule_version", sa.String(32), nullable=False),
        sa.Column("conflict", sa.String(24), nullable=False),
        sa.Column("sampled", sa.Boolean(), nullable=False),
        sa.Column("inclusion_probability", sa.Float(), nullable=False),
        sa.Column("to_arbitration", sa.Boolean(), nullable=False),
        _when("at"),
    )
    op.create_table(
        "arbitration_vote",
        sa.Column("id", big, primary_key=True, autoincrement=True),
        sa.Column(
            "arbitration_pk", big, sa.ForeignKey("arbitration_case.id"), nullable=False, index=True
        ),
        sa.Column("arbiter_pk", big, sa.ForeignKey("person.id"), nullable=False),
        sa.Column("choice", sa.String(8), nullable=False),
        sa.Column("findings", sa.JSON(), nullable=False),
        sa.Column("referral", sa.Boolean(), nullable=False),
        sa.Column("comment", sa.Text(), nullable=False),
        _when("signed_at"),
        sa.UniqueConstraint("arbitration_pk", "arbiter_pk"),
    )
    with op.batch_alter_table("arbitration_decision") as batch:
        batch.add_column(sa.Column("eyes", sa.JSON(), nullable=True))
    with op.batch_alter_table("audit_event") as batch:
        batch.add_column(sa.Column("address", sa.String(64), nullable=False, server_default=""))
        batch.add_column(sa.Column("request_id", sa.String(36), nullable=False, server_default=""))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(APPEND_ONLY)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS audit_event_append_only ON audit_event")
        op.execute("DROP FUNCTION IF EXISTS audit_event_append_only()")
    with op.batch_alter_table("audit_event") as batch:
        batch.drop_column("request_id")
        batch.drop_column("address")
    with op.batch_alter_table("arbitration_decision") as batch:
        batch.drop_column("eyes")
    op.drop_table("arbitration_vote")
    op.drop_table("triage")
    with op.batch_alter_table("arbitration_case") as batch:
        for name in (
            "outcome",
            "escalated",
            "inclusion_probability",
            "read_pk",
            "rule_version",
            "conflict",
        ):
            batch.drop_column(name)
    op.drop_table("case_read")
    op.drop_index("ix_screening_case_worklist", table_name="screening_case")
    with op.batch_alter_table("screening_case") as batch:
        batch.drop_index("ix_screening_case_site")
        for name in ("graded_at", "lease_until", "leased_to_pk", "urgent", "site"):
            batch.drop_column(name)
    op.drop_table("web_session")
    op.drop_table("person_site")
    # Senior arbiters become arbiters: revision 0005 knows no other panel role.
    op.execute("UPDATE person SET role = 'arbiter' WHERE role = 'senior_arbiter'")
    with op.batch_alter_table("person") as batch:
        batch.drop_constraint("uq_person_api_token_sha256", type_="unique")
        for name in ("api_token_sha256", "arbitrate_all", "locked_until", "failed_logins"):
            batch.drop_column(name)
        batch.alter_column(
            "role",
            existing_type=sa.Enum(*ROLES_NEW, name="role", native_enum=False, length=24),
            type_=sa.Enum(*ROLES_OLD, name="role", native_enum=False, length=24),
            existing_nullable=False,
        )
