"""The security review's points that other tests do not already hold (docs/security.md lists
them all with their tests): session fixation and expiry, path traversal, SQL injection through
filters, hostile DICOM strings in the PDF and the SR, secrets only from the environment."""

from __future__ import annotations

import subprocess
from datetime import timedelta
from io import BytesIO
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select, update

from reports.study_export import export
from services.db.base import utcnow
from services.db.models import ArbitrationCase, Report, WebSession
from services.kernel.settings import Settings
from services.study.records import Filters, study_key
from services.study.tables import Options
from tests.clinic import PASSWORD, Clinic, clinic, open_clinic, other_read, read_form, sign_in
from tests.conftest import REPO, require_binary
from webapp.security import COOKIE

pytestmark = pytest.mark.integration
__all__ = ["clinic"]  # the fixture
HOSTILE = "Evil^<script>alert(1)</script>"


def test_a_session_token_chosen_before_sign_in_is_never_honoured(clinic: Clinic) -> None:
    """Session fixation: the cookie an attacker plants before sign-in is replaced by a new,
    server-made token, and the planted one opens nothing."""
    client = clinic.client()
    client.cookies.set(COOKIE, "planted-by-an-attacker", domain="testserver.local")
    assert sign_in(client, "grace", PASSWORD).status_code == 303
    issued = [c.value for c in client.cookies.jar if c.name == COOKIE]
    assert len(issued) == 1 and issued[0] != "planted-by-an-attacker", issued
    assert len(issued[0] or "") >= 32
    intruder = clinic.client()
    intruder.cookies.set(COOKIE, "planted-by-an-attacker")
    assert intruder.get("/worklist").status_code == 303  # back to the log-in page


def test_an_idle_session_expires(clinic: Clinic) -> None:
    grader, _ = clinic.login("grace")
    assert grader.get("/worklist").status_code == 200
    idle = timedelta(minutes=clinic.settings.web_session_idle_minutes + 1)
    with clinic.runtime.sessions.begin() as session:
        session.execute(update(WebSession).values(last_seen_at=utcnow() - idle))
    answer = grader.get("/worklist")
    assert answer.status_code == 303 and answer.headers["location"].startswith("/login")


@pytest.mark.parametrize(
    "path",
    [
        "/static/../../pyproject.toml",
        "/static/..%2f..%2fpyproject.toml",
        "/static/%2e%2e/%2e%2e/services/kernel/settings.py",
        "/images/..%2f..%2fetc%2fpasswd",
        "/images/1.png/../../../etc/passwd",
        "/cases/1/..%2f..%2fadmin",
    ],
)
def test_no_path_leaves_the_served_folders(clinic: Clinic, path: str) -> None:
    grader, _ = clinic.login("grace")
    answer = grader.get(path)
    assert answer.status_code in (303, 400, 403, 404, 405, 422), (path, answer.status_code)
    assert "[project]" not in answer.text and "root:" not in answer.text
    assert "class Settings" not in answer.text


def test_filters_are_values_not_sql(clinic: Clinic, tmp_path: Path) -> None:
    """Every filter reaches the database as a bound value: an injection attempt finds nothing
    (and breaks nothing) in the panel's queue and in the study export."""
    case = clinic.case()
    grader, csrf = clinic.login("grace")
    read = other_read(clinic.model(case))
    form = read_form(csrf, read, reading_ms="4000")
    assert grader.post(f"/cases/{case}/read", data=form).status_code == 303
    with clinic.runtime.sessions() as session:
        assert session.scalar(select(ArbitrationCase.id)) is not None
    arbiter, _ = clinic.login("arthur")
    for attack in ("' OR '1'='1", "NORTH' --", "x'); DROP TABLE audit_event; --"):
        page = arbiter.get("/arbitration", params={"site": attack, "finding": attack})
        assert page.status_code == 200 and "/arbitration/" not in page.text.split("<main")[-1]
    assert "/arbitration/" in arbiter.get("/arbitration", params={"site": "NORTH"}).text
    attack = "NORTH' OR '1'='1"
    with clinic.runtime.sessions() as session:
        snapshot = export(
            session,
            Filters(sites=(attack,), routes=("fundus",), cameras=(attack,)),
            tmp_path / "export",
            study_key(tmp_path / "study.key"),
            Options(replicates=10, seed=1),
        )
    assert snapshot["eyes"] == 0


def test_hostile_dicom_strings_are_text_in_the_pdf_and_the_sr(
    postgres_url: str, tmp_path: Path
) -> None:
    require_binary("/usr/bin/pdftotext")
    with open_clinic(postgres_url, tmp_path, pdf_reports=True) as clinic:
        case = clinic.case(patient_name=HOSTILE)
        reports = clinic.runtime.reports()
        reports.build_case(case)
        with clinic.runtime.sessions() as session:
            report = session.scalars(select(Report).where(Report.case_pk == case)).one()
        reports.render_pdf(report.id)
        with clinic.runtime.sessions() as session:
            report = session.get_one(Report, report.id)
        assert report.pdf_sha256 is not None
        pdf = reports.reports.read(report.pdf_sha256)
        text = subprocess.run(
            ["/usr/bin/pdftotext", "-", "-"], input=pdf, capture_output=True, check=True
        ).stdout.decode()
        assert "<script>alert(1)</script>" in text  # shown as the characters it is
        sr = dcmread(BytesIO(reports.reports.read(report.sha256)))
        assert str(sr.PatientName) == HOSTILE  # kept exactly, as DICOM data, never markup


def test_secrets_come_only_from_the_environment() -> None:
    """No setting has a secret default, and no key or password is in a tracked file."""
    secret_like = [n for n in Settings.model_fields if any(w in n for w in ("password", "secret"))]
    assert all(Settings.model_fields[n].default is None for n in secret_like)
    for name in ("tls_private_key", "sr_tls_private_key", "web_private_key", "study_key_file"):
        assert Settings.model_fields[name].default is None
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in tracked:
        path = REPO / name
        if path.suffix in {".pt", ".png", ".jpg", ".xlsx", ".pdf"} or not path.is_file():
            continue
        text = path.read_text(errors="ignore")
        assert "PRIVATE KEY-----" not in text or name.endswith("test_security.py"), name
