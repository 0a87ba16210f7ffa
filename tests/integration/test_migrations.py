"""Migrations: upgrade carries existing rows forward, the schema equals the models, downgrade
works, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, text

from eyescreen.database import downgrade, upgrade
from services.db.base import Base

pytestmark = pytest.mark.integration

NOW = "2026-11-28 10:00:00"
ROWS_AT_0001 = [
    "INSERT INTO patient (id, patient_id, issuer, name, birth_date, sex, created_at) "
    f"VALUES (1, 'P1', '', '', '', '', '{NOW}')",
    "INSERT INTO study (id, patient_pk, study_instance_uid, study_date, accession_number, "
    f"created_at) VALUES (1, 1, '1.2.3', '', '', '{NOW}')",
    "INSERT INTO screening_case (id, study_pk, state, opened_at, last_image_at) "
    f"VALUES (1, 1, 'open', '{NOW}', '{NOW}')",
    "INSERT INTO instance (id, case_pk, sop_instance_uid, sop_class_uid, series_instance_uid, "
    "transfer_syntax_uid, laterality, route, calling_ae, sha256, size_bytes, state, received_at)"
    f" VALUES (1, 1, '1.2.3.4', '1.2', '1.2.3.5', '1.2.840.10008.1.2.1', 'L', 'fundus', '', "
    f"'ab', 10, 'predicted', '{NOW}')",
    "INSERT INTO model_version (id, name, version, route, weights_sha256, taxonomy_version, "
    f"path, created_at) VALUES (1, 'm', '1', 'fundus', 'cd', 'fundus/1', 'x', '{NOW}')",
    "INSERT INTO prediction (id, instance_pk, model_version_pk, probabilities, thresholds, top3,"
    f" referral, quality, provenance, created_at) VALUES (1, 1, 1, '{{}}', '{{}}', '[]', true, "
    f"'gradable', '{{}}', '{NOW}')",
    "INSERT INTO report (id, instance_pk, prediction_pk, sop_instance_uid, sha256, created_at) "
    f"VALUES (1, 1, 1, '1.2.3.9', 'ef', '{NOW}')",
]


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'm.db'}"
    return str(request.getfixturevalue("postgres_url"))


def test_upgrade_keeps_rows_matches_models_and_downgrades(empty_database: str) -> None:
    upgrade(empty_database, "0001")
    engine = create_engine(empty_database)
    with engine.begin() as conn:
        for statement in ROWS_AT_0001:
            conn.execute(text(statement))
    upgrade(empty_database)
    with engine.connect() as conn:
        row = conn.execute(text("SELECT case_pk, content_key, verified FROM report")).one()
        assert tuple(row) == (1, "p:1", False)
        assert conn.execute(text("SELECT * FROM report_prediction")).all() == [(1, 1)]
        differences = compare_metadata(MigrationContext.configure(conn), Base.metadata)
        assert differences == []
    downgrade(empty_database, "0001")
    with engine.connect() as conn:
        row = conn.execute(text("SELECT instance_pk, prediction_pk FROM report")).one()
        assert tuple(row) == (1, 1)
    upgrade(empty_database)
    engine.dispose()


def test_dropping_per_image_reads_refuses_while_one_is_left(empty_database: str) -> None:
    """Revision 0007 drops the unused ``grader_read`` table, but never a row of it unseen."""
    upgrade(empty_database, "0001")
    engine = create_engine(empty_database)
    with engine.begin() as conn:
        for statement in ROWS_AT_0001:
            conn.execute(text(statement))
    upgrade(empty_database, "0002")
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO person (id, username, display_name, role, active, created_at) "
                f"VALUES (1, 'g', 'G', 'grader', true, '{NOW}')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO grader_read (id, case_pk, instance_pk, grader_pk, findings, referral,"
                f" quality, created_at) VALUES (1, 1, 1, 1, '{{}}', false, 'gradable', '{NOW}')"
            )
        )
    upgrade(empty_database, "0006")
    with pytest.raises(RuntimeError, match="grader_read holds 1 per-image read"):
        upgrade(empty_database)
    with engine.begin() as conn:
        conn.execute(text("DELETE FROM grader_read"))
    upgrade(empty_database)
    with engine.connect() as conn:
        assert "grader_read" not in _tables(conn)
    engine.dispose()


def _tables(conn) -> set[str]:  # type: ignore[no-untyped-def]
    from sqlalchemy import inspect

    return set(inspect(conn).get_table_names())
