"""The analysis set read from the database (``services.study.records.gather``) is the record
the simulation meant: the simulated study written through the real schema (``bench/stats.py``)
and read back, eye by eye, with its reference routes, the ungradable eye's fellow, the unknown
blinding and the times of the index test and the reference."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from bench.stats import simulate
from bench.study_simulation import eye_records
from services.db.models import ScreeningCase
from services.db.session import make_engine, make_session_factory
from services.study.enrolment import Enrolment, enrolment
from services.study.records import EyeRecord, Filters, ReferenceRoute, gather

pytestmark = pytest.mark.integration


def test_gather_reads_back_what_the_simulation_wrote(postgres_url: str) -> None:
    visits = simulate(postgres_url, 160, seed=7)
    expected = {(r.case_key.split("-")[1], r.eye): r for r in eye_records(visits)}
    engine = make_engine(postgres_url)
    try:
        with make_session_factory(engine)() as session:
            records = gather(session, Filters(), b"k" * 32, identified=True)
            enrolled = enrolment(session, Filters(), b"k" * 32, records, identified=True)
            pseudonymous = gather(session, Filters(), b"k" * 32)
            assert enrolment(session, Filters(), b"k" * 32, pseudonymous) == enrolled
    finally:
        engine.dispose()
    assert len(records) == len(expected) == 320
    # the worklist: all but the walk-ins (patients 0 and 97) expected, 5 expected never came
    assert enrolled == Enrolment(
        expected=163, walk_in=2, not_photographed=5, no_index_result=0, received=160
    )
    assert enrolled.eligible == 165
    routes = set()
    for record in records:
        want = expected[(record.patient_key.rsplit("|S", 1)[1], record.eye)]
        routes.add(record.reference_route)
        assert record.reference_route == want.reference_route, (record.case_key, record.eye)
        assert record.reference == want.reference
        assert record.model_gradable == want.model_gradable
        assert record.blind == want.blind  # None stays None: unknown, not "not blinded"
        assert record.inclusion_probability == want.inclusion_probability
        assert record.verification_probability == want.verification_probability
        if record.reference is not None:
            assert record.reference_at is not None and record.index_at is not None
            assert record.reference_at > record.index_at
    # the simulation covers the routes that matter, the fellow of an ungradable eye included
    assert {
        ReferenceRoute.CONCORDANT,
        ReferenceRoute.PANEL_DISCORDANT,
        ReferenceRoute.PANEL_QC,
        ReferenceRoute.PANEL_TRAINEE,
        ReferenceRoute.UNGRADABLE,
    } <= routes
    by_case: dict[str, set[ReferenceRoute]] = {}
    for record in records:
        by_case.setdefault(record.case_key, set()).add(record.reference_route)
    assert {
        ReferenceRoute.UNGRADABLE,
        ReferenceRoute.FELLOW_UNGRADABLE_CONCORDANT,
    } in by_case.values()


def test_a_date_range_selects_the_same_visits_as_reading_the_whole_archive(
    postgres_url: str,
) -> None:
    """The export finds a period's visits by index (bench/growth.py: reading the archive made
    a month's export grow with the archive); it must select exactly the visits the study-date
    rule selects, those without a readable study date falling back on their opening day."""
    simulate(postgres_url, 120, seed=11)
    engine = make_engine(postgres_url)
    try:
        sessions = make_session_factory(engine)
        with sessions.begin() as session:
            cases = session.scalars(select(ScreeningCase).order_by(ScreeningCase.id)).all()
            for number, case in enumerate(cases):
                if number % 5 == 0:
                    case.study.study_date = ""  # missing: the opening day decides
                elif number % 5 == 1:
                    case.study.study_date = "2021-3-4"  # unreadable: the same
                case.opened_at = datetime(2021, 3, 1, 23, 30, tzinfo=UTC) + timedelta(
                    hours=7 * number
                )
        with sessions() as session:
            everything = gather(session, Filters(), b"k" * 32, identified=True)
            for low, high in [(date(2021, 3, 2), date(2021, 3, 9)), (None, date(2021, 3, 5))]:
                window = Filters(date_from=low, date_to=high)
                chosen = gather(session, window, b"k" * 32, identified=True)
                expected = [
                    r
                    for r in everything
                    if (low is None or _day(session, r) >= low) and _day(session, r) <= high
                ]
                assert 0 < len(chosen) < len(everything)
                assert [(r.case_key, r.eye) for r in chosen] == [
                    (r.case_key, r.eye) for r in expected
                ]
    finally:
        engine.dispose()


def _day(session: Session, record: EyeRecord) -> date:
    case = session.get_one(ScreeningCase, int(record.case_key))
    try:
        return datetime.strptime(case.study.study_date, "%Y%m%d").date()
    except ValueError:
        return case.opened_at.astimezone(UTC).date()
