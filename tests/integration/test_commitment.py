"""Storage Commitment and ask-before-resend against a real PACS: Orthanc (Debian's package)
commits what we stored and sends its N-EVENT-REPORT to the gateway on an association of its
own; a delivery in doubt is looked up by C-FIND before anything is sent again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from sqlalchemy import select

from dicom_gateway.commitment import STORAGE_COMMITMENT_INSTANCE
from dicom_gateway.conformance import STORAGE_COMMITMENT_SOP_CLASS
from dicom_gateway.photos import photo_to_dataset
from eyescreen.status import collect_status
from services.clinic.dashboard import health
from services.db.base import utcnow
from services.db.models import DeliveryState, Instance, Report, ReportDelivery
from services.db.session import transaction
from services.intake.ingest import IngestService
from services.kernel.settings import Settings
from services.kernel.task_names import DELIVER_TASK
from tests.conftest import require_binary
from tests.dicom_files import received_dataset
from tests.gateway_harness import Gateway
from tests.orthanc_peer import ORTHANC, Orthanc
from tests.synthetic_photos import generated_fundus_photos
from worker.runtime import WorkerRuntime

pytestmark = pytest.mark.integration


@dataclass
class Site:
    gateway: Gateway
    pacs: Orthanc
    runtime: WorkerRuntime

    def report(self, patient: str) -> tuple[int, str]:
        """A read photograph's report, built: its delivery id and SR SOP Instance UID."""
        ds = photo_to_dataset(generated_fundus_photos(1)[0], patient_id=patient)
        ingest = IngestService(self.runtime.sessions, self.runtime.images)
        instance_id = ingest.accept(received_dataset(ds)).instance_id
        [outcome] = self.runtime.inference().infer([instance_id])
        assert outcome.prediction_id is not None, outcome.error
        with self.runtime.sessions() as session:
            case_id = session.get_one(Instance, instance_id).case_pk
        self.runtime.reports().build_case(case_id)
        with self.runtime.sessions() as session:
            delivery, uid = session.execute(
                select(ReportDelivery.id, Report.sop_instance_uid)
                .join(Report)
                .where(Report.case_pk == case_id)
            ).one()
        return delivery, uid

    def deliver(self, delivery_id: int) -> DeliveryState:
        reports = self.runtime.reports()
        return reports.deliver(delivery_id, self.runtime.sender(), self.runtime.asker()).state

    def delivery(self, delivery_id: int) -> ReportDelivery:
        with self.runtime.sessions() as session:
            return session.get_one(ReportDelivery, delivery_id)

    def wait_committed(self, delivery_id: int, timeout: float = 20) -> ReportDelivery:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            row = self.delivery(delivery_id)
            if row.committed_at is not None or row.state != DeliveryState.DELIVERED:
                return row
            time.sleep(0.2)
        pytest.fail(f"no commitment result in {timeout} s: {self.pacs.log.read_text()[-2000:]}")


@pytest.fixture
def site(database_url: str, tmp_path: Path) -> Iterator[Site]:
    require_binary(ORTHANC)
    gateway = Gateway(database_url, tmp_path / "var")
    pacs = Orthanc(tmp_path / "orthanc", gateway.settings.ae_title, gateway.port)
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        sr_destinations=pacs.destination,  # type: ignore[arg-type]
        sr_retry_base_s=0.01,
    )
    runtime = WorkerRuntime(settings, publish=lambda name, args: None)
    try:
        yield Site(gateway, pacs, runtime)
    finally:
        pacs.stop()
        gateway.server.shutdown()
        runtime.sessions.kw["bind"].dispose()


def test_orthanc_commits_a_delivered_report_through_the_gateway(site: Site) -> None:
    delivery_id, uid = site.report("SC-1")
    assert site.deliver(delivery_id) == DeliveryState.DELIVERED
    asked = site.delivery(delivery_id)
    assert asked.commitment_uid and asked.commitment_requested_at  # committed maybe already
    committed = site.wait_committed(delivery_id)
    assert committed.state == DeliveryState.DELIVERED and committed.committed_at is not None
    assert site.pacs.received() == [uid]
    assert collect_status(site.runtime.settings)["storage commitment"] == {
        "committed": 1,
        "uncommitted": 0,
        "not asked": 0,
        "in doubt": 0,
    }


