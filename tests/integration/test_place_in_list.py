""" "Case n of N in your list" (issue 21): worklist order, urgent first; counts stop at a cap
so a large backlog does not slow the case page."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from services.clinic import grading
from services.db.models import Person, ScreeningCase
from services.db.session import transaction
from tests.clinic import Clinic, clinic

pytestmark = pytest.mark.integration
__all__ = ["clinic"]  # the fixture


def test_place_in_worklist_order_and_capped(
    clinic: Clinic, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = [clinic.case() for _ in range(4)]
    with transaction(clinic.runtime.sessions) as session:
        session.get_one(ScreeningCase, cases[3]).urgent = True
        grace = session.scalars(select(Person).where(Person.username == "grace")).one()
        places = [grading.place_in_list(session, grace, c) for c in cases]
        assert places == [(2, 4), (3, 4), (4, 4), (1, 4)]
        monkeypatch.setattr(grading, "PLACE_CAP", 2)
        assert grading.place_in_list(session, grace, cases[2]) == (4, 3)  # both past the cap
        session.get_one(ScreeningCase, cases[0]).graded_at = session.get_one(
            ScreeningCase, cases[0]
        ).opened_at
        assert grading.place_in_list(session, grace, cases[0]) is None  # read: no place
