"""The failsafe: per site and day, patients expected but never imaged, images the MPPS named
that never came, discontinued acquisitions, unread and ungraded cases, referrals without an
outcome and undelivered reports; each item stays until an admin closes it with a reason
(audited), on the web page and by ``eyescreen failsafe``."""

from __future__ import annotations

import csv
import io
import os
import time
from datetime import date
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_gateway.photos import photo_to_dataset
from services.clinic.arbitration import record_decision
from services.db.base import utcnow
from services.db.models import (
    ArbitrationCase,
    AuditEvent,
    DeliveryState,
    FailsafeItem,
    FailsafeKind,
    Instance,
    Person,
    ReportDelivery,
    ScreeningCase,
    StepStatus,
)
from services.db.session import transaction
from services.kernel.task_names import TaskName
from services.workflow import (
    FailsafePolicy,
    PerformedSteps,
    StepReport,
    WorklistItem,
    day_summary,
    record_worklist,
    refresh,
)
from tests.clinic import SITE, Clinic, open_clinic
from tests.conftest import free_port
from tests.dicom_files import received_dataset
from tests.service_harness import eyescreen
from tests.synthetic_photos import generated_fundus_photos
from worker.handlers import HANDLERS

pytestmark = pytest.mark.integration


@pytest.fixture
def today() -> str:
    """The day of this test, not of the module's import: a run crossing midnight (CI's did)
    would otherwise expect yesterday's visits among today's cases."""
    return date.today().strftime("%Y%m%d")


