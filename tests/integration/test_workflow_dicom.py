"""The eye-care workflow on the wire: the worklist SCU against DCMTK's wlmscpfs and Orthanc's
ModalityWorklists plugin, the MPPS SCP against pynetdicom's SCU, images by DCMTK's storescu."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import select

from dicom_gateway.conformance import MPPS_SOP_CLASS
from dicom_gateway.worklist import WorklistUnavailable, fetch_into, query_worklist
from services.db.models import (
    CaseState,
    ExpectedVisit,
    PerformedStep,
    ScreeningCase,
    StepStatus,
)
from services.kernel.settings import DicomNode
from services.workflow import match_visits, unmatched_cases
from tests.conftest import free_port
from tests.dicom_files import write_photo_dicom
from tests.gateway_harness import Gateway
from tests.worklist_peers import Scheduled, orthanc_worklists, wlmscpfs, write_worklist_file

pytestmark = pytest.mark.integration

# One day for the whole module, passed everywhere a day is asked: a run that crosses midnight
# (CI's did) must not query tomorrow's worklist for today's appointments.
TODAY = date.today().strftime("%Y%m%d")


def _photo(
    photo: Path, target: Path, patient_id: str, accession: str = "", study: str = ""
) -> Dataset:
    ds = write_photo_dicom(photo, target, patient_id=patient_id, study_uid=study or None)
    ds.AccessionNumber = accession
    ds.StudyDate = TODAY
    ds.save_as(target, enforce_file_format=True)
    return ds


@pytest.mark.parametrize("peer", ["wlmscpfs", "orthanc"])
def test_worklist_fetch_keeps_expected_visits_and_matches_arrivals(
    peer: str, database_url: str, fundus_photo: Path, tmp_path: Path
) -> None:
    server = wlmscpfs if peer == "wlmscpfs" else orthanc_worklists
    called = "RIS" if peer == "wlmscpfs" else "ORTHANCWL"
    with server(tmp_path / peer) as (port, folder):
        write_worklist_file(folder, Scheduled("ACC1", "P1", TODAY))
        write_worklist_file(folder, Scheduled("ACC2", "P2", TODAY, time="1000"))
        write_worklist_file(folder, Scheduled("ACC3", "P3", TODAY, station="OCTROOM"))
        write_worklist_file(folder, Scheduled("ACC4", "P4", TODAY, modality="CT"))
        write_worklist_file(folder, Scheduled("ACC5", "P5", "20200101"))
        gw = Gateway(
            database_url,
            tmp_path / "var",
            site="clinic-a",
            worklist_sources=f"{called}@127.0.0.1:{port}",
            worklist_station_aes="FUNDUSCAM",
        )
        try:
            assert fetch_into(gw.settings, gw.sessions, TODAY) == {
                f"{called}@127.0.0.1:{port}": (2, 0)
            }
            assert fetch_into(gw.settings, gw.sessions, TODAY)[f"{called}@127.0.0.1:{port}"] == (
                0,
                2,
            )
            _photo(fundus_photo, tmp_path / "a.dcm", "P1", accession="ACC1")
            _photo(fundus_photo, tmp_path / "walkin.dcm", "WALKIN")
            assert gw.storescu(tmp_path / "a.dcm", tmp_path / "walkin.dcm") == [0, 0]
            with gw.sessions.begin() as session:
                match_visits(session, "clinic-a")
                visits = {v.accession_number: v for v in session.scalars(select(ExpectedVisit))}
                assert set(visits) == {"ACC1", "ACC2"}
                assert (
                    visits["ACC1"].case_pk is not None and visits["ACC1"].matched_by == "accession"
                )
                assert visits["ACC2"].case_pk is None
                assert visits["ACC1"].procedure_code == "FUNDUS-SCREEN"
                assert visits["ACC1"].station_ae == "FUNDUSCAM" and visits["ACC1"].modality == "OP"
                walk_ins = unmatched_cases(session, "clinic-a", TODAY)
                assert [c.study.patient.patient_id for c in walk_ins] == ["WALKIN"]
        finally:
            gw.server.shutdown()


def test_worklist_procedure_codes_filter_and_unreachable_worklist(tmp_path: Path) -> None:
    with wlmscpfs(tmp_path / "wl") as (port, folder):
        write_worklist_file(folder, Scheduled("ACC1", "P1", TODAY))
        write_worklist_file(folder, Scheduled("ACC2", "P2", TODAY, code="OCT-MACULA"))
        node = DicomNode("RIS", "127.0.0.1", port)
        items = query_worklist(node, "EYESCREEN", TODAY, procedure_codes=["FUNDUS-SCREEN"])
        assert [i.accession_number for i in items] == ["ACC1"]
        assert items[0].patient_id == "P1" and items[0].scheduled_time.startswith("0900")
    with pytest.raises(WorklistUnavailable, match="refused or unreachable"):
        query_worklist(DicomNode("RIS", "127.0.0.1", free_port()), "EYESCREEN", TODAY)


# --- MPPS -------------------------------------------------------------------------------------


def _mpps_association(gw: Gateway):  # type: ignore[no-untyped-def]
    ae = AE(ae_title="FUNDUSCAM")
    ae.add_requested_context(MPPS_SOP_CLASS)
    assoc = ae.associate("127.0.0.1", gw.port, ae_title="EYESCREEN")
    assert assoc.is_established
    return assoc


def _in_progress(study_uid: str, accession: str, patient_id: str) -> Dataset:
    ds = Dataset()
    step = Dataset()
    step.StudyInstanceUID = study_uid
    step.AccessionNumber = accession
    ds.ScheduledStepAttributesSequence = Sequence([step])
    ds.PatientID = patient_id
    ds.PatientName = "Screening^Patient"
    ds.Modality = "OP"
    ds.PerformedStationAETitle = "FUNDUSCAM"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedProcedureStepStartDate = TODAY
    ds.PerformedProcedureStepStartTime = "090000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedSeriesSequence = Sequence([])
    return ds


def _completed(image_uids: list[str], status: str = "COMPLETED") -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = TODAY
    ds.PerformedProcedureStepEndTime = "091500"
    series = Dataset()
    series.SeriesInstanceUID = generate_uid()
    series.ReferencedImageSequence = Sequence([])
    for uid in image_uids:
        ref = Dataset()
        ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.77.1.5.1"
        ref.ReferencedSOPInstanceUID = uid
        series.ReferencedImageSequence.append(ref)
    ds.PerformedSeriesSequence = Sequence([series])
    return ds


def test_mpps_completed_closes_the_visit_at_once_and_names_missing_images(
    gateway: Gateway, fundus_photo: Path, tmp_path: Path
) -> None:
    study = generate_uid()
    right = _photo(fundus_photo, tmp_path / "r.dcm", "P1", "ACC9", study)
    left = _photo(fundus_photo, tmp_path / "l.dcm", "P1", "ACC9", study)
    never_sent = generate_uid()
    step_uid = generate_uid()
    assoc = _mpps_association(gateway)
    try:
        status, _ = assoc.send_n_create(_in_progress(study, "ACC9", "P1"), MPPS_SOP_CLASS, step_uid)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_create(_in_progress(study, "ACC9", "P1"), MPPS_SOP_CLASS, step_uid)
        assert status.Status == 0x0111  # the same step created twice
        assert gateway.storescu(tmp_path / "r.dcm", tmp_path / "l.dcm") == [0, 0]
        with gateway.sessions() as session:
            assert session.scalars(select(ScreeningCase)).one().state == CaseState.OPEN
        done = _completed([right.SOPInstanceUID, left.SOPInstanceUID, never_sent])
        status, _ = assoc.send_n_set(done, MPPS_SOP_CLASS, step_uid)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_set(done, MPPS_SOP_CLASS, step_uid)
        assert status.Status == 0x0110  # final: may no longer be updated
        status, _ = assoc.send_n_set(done, MPPS_SOP_CLASS, generate_uid())
        assert status.Status == 0x0112  # never created
    finally:
        assoc.release()
    with gateway.sessions() as session:
        case = session.scalars(select(ScreeningCase)).one()
        assert case.state == CaseState.CLOSED and case.closed_at is not None  # no quiet wait
        step = session.scalars(select(PerformedStep)).one()
        assert step.status == StepStatus.COMPLETED and step.case_pk == case.id
        assert step.missing == [never_sent]
        assert step.calling_ae == "FUNDUSCAM"


def test_mpps_discontinued_keeps_its_reason_and_the_visit_open(
    gateway: Gateway, fundus_photo: Path, tmp_path: Path
) -> None:
    study = generate_uid()
    _photo(fundus_photo, tmp_path / "r.dcm", "P2", "ACC8", study)
    assert gateway.storescu(tmp_path / "r.dcm") == [0]
    step_uid = generate_uid()
    assoc = _mpps_association(gateway)
    try:
        assoc.send_n_create(_in_progress(study, "ACC8", "P2"), MPPS_SOP_CLASS, step_uid)
        stop = _completed([], "DISCONTINUED")
        reason = Dataset()
        reason.CodeValue, reason.CodingSchemeDesignator = "110514", "DCM"
        reason.CodeMeaning = "Incorrect worklist entry selected"
        stop.PerformedProcedureStepDiscontinuationReasonCodeSequence = Sequence([reason])
        status, _ = assoc.send_n_set(stop, MPPS_SOP_CLASS, step_uid)
        assert status.Status == 0x0000
        bad = _in_progress(study, "ACC8", "P2")
        bad.PerformedProcedureStepStatus = "COMPLETED"
        status, _ = assoc.send_n_create(bad, MPPS_SOP_CLASS, generate_uid())
        assert status.Status == 0x0106  # a new step must be IN PROGRESS
    finally:
        assoc.release()
    with gateway.sessions() as session:
        step = session.scalars(select(PerformedStep)).one()
        assert step.status == StepStatus.DISCONTINUED
        assert step.discontinued_reason == "110514 Incorrect worklist entry selected"
        assert session.scalars(select(ScreeningCase)).one().state == CaseState.OPEN


def test_a_step_completed_before_its_images_closes_the_visit_when_they_arrive(
    gateway: Gateway, fundus_photo: Path, tmp_path: Path
) -> None:
    from services.kernel.outbox import OutboxDispatcher
    from services.operations.recovery import workflow_round

    study, step_uid = generate_uid(), generate_uid()
    image = _photo(fundus_photo, tmp_path / "r.dcm", "P3", "ACC7", study)
    assoc = _mpps_association(gateway)
    try:
        assoc.send_n_create(_in_progress(study, "ACC7", "P3"), MPPS_SOP_CLASS, step_uid)
        status, _ = assoc.send_n_set(_completed([image.SOPInstanceUID]), MPPS_SOP_CLASS, step_uid)
        assert status.Status == 0x0000
    finally:
        assoc.release()
    with gateway.sessions() as session:
        step = session.scalars(select(PerformedStep)).one()
        assert step.case_pk is None and step.missing == [image.SOPInstanceUID]
    assert gateway.storescu(tmp_path / "r.dcm") == [0]
    dispatcher = OutboxDispatcher(gateway.sessions, lambda name, args: None)
    workflow_round(gateway.settings, gateway.sessions, dispatcher)  # the sweep's round
    with gateway.sessions() as session:
        step = session.scalars(select(PerformedStep)).one()
        case = session.scalars(select(ScreeningCase)).one()
        assert step.case_pk == case.id and step.missing == []
        assert case.state == CaseState.CLOSED  # at the next sweep, not after the quiet period
