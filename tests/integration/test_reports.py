"""Case reports: one SR per visit, revisions that reference their predecessor, a verified
revision for an arbitration decision, the PDF, and delivery with DCMTK as the PACS."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_gateway.conformance import SCU_SOP_CLASSES
from dicom_gateway.photos import photo_to_dataset
from dicom_gateway.tls import client_context
from ml.checkpoint import load_checkpoint, save_checkpoint
from ml.predictor import SHIPPED_DIR
from reports.delivery import make_sender
from reports.encapsulated import wrap_pdf
from services.clinic.arbitration import record_decision
from services.db.models import (
    ArbitrationCase,
    AuditEvent,
    DeliveryState,
    Instance,
    OutboxMessage,
    Person,
    Prediction,
    PredictionFinding,
    Report,
    ReportDelivery,
    Role,
)
from services.db.session import transaction
from services.intake.ingest import IngestService
from services.kernel.settings import Settings
from services.operations.recovery import close_quiet_cases
from services.reporting.service import requeue_dead
from tests.conftest import free_port, require_binary, run
from tests.dicom_files import received_dataset
from tests.pki import pki
from tests.service_harness import eyescreen
from tests.sr_checks import assert_valid_dicom, assert_valid_sr
from tests.synthetic_photos import generated_fundus_photos
from worker.runtime import WorkerRuntime

pytestmark = pytest.mark.integration
__all__ = ["pki"]  # the fixture

PHOTOS = (0, 1, 2)  # generated fundus photographs: a report needs a photograph, not a real one


@dataclass
class World:
    settings: Settings
    runtime: WorkerRuntime
    ingest: IngestService
    study_uid: str
    pacs_port: int

    def receive(self, photo: int, eye: str) -> int:
        ds = photo_to_dataset(
            generated_fundus_photos(3)[photo],
            patient_id="RPT-1",
            patient_name="O'Brien^<i>Ann</i>",
            laterality=eye,
            study_uid=self.study_uid,
        )
        result = self.ingest.accept(received_dataset(ds))
        return result.instance_id

    def read(self, instance_id: int) -> None:
        [outcome] = self.runtime.inference().infer([instance_id])
        assert outcome.prediction_id is not None, outcome.error

    def case_id(self) -> int:
        with self.runtime.sessions() as session:
            return session.scalars(select(Instance.case_pk)).first() or 0

    def reports(self) -> list[Report]:
        with self.runtime.sessions() as session:
            rows = session.scalars(select(Report).order_by(Report.id)).all()
            for row in rows:
                _ = row.predictions
            return list(rows)

    def sr_file(self, report: Report, folder: Path) -> Path:
        path = folder / f"{report.id}.dcm"
        path.write_bytes(self.runtime.report_store.read(report.sha256))
        return path


@pytest.fixture
def world(database_url: str, tmp_path: Path) -> Iterator[World]:
    pacs_port = free_port()
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        sr_destinations=f"PACS@127.0.0.1:{pacs_port}",  # type: ignore[arg-type]
        sr_delivery_max_attempts=3,
        sr_retry_base_s=0.2,
    )
    settings.ensure_dirs()
    runtime = WorkerRuntime(settings, publish=lambda name, args: None)
    yield World(
        settings,
        runtime,
        IngestService(runtime.sessions, runtime.images),
        generate_uid(),
        pacs_port,
    )
    runtime.sessions.kw["bind"].dispose()


def test_one_report_per_case_revised_by_a_late_image_and_by_the_panel(
    world: World, tmp_path: Path
) -> None:
    right, left = world.receive(PHOTOS[0], "R"), world.receive(PHOTOS[1], "L")
    world.read(right)
    case = world.case_id()
    assert world.runtime.reports().build_case(case) == ()  # the left eye is still unread
    world.read(left)
    assert len(world.runtime.reports().build_case(case)) == 1  # one delivery: one destination
    [first] = world.reports()
    assert len(first.predictions) == 2 and first.predecessor_pk is None
    sr = assert_valid_sr(world.sr_file(first, tmp_path))
    assert sr.SOPClassUID in SCU_SOP_CLASSES
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 2 * 3  # per eye: level 1, level 2, summary
    with world.runtime.sessions() as session:
        sent = set(session.scalars(select(Instance.sop_instance_uid)))
    evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    referenced = {ref.ReferencedSOPInstanceUID for s in evidence for ref in s.ReferencedSOPSequence}
    assert referenced == sent
    dump = run(["/usr/bin/dsrdump", str(world.sr_file(first, tmp_path))]).stdout
    assert "Right" in dump and "Left" in dump

    late = world.receive(PHOTOS[2], "L")  # a repeat photo of the left eye, same visit
    world.read(late)
    world.runtime.reports().build_case(case)
    first, second = world.reports()
    assert second.predecessor_pk == first.id and len(second.predictions) == 3
    revised = assert_valid_sr(world.sr_file(second, tmp_path))
    predecessor = revised.PredecessorDocumentsSequence[0].ReferencedSeriesSequence[0]
    assert predecessor.ReferencedSOPSequence[0].ReferencedSOPInstanceUID == first.sop_instance_uid
    assert revised.VerificationFlag == "UNVERIFIED"

    with transaction(world.runtime.sessions) as session:
        arbiter = Person(username="panel1", display_name="Senior^Sam", role=Role.ARBITER)
        arbitration = ArbitrationCase(case_pk=case, reason="model and grader disagree")
        session.add_all([arbiter, arbitration])
        session.flush()
        record_decision(session, arbitration, arbiter, {"F.GLAU": True, "F.LENS": False}, True)
    world.runtime.reports().build_case(case)
    assert world.runtime.reports().build_case(case) == ()  # same content: nothing new
    *_, third = world.reports()
    assert third.verified and third.predecessor_pk == second.id and third.decision_pk
    verified = assert_valid_sr(world.sr_file(third, tmp_path))
    assert verified.VerificationFlag == "VERIFIED"
    assert verified.VerifyingObserverSequence[0].VerifyingObserverName == "Senior^Sam"
    observers = verified.content.get_observer_contexts()
    assert any(str(o.observer_type.value) == "121006" for o in observers)  # a person observer
    assert "Senior^Sam" in run(["/usr/bin/dsrdump", str(world.sr_file(third, tmp_path))]).stdout


def test_pdf_report_reads_as_text_and_wraps_as_valid_dicom(world: World, tmp_path: Path) -> None:
    require_binary("/usr/bin/pdftoppm")
    world.read(world.receive(PHOTOS[0], "R"))
    world.runtime.reports().build_case(world.case_id())
    [report] = world.reports()
    assert report.pdf_sha256 is None  # rendered once the visit is over: it never delays an SR
    with transaction(world.runtime.sessions) as session:
        render = close_quiet_cases(session, timedelta(0), render_pdfs=True)
        assert [m.args for m in session.scalars(select(OutboxMessage))][-1] == [report.id]
    assert len(render) == 1
    world.runtime.explain_report(report.id)
    world.runtime.reports().render_pdf(report.id)
    [report] = world.reports()
    assert report.pdf_sha256
    pdf = world.runtime.report_store.read(report.pdf_sha256)
    (tmp_path / "case.pdf").write_bytes(pdf)
    page = run(
        [
            "/usr/bin/pdftoppm",
            "-png",
            "-r",
            "60",
            "-f",
            "1",
            "-l",
            "1",
            str(tmp_path / "case.pdf"),
            str(tmp_path / "page"),
        ]
    )
    assert page.returncode == 0 and (tmp_path / "page-1.png").stat().st_size > 10_000
    text = run(["/usr/bin/pdftotext", "-layout", str(tmp_path / "case.pdf"), "-"]).stdout
    assert "O'Brien <i>Ann</i>" in text  # markup characters printed, not interpreted
    assert "Right eye" in text and "RPT-1" in text
    with world.runtime.sessions() as session:
        source = world.runtime.images.read(session.scalars(select(Instance.sha256)).one())
    wrapped = tmp_path / "pdf.dcm"
    wrapped.write_bytes(wrap_pdf(pdf, source))
    assert_valid_dicom(wrapped)
    assert dcmread(wrapped).EncapsulatedDocument[: len(pdf)] == pdf
    assert dcmread(wrapped).SOPClassUID in SCU_SOP_CLASSES  # the conformance statement lists it


def test_a_class_the_model_cannot_assess_says_so_in_the_sr_and_the_pdf(
    database_url: str, tmp_path: Path
) -> None:
    """Checkpoint -> prediction -> SR (dciodvfy, dsrdump, highdicom) -> PDF: "not assessed",
    never "Absent", for a class below the training minimum."""
    require_binary("/usr/bin/pdftotext")
    meta, model = load_checkpoint(SHIPPED_DIR / "fundus.pt")
    meta["assessment"] = {"min_positive": 30, "not_assessed": ["F.VRD.OPT", "F.VRD.RDET"]}
    meta["operating_point"] = {"scale": "calibrated", "target_sensitivity": 0.95}
    meta["thresholds"] = {k: v for k, v in meta["thresholds"].items() if k != "F.VRD.OPT"}
    meta["calibration"] = {"temperatures": dict.fromkeys(meta["thresholds"], 1.5)}
    checkpoint = tmp_path / "fundus-not-assessed.pt"
    save_checkpoint(checkpoint, meta, model)
    settings = Settings(
        data_dir=tmp_path / "var", database_url=database_url, fundus_checkpoint=checkpoint
    )
    settings.ensure_dirs()
    runtime = WorkerRuntime(settings, publish=lambda name, args: None)
    world = World(
        settings, runtime, IngestService(runtime.sessions, runtime.images), generate_uid(), 0
    )
    world.read(world.receive(PHOTOS[1], "R"))
    with runtime.sessions() as session:
        [finding] = session.scalars(
            select(PredictionFinding).where(PredictionFinding.code == "F.VRD.OPT")
        ).all()
        assert finding.positive is None and finding.threshold is None
        prediction = session.scalars(select(Prediction)).one()
        assert "F.VRD.OPT" not in prediction.thresholds
        assert prediction.provenance["probability_scale"] == "calibrated"
    runtime.reports().build_case(world.case_id())
    [report] = world.reports()
    path = world.sr_file(report, tmp_path)
    sr = assert_valid_sr(path)
    evaluations = {
        item.name.meaning: item.value.meaning
        for group in sr.content.get_image_measurement_groups()
        for item in group.get_qualitative_evaluations()
    }
    assert evaluations["Optic nerve disease"] == "Not assessed by this model"
    assert evaluations["Retinal detachment"] == "Not assessed by this model"
    assert evaluations["Glaucoma"] in {"Present", "Absent"}
    dump = run(["/usr/bin/dsrdump", str(path)]).stdout
    assert "Not assessed by this model" in dump and "probability-scale=calibrated" in dump
    assert "Probability of Optic nerve disease" not in dump  # no number to misread
    runtime.reports().render_pdf(report.id)
    [report] = world.reports()
    assert report.pdf_sha256
    (tmp_path / "case.pdf").write_bytes(runtime.report_store.read(report.pdf_sha256))
    text = run(["/usr/bin/pdftotext", str(tmp_path / "case.pdf"), "-"]).stdout
    assert "Not assessed by this model" in " ".join(text.split())
    assert "Optic nerve disease" in text and "calibrated probabilities" in " ".join(text.split())
    runtime.sessions.kw["bind"].dispose()


@pytest.fixture
def failing_pacs(tmp_path: Path) -> Iterator[int]:
    """DCMTK dcmqrscp as an archive whose 1 kB study quota makes it answer 0xA700."""
    require_binary("/usr/bin/dcmqrscp")
    port, db = free_port(), tmp_path / "archive"
    db.mkdir()
    config = tmp_path / "dcmqrscp.cfg"
    config.write_text(
        f"NetworkTCPPort = {port}\nMaxPDUSize = 16384\nMaxAssociations = 4\n"
        "HostTable BEGIN\nHostTable END\nVendorTable BEGIN\nVendorTable END\n"
        f"AETable BEGIN\nPACS {db} RW (10, 1kb) ANY\nAETable END\n"
    )
    proc = subprocess.Popen(["/usr/bin/dcmqrscp", "-c", str(config)], env={"TCP_NODELAY": "1"})
    echo = ["/usr/bin/echoscu", "-aec", "PACS", "127.0.0.1", str(port)]
    deadline = time.monotonic() + 20
    while run(echo).returncode != 0 and time.monotonic() < deadline:
        time.sleep(0.2)
    yield port
    proc.terminate()
    proc.wait(10)


def test_failure_status_is_retried_then_dead_lettered_then_resent(
    world: World, failing_pacs: int, tmp_path: Path
) -> None:
    world.read(world.receive(PHOTOS[0], "R"))
    assert len(world.runtime.reports().build_case(world.case_id())) == 1
    with world.runtime.sessions() as session:
        delivery = session.scalars(select(ReportDelivery)).one()
        delivery.destination = f"PACS@127.0.0.1:{failing_pacs}"
        session.commit()
        delivery_id = delivery.id
    send = make_sender("EYESCREEN")
    failures = []  # the real attempts; answers during a backoff are kept apart
    backoffs = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        outcome = world.runtime.reports().deliver(delivery_id, send)
        if outcome.error is None and outcome.state == DeliveryState.PENDING:
            backoffs.append(outcome)  # asked too early: nothing sent, told how long to wait
            time.sleep(outcome.retry_in_s or 0)
            continue
        failures.append(outcome)
        if outcome.state == DeliveryState.DEAD:
            break
        early = world.runtime.reports().deliver(delivery_id, send)  # straight away: backing off
        assert early.state == DeliveryState.PENDING and early.error is None and early.retry_in_s
        backoffs.append(early)
    assert [o.state for o in failures] == [
        DeliveryState.PENDING,
        DeliveryState.PENDING,
        DeliveryState.DEAD,
    ]
    delays = [o.retry_in_s for o in failures[:2]]
    assert delays[0] is not None and delays[1] is not None and delays[1] > delays[0]
    assert all(o.retry_in_s and o.retry_in_s <= delays[1] for o in backoffs)
    with world.runtime.sessions() as session:
        dead = session.get_one(ReportDelivery, delivery_id)
        assert dead.last_status == 0xA700 and "A700" in (dead.last_error or "")
    listing = eyescreen("reports", "list", "--state", "dead", env=_env(world))
    assert listing.returncode == 0 and f"{delivery_id:>6}" in listing.stdout, listing.stderr

    # The operator fixes the archive and re-sends: a working PACS this time.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    storescp = subprocess.Popen(
        ["/usr/bin/storescp", "-aet", "PACS", "-od", str(inbox), str(world.pacs_port)],
        env={"TCP_NODELAY": "1"},
    )
    try:
        with transaction(world.runtime.sessions) as session:
            session.get_one(
                ReportDelivery, delivery_id
            ).destination = f"PACS@127.0.0.1:{world.pacs_port}"
        retried = eyescreen("reports", "retry", str(delivery_id), env=_env(world))
        assert retried.returncode == 0 and "1 delivery" in retried.stdout, retried.stderr
        assert world.runtime.reports().deliver(delivery_id, send).state == DeliveryState.DELIVERED
        assert len(list(inbox.iterdir())) == 1
    finally:
        storescp.terminate()
        storescp.wait(10)


def _env(world: World) -> dict[str, str]:
    return dict(
        os.environ,
        EYESCREEN_DATA_DIR=str(world.settings.data_path),
        EYESCREEN_DATABASE_URL=world.settings.effective_database_url,
    )


def test_requeue_dead_only_touches_dead_deliveries(world: World) -> None:
    world.read(world.receive(PHOTOS[0], "R"))
    world.runtime.reports().build_case(world.case_id())
    with transaction(world.runtime.sessions) as session:
        assert requeue_dead(session) == []


def test_pdf_export_renders_an_open_case_on_demand_and_is_audited(
    world: World, tmp_path: Path
) -> None:
    world.read(world.receive(PHOTOS[0], "R"))
    world.runtime.reports().build_case(world.case_id())
    out = tmp_path / "exported.pdf"
    result = eyescreen("reports", "pdf", str(world.case_id()), "-o", str(out), env=_env(world))
    assert result.returncode == 0, result.stderr
    assert out.read_bytes().startswith(b"%PDF")
    with world.runtime.sessions() as session:
        audit = session.scalars(select(AuditEvent)).one()
    assert audit.action == "report.export_pdf" and audit.case_pk == world.case_id()


def test_delivery_over_dicom_tls_to_dcmtk(world: World, pki: Path, tmp_path: Path) -> None:
    """storescp +tls as a PACS that requires TLS: a +tls destination gets the SR, its certificate
    checked against our CA setting; the same PACS without +tls is a failed attempt."""
    world.read(world.receive(PHOTOS[0], "R"))
    world.runtime.reports().build_case(world.case_id())
    port, inbox = free_port(), tmp_path / "tls-inbox"
    inbox.mkdir()
    storescp = subprocess.Popen(
        [
            "/usr/bin/storescp",
            "-aet",
            "PACS",
            "+tls",
            str(pki / "server.key"),
            str(pki / "server.pem"),
            "+cf",
            str(pki / "ca.pem"),
            "-od",
            str(inbox),
            str(port),
        ],
        env={"TCP_NODELAY": "1"},
    )
    try:
        time.sleep(0.5)
        settings = world.settings.model_copy(
            update={
                "sr_tls_ca": pki / "ca.pem",
                "sr_tls_certificate": pki / "client.pem",
                "sr_tls_private_key": pki / "client.key",
            }
        )
        send = make_sender("EYESCREEN", client_context(settings))
        with transaction(world.runtime.sessions) as session:
            delivery = session.scalars(select(ReportDelivery)).one()
            delivery.destination = f"PACS@127.0.0.1:{port}"  # plain TCP to a TLS port
            delivery_id = delivery.id
        failed = world.runtime.reports().deliver(delivery_id, send)
        assert failed.state == DeliveryState.PENDING
        time.sleep(failed.retry_in_s or 0)  # its backoff
        with transaction(world.runtime.sessions) as session:
            session.get_one(ReportDelivery, delivery_id).destination = f"PACS@127.0.0.1:{port}+tls"
        outcome = world.runtime.reports().deliver(delivery_id, send)
        assert outcome.state == DeliveryState.DELIVERED, outcome.error
        assert len(list(inbox.iterdir())) == 1
    finally:
        storescp.terminate()
        storescp.wait(10)
