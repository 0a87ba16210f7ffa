"""Expected visits: the day's scheduled screening procedures from the Modality Worklist, kept
per site, and matched to the screening cases that arrive.

A visit matches a case of its site by accession number, then Study Instance UID, then patient
id and study date (cameras that do not copy the accession number from the worklist). Fetching
the same worklist again updates the rows it already made (one row per ``visit_key``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import ExpectedVisit, Patient, ScreeningCase, Study

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WorklistItem:
    """One scheduled procedure step as the worklist answered it (translated at the edge)."""

    scheduled_date: str  # DICOM DA
    scheduled_time: str = ""
    accession_number: str = ""
    study_instance_uid: str = ""
    requested_procedure_id: str = ""
    step_id: str = ""
    patient_id: str = ""
    issuer: str = ""
    patient_name: str = ""
    modality: str = ""
    station_ae: str = ""
    procedure_code: str = ""

    @property
    def key(self) -> str:
        """What identifies the item across fetches: the accession number where the department
        gives one, else the study UID, else the step within the patient's day."""
        if self.accession_number:
            return f"acc:{self.accession_number}"
        if self.study_instance_uid:
            return f"study:{self.study_instance_uid}"
        return f"step:{self.patient_id}:{self.scheduled_date}:{self.step_id}"[:96]


def record_worklist(
    session: Session, site: str, source: str, items: Iterable[WorklistItem]
) -> tuple[int, int]:
    """Keep the worklist's items as expected visits of ``site``; returns (new, updated)."""
    new = updated = 0
    now = utcnow()
    for item in items:
        if not item.scheduled_date:
            log.warning("worklist %s: an item without a scheduled date, skipped", source)
            continue
        visit = session.scalar(
            select(ExpectedVisit).where(
                ExpectedVisit.site == site, ExpectedVisit.visit_key == item.key
            )
        )
        if visit is None:
            visit = ExpectedVisit(site=site, visit_key=item.key, first_seen_at=now)
            session.add(visit)
            new += 1
        else:
            updated += 1
        for name in WorklistItem.__dataclass_fields__:
            setattr(visit, name, getattr(item, name))
        visit.source, visit.last_seen_at = source, now
    session.flush()
    return new, updated


def _case_by(session: Session, site: str, *where: object) -> ScreeningCase | None:
    return session.scalars(
        select(ScreeningCase)
        .join(Study, Study.id == ScreeningCase.study_pk)
        .join(Patient, Patient.id == Study.patient_pk)
        .where(ScreeningCase.site == site, *where)  # type: ignore[arg-type]
        .order_by(ScreeningCase.id)
    ).first()


def find_case(session: Session, visit: ExpectedVisit) -> tuple[ScreeningCase, str] | None:
    """The case that came of a visit, and what matched it."""
    if visit.accession_number:
        case = _case_by(session, visit.site, Study.accession_number == visit.accession_number)
        if case is not None:
            return case, "accession"
    if visit.study_instance_uid:
        case = _case_by(session, visit.site, Study.study_instance_uid == visit.study_instance_uid)
        if case is not None:
            return case, "study"
    if visit.patient_id:  # the patient's case of that day (its study date, else its arrival)
        for case in session.scalars(
            select(ScreeningCase)
            .join(Study, Study.id == ScreeningCase.study_pk)
            .join(Patient, Patient.id == Study.patient_pk)
            .where(ScreeningCase.site == visit.site, Patient.patient_id == visit.patient_id)
            .where(Study.study_date.in_([visit.scheduled_date, ""]))
            .order_by(ScreeningCase.id)
        ):
            if case_day(case) == visit.scheduled_date:
                return case, "patient"
    return None


def match_visits(session: Session, site: str | None = None) -> int:
    """Link unmatched expected visits (of a site, or all) to the cases that have arrived."""
    query = select(ExpectedVisit).where(ExpectedVisit.case_pk.is_(None))
    if site is not None:
        query = query.where(ExpectedVisit.site == site)
    matched = 0
    for visit in session.scalars(query.limit(2000)).all():
        found = find_case(session, visit)
        if found is not None:
            visit.case_pk, visit.matched_by = found[0].id, found[1]
            visit.matched_at = utcnow()
            matched += 1
    if matched:
        log.info("matched %d expected visit(s) to their studies", matched)
    return matched


def case_day(case: ScreeningCase) -> str:
    """The day a case belongs to: its study date, else the day it opened."""
    return case.study.study_date or case.opened_at.astimezone().strftime("%Y%m%d")


def cases_of_day(session: Session, site: str, day: str) -> list[ScreeningCase]:
    """The site's screening cases of a day (by study date, else by the day they opened)."""
    cases = session.scalars(
        select(ScreeningCase)
        .join(Study, Study.id == ScreeningCase.study_pk)
        .where(ScreeningCase.site == site, Study.study_date.in_([day, ""]))
        .order_by(ScreeningCase.id)
    ).all()
    return [case for case in cases if case_day(case) == day]


def unmatched_cases(session: Session, site: str, day: str) -> list[ScreeningCase]:
    """Studies that arrived on a day but match no expected visit: walk-ins, or a worklist
    entry the camera did not use (the clinic checks them by hand)."""
    matched = set(
        session.scalars(
            select(ExpectedVisit.case_pk).where(
                ExpectedVisit.site == site, ExpectedVisit.case_pk.is_not(None)
            )
        )
    )
    return [case for case in cases_of_day(session, site, day) if case.id not in matched]