@pytest.fixture
def clinic(database_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    with open_clinic(
        database_url,
        tmp_path,
        site=SITE,
        turnaround_hours=0.0002,  # under a second: everything unfinished is overdue at once
        failsafe_not_imaged_after_hours=0,
        referral_outcome_days=0,
        sr_destinations=f"PACS@127.0.0.1:{free_port()}",  # nobody listens: dead-lettered
        sr_delivery_max_attempts=1,
    ) as opened:
        yield opened


def _patient_of(clinic: Clinic, case_id: int) -> str:
    with clinic.runtime.sessions() as session:
        return session.get_one(ScreeningCase, case_id).study.patient.patient_id


def _unread_case(clinic: Clinic) -> int:
    ds = photo_to_dataset(
        generated_fundus_photos(1)[0], patient_id="WALKIN-1", study_uid=generate_uid()
    )
    return clinic.ingest[SITE].accept(received_dataset(ds)).instance_id


def _refresh(clinic: Clinic) -> dict[tuple[FailsafeKind, str], FailsafeItem]:
    with transaction(clinic.runtime.sessions) as session:
        refresh(session, SITE, FailsafePolicy.from_settings(clinic.settings))
        rows = session.scalars(select(FailsafeItem)).all()
        return {(row.kind, row.subject): row for row in rows}


def _scene(clinic: Clinic, today: str) -> tuple[int, int]:
    """Case 1 expected, read, referred by the panel, its SR dead-lettered; one expected patient
    never came; an image nobody read; an MPPS naming a missing image; one discontinued."""
    case = clinic.case()
    with transaction(clinic.runtime.sessions) as session:
        record_worklist(
            session,
            SITE,
            "RIS@ris:104",
            [
                WorklistItem(today, "0001", "ACC-1", patient_id=_patient_of(clinic, case)),
                WorklistItem(today, "0002", "ACC-2", patient_id="NEVER-CAME"),
            ],
        )
        arbiter = session.scalars(select(Person).where(Person.username == "arthur")).one()
        arbitration = ArbitrationCase(case_pk=case, reason="model and grader disagree")
        session.add(arbitration)
        session.flush()
        record_decision(session, arbitration, arbiter, {"F.GLAU": True}, True)
    assert len(clinic.runtime.reports().build_case(case)) == 1  # one destination
    with clinic.runtime.sessions() as session:
        delivery_id = session.scalars(select(ReportDelivery.id)).one()
    HANDLERS[TaskName.DELIVER](clinic.runtime, delivery_id)
    with transaction(clinic.runtime.sessions) as session:  # a second PACS stored it, never
        dead = session.get_one(ReportDelivery, delivery_id)  # answering the commitment asked
        session.add(
            ReportDelivery(
                report_pk=dead.report_pk,
                destination="ARCHIVE@127.0.0.1:1",
                state=DeliveryState.DELIVERED,
                delivered_at=utcnow(),
                commitment_uid="2.25.1",
                commitment_requested_at=utcnow(),
            )
        )
    unread = _unread_case(clinic)
    steps = PerformedSteps(clinic.runtime.sessions)
    study = clinic.study_uid(case)
    steps.create("1.2.3.1", "FUNDUSCAM", StepReport(study_instance_uid=study))
    steps.update("1.2.3.1", StepReport(StepStatus.COMPLETED, referenced=("9.9.9.1",)))
    steps.create("1.2.3.2", "FUNDUSCAM", StepReport(study_instance_uid=study))
    steps.update(
        "1.2.3.2",
        StepReport(StepStatus.DISCONTINUED, discontinued_reason="110513 Equipment failure"),
    )
    time.sleep(1.0)  # past the turnaround
    return case, unread


def test_each_way_to_fall_through_is_listed_kept_and_summarised(clinic: Clinic, today: str) -> None:
    case, unread_instance = _scene(clinic, today)
    found = _refresh(clinic)
    kinds = {kind for kind, _ in found}
    assert kinds == set(FailsafeKind), set(FailsafeKind) - kinds
    with clinic.runtime.sessions() as session:
        unread_case = session.get_one(Instance, unread_instance).case_pk
        states = session.scalars(select(ReportDelivery.state).order_by(ReportDelivery.id)).all()
        assert states == [DeliveryState.DEAD, DeliveryState.DELIVERED]
    uncommitted = next(i for (k, _), i in found.items() if k == FailsafeKind.NOT_COMMITTED)
    assert "ARCHIVE@127.0.0.1:1" in uncommitted.detail
    assert "Commitment unanswered" in uncommitted.detail
    assert (FailsafeKind.NOT_READ_BY_MODEL, f"case:{unread_case}") in found
    assert (FailsafeKind.REFERRAL_NO_OUTCOME, f"case:{case}") in found
    missing = next(i for (k, _), i in found.items() if k == FailsafeKind.MISSING_IMAGES)
    assert "9.9.9.1" in missing.detail
    assert "Equipment failure" in next(
        i.detail for (k, _), i in found.items() if k == FailsafeKind.DISCONTINUED
    )
    assert len(_refresh(clinic)) == len(found)  # seen again: no second item

    with clinic.runtime.sessions() as session:
        summary = day_summary(session, SITE, today)
    assert (summary.expected, summary.imaged, summary.expected_imaged, summary.unexpected) == (
        2,
        2,
        1,
        1,
    )
    assert (summary.resulted, summary.delivered) == (1, 0)
    assert summary.sentence().startswith(f"{SITE} {today}: expected 2, imaged 2")

    # The unread image is read now: the item is resolved, still listed until someone closes it.
    clinic.runtime.inference().infer([unread_instance])
    again = _refresh(clinic)[(FailsafeKind.NOT_READ_BY_MODEL, f"case:{unread_case}")]
    assert again.resolved_at is not None and again.closed_at is None


def test_the_page_shows_the_sites_items_and_an_admin_closes_one_with_a_reason(
    clinic: Clinic, today: str
) -> None:
    case, _ = _scene(clinic, today)
    _refresh(clinic)
    admin, csrf = clinic.login("admin")
    page = admin.get("/failsafe")
    assert page.status_code == 200
    assert "NEVER-CAME" in page.text and "not imaged" in page.text
    assert 'id="day-summary"' in page.text
    dashboard = admin.get("/dashboard").text
    assert 'id="failsafe-counts"' in dashboard
    other, _ = clinic.login("oscar")  # a grader of another site
    assert "NEVER-CAME" not in other.get("/failsafe").text
    grader, grader_csrf = clinic.login("grace")
    with clinic.runtime.sessions() as session:
        item = session.scalars(
            select(FailsafeItem).where(FailsafeItem.kind == FailsafeKind.REFERRAL_NO_OUTCOME)
        ).one()
    url = f"/failsafe/{item.id}/close"
    assert grader.post(url, data={"csrf_token": grader_csrf, "reason": "x"}).status_code == 403
    assert admin.post(url, data={"csrf_token": csrf, "reason": " "}).status_code == 422
    assert admin.post(url, data={"reason": "attended"}).status_code in (401, 403)  # no CSRF
    answer = admin.post(url, data={"csrf_token": csrf, "reason": "attended clinic 2 Jan"})
    assert answer.status_code == 303
    assert admin.post(url, data={"csrf_token": csrf, "reason": "again"}).status_code == 422
    with clinic.runtime.sessions() as session:
        closed = session.get_one(FailsafeItem, item.id)
        assert closed.closed_at is not None and closed.close_reason == "attended clinic 2 Jan"
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.action.like("failsafe.%"))
        ).all()
        assert {e.action for e in events} >= {"failsafe.view", "failsafe.close"}
        close_event = next(e for e in events if e.action == "failsafe.close")
        assert close_event.case_pk == case and close_event.detail["reason"].startswith("attended")
    assert _refresh(clinic)[(FailsafeKind.REFERRAL_NO_OUTCOME, f"case:{case}")].closed_at
    assert "attended clinic" not in admin.get("/failsafe").text  # closed: off the open list
    assert "attended clinic" in admin.get("/failsafe?closed=true").text


