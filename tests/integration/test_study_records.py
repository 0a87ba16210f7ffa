"""The analysis set read from the database (``services.study.records.gather``) is the record
the simulation meant: the simulated study written through the real schema (``bench/stats.py``)
and read back, eye by eye, with its reference routes, the ungradable eye's fellow, the unknown
blinding and the times of the index test and the reference."""

from __future__ import annotations

import pytest

from bench.stats import simulate
from bench.study_simulation import eye_records
from services.db.session import make_engine, make_session_factory
from services.study.enrolment import Enrolment, enrolment
from services.study.records import Filters, ReferenceRoute, gather

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
