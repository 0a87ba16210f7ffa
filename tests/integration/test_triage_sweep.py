"""The triage sweep (a read whose model result came later) reaches every case it can triage,
however many it cannot: a visit whose every photograph failed stays untriageable for good."""

from __future__ import annotations

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_gateway.photos import photo_to_dataset
from services.clinic import untriaged_cases
from services.clinic.grading import submit_read
from services.db.models import Instance, InstanceState, Person, ScreeningCase
from services.db.session import transaction
from tests.clinic import SITE, Clinic, clinic
from tests.dicom_files import received_dataset
from tests.synthetic_photos import generated_fundus_photos

pytestmark = pytest.mark.integration
__all__ = ["clinic"]  # the fixture

NORMAL = {"R": {"codes": []}, "L": {"codes": []}}


def _read(clinic: Clinic, case_id: int) -> None:
    with transaction(clinic.runtime.sessions) as session:
        grader = session.scalars(select(Person).where(Person.username == "grace")).one()
        submit_read(session, session.get_one(ScreeningCase, case_id), grader, NORMAL, 4000)


def _failed_case(clinic: Clinic) -> int:
    """A visit whose photographs all failed (say, undecodable): read, never triageable."""
    study = generate_uid()
    ids = [
        clinic.ingest[SITE]
        .accept(
            received_dataset(
                photo_to_dataset(photo, patient_id="P-FAIL", laterality=eye, study_uid=study)
            )
        )
        .instance_id
        for photo, eye in zip(generated_fundus_photos(2), "RL", strict=True)
    ]
    with transaction(clinic.runtime.sessions) as session:
        for instance_id in ids:
            session.get_one(Instance, instance_id).state = InstanceState.FAILED
        return session.get_one(Instance, ids[0]).case_pk


def test_cases_that_cannot_be_triaged_do_not_fill_the_sweep(clinic: Clinic) -> None:
    failed = _failed_case(clinic)
    _read(clinic, failed)
    waiting = clinic.case()
    _read(clinic, waiting)  # read directly: nothing triaged it yet, as if the model came later
    with clinic.runtime.sessions() as session:
        assert failed < waiting
        assert untriaged_cases(session, limit=1) == [waiting]
