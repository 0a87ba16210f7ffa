"""Results to the hospital's record: each report (and revision) as an ORU^R01 over MLLP to a
real listener (hl7apy's MLLPServer, validating strictly), with the SR delivery's outbox, retry
and dead letter; AE and AR answers are retried, then dead-lettered."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_gateway.photos import photo_to_dataset
from services.clinic.arbitration import record_decision
from services.db.models import (
    ArbitrationCase,
    DeliveryChannel,
    DeliveryState,
    Instance,
    OutboxMessage,
    Person,
    Report,
    ReportDelivery,
    Role,
)
from services.db.session import transaction
from services.intake.ingest import IngestService
from services.kernel.settings import Settings
from services.kernel.task_names import TaskName
from services.reporting.service import requeue_dead
from tests.conftest import free_port
from tests.dicom_files import received_dataset
from tests.mllp_listener import Listener, mllp_listener
from tests.synthetic_photos import generated_fundus_photos
from worker.handlers import HANDLERS
from worker.runtime import WorkerRuntime

pytestmark = pytest.mark.integration


@pytest.fixture
def listener() -> Iterator[Listener]:
    with mllp_listener() as running:
        yield running


@pytest.fixture
def runtime(database_url: str, tmp_path: Path, listener: Listener) -> Iterator[WorkerRuntime]:
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        hl7_destinations=listener.destination,  # type: ignore[arg-type]
        hl7_sending_facility="EYECLINIC",
        sr_delivery_max_attempts=3,
        sr_retry_base_s=0.2,
    )
    settings.ensure_dirs()
    rt = WorkerRuntime(settings, publish=lambda name, args: None)
    yield rt
    rt.sessions.kw["bind"].dispose()


def _screened_case(rt: WorkerRuntime) -> int:
    ingest = IngestService(rt.sessions, rt.images)
    study = generate_uid()
    ids = []
    for photo, eye in zip(generated_fundus_photos(2), "RL", strict=True):
        ds = photo_to_dataset(
            photo, patient_id="HL7-1", patient_name="O'Brien^Ann|x", laterality=eye, study_uid=study
        )
        image = replace(received_dataset(ds), accession_number="ACC-77")
        ids.append(ingest.accept(image).instance_id)
    for outcome in rt.inference().infer(ids):
        assert outcome.prediction_id is not None, outcome.error
    with rt.sessions() as session:
        return int(session.scalars(select(Instance.case_pk)).first() or 0)


def _hl7_deliveries(rt: WorkerRuntime) -> list[ReportDelivery]:
    with rt.sessions() as session:
        return list(
            session.scalars(
                select(ReportDelivery)
                .where(ReportDelivery.channel == DeliveryChannel.HL7)
                .order_by(ReportDelivery.id)
            )
        )


def _deliver(rt: WorkerRuntime, delivery_id: int) -> None:
    """Run the task table's HL7 delivery until it stops asking to be retried."""
    for _ in range(10):
        handled = HANDLERS[TaskName.DELIVER_HL7](rt, delivery_id)
        if handled.retry_in_s is None:
            return
        time.sleep(handled.retry_in_s)