def test_the_cli_writes_csv_and_closes_with_a_reason(clinic: Clinic, today: str) -> None:
    _scene(clinic, today)
    env = dict(
        os.environ,
        EYESCREEN_DATA_DIR=str(clinic.settings.data_path),
        EYESCREEN_DATABASE_URL=clinic.settings.effective_database_url,
        EYESCREEN_SITE=SITE,
        EYESCREEN_TURNAROUND_HOURS="0.0002",
        EYESCREEN_FAILSAFE_NOT_IMAGED_AFTER_HOURS="0",
        EYESCREEN_REFERRAL_OUTCOME_DAYS="0",
    )
    listing = eyescreen("failsafe", "--date", today, env=env)
    assert listing.returncode == 0, listing.stderr
    rows = list(csv.DictReader(io.StringIO(listing.stdout)))
    assert {row["kind"] for row in rows} == {k.value for k in FailsafeKind}
    never = next(row for row in rows if row["kind"] == "not_imaged")
    assert never["patient_id"] == "NEVER-CAME" and never["day"] == today
    summary = eyescreen("failsafe", "--summary", env=env)
    assert summary.returncode == 0, summary.stderr
    [counts] = list(csv.DictReader(io.StringIO(summary.stdout)))
    assert (counts["expected"], counts["imaged"], counts["resulted"], counts["delivered"]) == (
        "2",
        "2",
        "1",
        "0",
    )
    refused = eyescreen("failsafe", "close", never["id"], "--reason", "", env=env)
    assert refused.returncode != 0 and "needs a reason" in refused.stderr
    done = eyescreen("failsafe", "close", never["id"], "--reason", "moved away", env=env)
    assert done.returncode == 0, done.stderr
    rest = list(csv.DictReader(io.StringIO(eyescreen("failsafe", env=env).stdout)))
    assert never["id"] not in {row["id"] for row in rest}
    with clinic.runtime.sessions() as session:
        assert (
            session.scalars(select(AuditEvent).where(AuditEvent.action == "failsafe.close"))
            .one()
            .detail["reason"]
            == "moved away"
        )
