"""Who was eligible and who was excluded before the index test (STARD 2015 item 19, the top
of the flow diagram), from the department's worklist: the patients expected for screening
(``ExpectedVisit`` rows of the export's sites and dates), those photographed without being
expected, and of them those who never reached the index test, each with the reason."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from services.db.models import ExpectedVisit, ScreeningCase, Study
from services.study.eye import EyeRecord
from services.study.records import Filters, pseudonym


@dataclass(frozen=True)
class Enrolment:
    """Patient counts. Every patient expected or photographed is one of: not photographed,
    photographed without an index-test result in the export, or with one (``received``)."""

    expected: int  # on the worklist for a screening visit
    walk_in: int  # photographed without a worklist entry
    not_photographed: int  # expected, no study arrived
    no_index_result: int  # photographed, no model result in the export (or outside its filter)
    received: int  # with an index-test result: the patients of the analysis set

    @property
    def eligible(self) -> int:
        return self.expected + self.walk_in


def enrolment(
    session: Session,
    filters: Filters,
    key: bytes,
    records: Sequence[EyeRecord],
    identified: bool = False,
) -> Enrolment:
    """The enrolment of the export's sites (all when none named) and days, given its analysis
    set. A patient counts once, whatever the number of visits; a matched expected visit is its
    case's patient, an unmatched one the worklist's patient id."""
    first = filters.date_from.strftime("%Y%m%d") if filters.date_from else "00000000"
    last = filters.date_to.strftime("%Y%m%d") if filters.date_to else "99999999"
    expected_query = select(ExpectedVisit).where(
        ExpectedVisit.scheduled_date >= first, ExpectedVisit.scheduled_date <= last
    )
    case_query = select(ScreeningCase).options(
        selectinload(ScreeningCase.study).selectinload(Study.patient)
    )
    if filters.sites:
        expected_query = expected_query.where(ExpectedVisit.site.in_(filters.sites))
        case_query = case_query.where(ScreeningCase.site.in_(filters.sites))
    photographed: dict[int, str] = {}
    for case in session.scalars(case_query):
        if first <= _case_day(case) <= last:
            patient = case.study.patient
            photographed[case.id] = f"{patient.issuer}|{patient.patient_id}"
    expected: set[str] = set()
    for visit in session.scalars(expected_query):
        if visit.case_pk is not None and visit.case_pk in photographed:
            expected.add(photographed[visit.case_pk])
        else:
            expected.add(f"{visit.issuer}|{visit.patient_id}")
    seen = set(photographed.values())
    analysed = {r.patient_key for r in records}
    received = {p for p in seen if (p if identified else pseudonym(key, "patient", p)) in analysed}
    return Enrolment(
        expected=len(expected),
        walk_in=len(seen - expected),
        not_photographed=len(expected - seen),
        no_index_result=len(seen - received),
        received=len(received),
    )


def _case_day(case: ScreeningCase) -> str:
    day = case.study.study_date
    try:
        datetime.strptime(day, "%Y%m%d")
    except ValueError:
        return case.opened_at.strftime("%Y%m%d")
    return day