def test_result_and_revision_reach_the_record_and_an_ae_is_retried(
    runtime: WorkerRuntime, listener: Listener
) -> None:
    case = _screened_case(runtime)
    runtime.reports().build_case(case)
    [delivery] = _hl7_deliveries(runtime)
    assert delivery.destination == f"mllp://{listener.destination}"
    with runtime.sessions() as session:
        tasks = {m.task_name for m in session.scalars(select(OutboxMessage))}
        assert TaskName.DELIVER_HL7.value in tasks  # its own task, through the outbox

    listener.codes[:] = ["AE"]  # the engine could not file it this time
    _deliver(runtime, delivery.id)
    [delivery] = _hl7_deliveries(runtime)
    assert delivery.state == DeliveryState.DELIVERED and delivery.attempts == 2
    assert len(listener.received) == 2 and len(listener.accepted) == 1 and not listener.invalid
    first, again = listener.received
    assert first.msh.msh_10.value == again.msh.msh_10.value  # the same message, resent
    oru = listener.accepted[0]
    assert oru.msh.msh_9.to_er7() == "ORU^R01^ORU_R01" and oru.msh.msh_4.value == "EYECLINIC"
    assert oru.msh.msh_5.value == "EHR"
    result = oru.oru_r01_patient_result
    assert result.oru_r01_patient.pid.pid_3.to_er7() == "HL7-1"
    assert result.oru_r01_patient.pid.pid_5.to_er7() == "O'Brien^Ann x"  # no stray delimiter
    order = result.oru_r01_order_observation
    assert order.obr.obr_3.to_er7() == "ACC-77" and order.obr.obr_25.to_er7() == "P"
    observations = [group.obx for group in order.oru_r01_observation]
    assert observations[0].obx_3.to_er7().startswith("REFERRAL^")
    assert observations[0].obx_5.to_er7().split("^")[0] in ("Y", "N")
    with runtime.sessions() as session:
        [report_uid] = session.scalars(select(Report.sop_instance_uid))
    assert observations[-1].obx_5.to_er7() == report_uid  # names the SR sent to the PACS

    with transaction(runtime.sessions) as session:
        arbiter = Person(username="panel1", display_name="Senior^Sam", role=Role.ARBITER)
        arbitration = ArbitrationCase(case_pk=case, reason="model and grader disagree")
        session.add_all([arbiter, arbitration])
        session.flush()
        record_decision(session, arbitration, arbiter, {"F.GLAU": True}, True)
    runtime.reports().build_case(case)
    revision = _hl7_deliveries(runtime)[-1]
    assert revision.id != delivery.id
    _deliver(runtime, revision.id)
    verified = listener.accepted[-1].oru_r01_patient_result.oru_r01_order_observation
    assert verified.obr.obr_25.to_er7() == "F"
    values = [group.obx.obx_5.to_er7() for group in verified.oru_r01_observation]
    assert values[0].startswith("Y^") and any(v.startswith("F.GLAU^") for v in values)


def test_rejections_are_dead_lettered_then_resent_by_the_hl7_task(
    runtime: WorkerRuntime, listener: Listener
) -> None:
    runtime.reports().build_case(_screened_case(runtime))
    [delivery] = _hl7_deliveries(runtime)
    listener.codes[:] = ["AR", "AR", "AR"]
    _deliver(runtime, delivery.id)
    [dead] = _hl7_deliveries(runtime)
    assert dead.state == DeliveryState.DEAD and dead.attempts == 3
    assert "answered AR Patient not found" in (dead.last_error or "")
    assert not listener.accepted
    with transaction(runtime.sessions) as session:
        [message_id] = requeue_dead(session, [dead.id])
        assert session.get_one(OutboxMessage, message_id).task_name == TaskName.DELIVER_HL7
    _deliver(runtime, dead.id)
    assert _hl7_deliveries(runtime)[0].state == DeliveryState.DELIVERED
    assert len(listener.accepted) == 1


def test_an_unreachable_record_is_retried_not_lost(database_url: str, tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        hl7_destinations=f"127.0.0.1:{free_port()}",  # type: ignore[arg-type]
    )
    settings.ensure_dirs()
    rt = WorkerRuntime(settings, publish=lambda name, args: None)
    try:
        rt.reports().build_case(_screened_case(rt))
        [delivery] = _hl7_deliveries(rt)
        outcome = rt.reports().deliver(delivery.id, rt.hl7_sender())
        assert outcome.state == DeliveryState.PENDING and outcome.retry_in_s
        assert "ConnectionRefusedError" in (outcome.error or "")
    finally:
        rt.sessions.kw["bind"].dispose()