def test_a_report_the_pacs_does_not_commit_is_sent_again(site: Site) -> None:
    """Orthanc answers a commitment request for an object it does not hold with a failure
    (N-EVENT-REPORT type 2, to the gateway): the delivery is pending again, queued, re-sent."""
    delivery_id, uid = site.report("SC-2")
    transaction_uid = generate_uid()
    with transaction(site.runtime.sessions) as session:  # as if stored, then lost by the PACS
        row = session.get_one(ReportDelivery, delivery_id)
        row.state, row.attempts, row.commitment_uid = DeliveryState.DELIVERED, 1, transaction_uid
        row.commitment_requested_at = utcnow()
    with site.runtime.sessions() as session:  # the dashboard and status show it waiting
        assert health(session).deliveries_uncommitted == 1
    assert collect_status(site.runtime.settings)["storage commitment"]["uncommitted"] == 1
    _request_commitment(site.pacs, transaction_uid, uid)
    failed = site.wait_committed(delivery_id)
    assert failed.state == DeliveryState.PENDING and failed.committed_at is None
    assert "commit" in (failed.last_error or "")
    deadline = time.monotonic() + 5  # queued by the gateway right after it recorded it
    while (DELIVER_TASK.value, [delivery_id]) not in site.gateway.published:
        assert time.monotonic() < deadline, site.gateway.published
        time.sleep(0.05)
    assert site.deliver(delivery_id) == DeliveryState.DELIVERED
    assert site.wait_committed(delivery_id).committed_at is not None
    assert site.pacs.received() == [uid]


def test_a_delivery_in_doubt_is_looked_up_not_sent_again(site: Site) -> None:
    """The C-STORE reached Orthanc but its answer was never recorded (the worker died
    mid-delivery): C-FIND finds the SR, so it is delivered without a second C-STORE; one the
    PACS does not hold is sent."""
    delivery_id, uid = site.report("SC-3")
    assert site.deliver(delivery_id) == DeliveryState.DELIVERED
    _in_doubt(site, delivery_id)
    assert site.deliver(delivery_id) == DeliveryState.DELIVERED
    assert site.pacs.received() == [uid]  # asked, not sent again

    site.pacs.forget(uid)  # now the PACS really does not have it
    _in_doubt(site, delivery_id)
    assert site.deliver(delivery_id) == DeliveryState.DELIVERED
    assert site.pacs.received() == [uid, uid]
    assert site.wait_committed(delivery_id).committed_at is not None


def _in_doubt(site: Site, delivery_id: int) -> None:
    """What a process killed between its C-STORE and recording the answer leaves behind,
    once the attempt's hold (the inference lease) has run out."""
    with transaction(site.runtime.sessions) as session:
        row = session.get_one(ReportDelivery, delivery_id)
        row.state, row.committed_at, row.commitment_uid = DeliveryState.PENDING, None, None
    site.runtime.reports()._sending([delivery_id])
    with transaction(site.runtime.sessions) as session:
        lease = timedelta(seconds=site.runtime.settings.inference_lease_s + 1)
        session.get_one(ReportDelivery, delivery_id).sending_at = utcnow() - lease


def _request_commitment(pacs: Orthanc, transaction_uid: str, sop_instance_uid: str) -> None:
    ae = AE(ae_title="EYESCREEN")
    ae.add_requested_context(STORAGE_COMMITMENT_SOP_CLASS)
    assoc = ae.associate("127.0.0.1", pacs.port, ae_title=pacs.ae_title)
    assert assoc.is_established
    request = Dataset()
    request.TransactionUID = transaction_uid
    ref = Dataset()
    ref.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.34"
    ref.ReferencedSOPInstanceUID = sop_instance_uid
    request.ReferencedSOPSequence = [ref]
    try:
        status, _ = assoc.send_n_action(
            request, 1, STORAGE_COMMITMENT_SOP_CLASS, STORAGE_COMMITMENT_INSTANCE
        )
        assert status.Status == 0
    finally:
        assoc.release()
