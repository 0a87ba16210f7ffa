"""A visit's images form one screening case, closed when quiet, reopened by a late image."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from sqlalchemy import select, update

from services.db.base import utcnow
from services.db.models import CaseState, Instance, InstanceState, ScreeningCase
from services.db.session import make_engine, make_session_factory, transaction
from services.intake.ingest import IngestService, ReceivedImage
from services.kernel.storage import ContentStore
from services.operations.recovery import close_quiet_cases


def _image(n: int, study: str, eye: str) -> ReceivedImage:
    return ReceivedImage(
        sop_instance_uid=f"1.2.826.0.1.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.5.1",
        study_instance_uid=study,
        series_instance_uid="1.2.826.0.9",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        route="fundus",
        encoded=f"image {n}".encode(),
        patient_id="P1",
        laterality=eye,
    )


def test_both_eyes_one_case_closed_when_quiet_and_reopened_by_a_late_image(
    database_url: str, tmp_path: Path
) -> None:
    sessions = make_session_factory(make_engine(database_url))
    ingest = IngestService(sessions, ContentStore(tmp_path / "images", 0))
    ingest.accept(_image(1, "1.2.826.0.5", "R"))
    ingest.accept(_image(2, "1.2.826.0.5", "L"))
    ingest.accept(_image(3, "1.2.826.0.6", "R"))  # another visit
    quiet = timedelta(minutes=30)
    with transaction(sessions) as session:
        assert len(session.scalars(select(ScreeningCase)).all()) == 2
        close_quiet_cases(session, quiet)  # nothing is quiet yet
        session.execute(update(Instance).values(state=InstanceState.PREDICTED))
        session.execute(update(ScreeningCase).values(last_image_at=utcnow() - 2 * quiet))
    with transaction(sessions) as session:
        close_quiet_cases(session, quiet)
    with sessions() as session:
        cases = session.scalars(select(ScreeningCase).order_by(ScreeningCase.id)).all()
        assert [c.state for c in cases] == [CaseState.CLOSED, CaseState.CLOSED]
        assert len(cases[0].instances) == 2
    ingest.accept(_image(4, "1.2.826.0.5", "L"))  # a late, repeated photo of the left eye
    with sessions() as session:
        first = session.scalars(select(ScreeningCase).order_by(ScreeningCase.id)).first()
        assert first is not None and first.state == CaseState.OPEN and first.closed_at is None
        assert len(first.instances) == 3


def test_a_case_with_an_image_still_being_read_stays_open(
    database_url: str, tmp_path: Path
) -> None:
    sessions = make_session_factory(make_engine(database_url))
    ingest = IngestService(sessions, ContentStore(tmp_path / "images", 0))
    ingest.accept(_image(1, "1.2.826.0.5", "R"))
    with transaction(sessions) as session:
        session.execute(update(ScreeningCase).values(last_image_at=utcnow() - timedelta(hours=1)))
    with transaction(sessions) as session:
        close_quiet_cases(session, timedelta(minutes=30))
    with sessions() as session:
        assert session.scalars(select(ScreeningCase.state)).one() == CaseState.OPEN
