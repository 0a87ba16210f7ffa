"""The schema. One row per real-world thing; every state change has a timestamp.

Patients, studies and instances mirror the DICOM information model. A screening case is one
patient visit (patient + study). Predictions keep every class probability with the exact model
(weights hash) and thresholds used. Outbox rows carry work to the queue after commit. Reports
and their per-destination deliveries make SR delivery exactly-once and auditable.

Grader reads, arbitration cases and decisions, people and audit events hang off
``screening_case`` and ``instance``; findings are taxonomy codes throughout, so comparing the
model with graders and the panel is a plain join on codes.
"""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship

from services.db.base import Base, BigId, UtcDateTime, utcnow

# Column widths of closed vocabularies defined elsewhere (task names, routes); the unit tests
# check that every member fits.
TASK_NAME_LENGTH = 64
ROUTE_LENGTH = 16


def _enum(cls: type[enum.Enum]) -> Enum:
    # Stored as VARCHAR + CHECK on every backend: adding a value is a plain migration.
    return Enum(cls, native_enum=False, length=24, values_callable=lambda e: [m.value for m in e])


class InstanceState(enum.StrEnum):
    """Where a received image is: waiting to be read, read, or unreadable."""

    RECEIVED = "received"
    PREDICTED = "predicted"
    FAILED = "failed"


class CaseState(enum.StrEnum):
    """A visit is open while images may still come; closed after the quiet period."""

    OPEN = "open"
    CLOSED = "closed"


class DeliveryState(enum.StrEnum):
    """One report's way to one destination: pending (with retries), delivered, dead."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


class DeliveryChannel(enum.StrEnum):
    """How a report reaches a destination: a DICOM SR by C-STORE, or an HL7 v2 ORU^R01 by
    MLLP to the hospital's record (an interface engine)."""

    DICOM = "dicom"
    HL7 = "hl7"


class StepStatus(enum.StrEnum):
    """A Modality Performed Procedure Step's status, as the modality reports it."""

    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"
    DISCONTINUED = "discontinued"


class FailsafeKind(enum.StrEnum):
    """What the failsafe list can hold: each a way a patient can fall through the workflow."""

    NOT_IMAGED = "not_imaged"  # on the worklist, no study arrived
    MISSING_IMAGES = "missing_images"  # the MPPS named images that never arrived
    DISCONTINUED = "discontinued"  # the modality discontinued the acquisition
    NOT_READ_BY_MODEL = "not_read_by_model"  # an image still unread past the turnaround
    NOT_GRADED = "not_graded"  # no grader's read past the turnaround
    REFERRAL_NO_OUTCOME = "referral_no_outcome"  # referred, no outcome recorded
    NOT_DELIVERED = "not_delivered"  # a report to a destination dead or pending too long
    NOT_COMMITTED = "not_committed"  # stored at the PACS, its commitment unanswered too long


class Patient(Base):
    """A patient as the PACS identifies them (PHI: never logged)."""

    __tablename__ = "patient"
    __table_args__ = (UniqueConstraint("patient_id", "issuer"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_id: Mapped[str] = mapped_column(String(64))
    issuer: Mapped[str] = mapped_column(String(64), default="")
    name: Mapped[str] = mapped_column(String(324), default="")
    birth_date: Mapped[str] = mapped_column(String(8), default="")
    sex: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    studies: Mapped[list[Study]] = relationship(back_populates="patient")


class Study(Base):
    """A DICOM study of a patient: the images of one visit."""

    __tablename__ = "study"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    patient_pk: Mapped[int] = mapped_column(ForeignKey("patient.id"), index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    study_date: Mapped[str] = mapped_column(String(8), default="", index=True)  # the export's
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    patient: Mapped[Patient] = relationship(back_populates="studies")


class ScreeningCase(Base):
    """One patient visit: the images of one study, both eyes, screened together."""

    __tablename__ = "screening_case"
    __table_args__ = (
        # The worklist: unread cases of a site, urgent first then oldest; only unread rows.
        Index(
            "ix_screening_case_worklist",
            "site",
            "urgent",
            "opened_at",
            "id",
            postgresql_where=text("graded_at IS NULL"),
            sqlite_where=text("graded_at IS NULL"),
        ),
        # A site's visits of a period (the export, the dashboard) without reading the archive.
        Index("ix_screening_case_site_opened_at", "site", "opened_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    study_pk: Mapped[int] = mapped_column(ForeignKey("study.id"), unique=True)
    state: Mapped[CaseState] = mapped_column(_enum(CaseState), default=CaseState.OPEN)
    referral: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_image_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    site: Mapped[str] = mapped_column(String(64), default="", index=True)
    urgent: Mapped[bool] = mapped_column(Boolean, default=False)
    graded_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)  # 1st read
    # Opening a case for reading leases it to one grader for a while.
    leased_to_pk: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    study: Mapped[Study] = relationship()
    instances: Mapped[list[Instance]] = relationship(back_populates="case")


class Instance(Base):
    """A received image, kept byte for byte in the content-addressed store."""

    __tablename__ = "instance"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_pk: Mapped[int] = mapped_column(ForeignKey("screening_case.id"), index=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    laterality: Mapped[str] = mapped_column(String(4), default="")
    route: Mapped[str] = mapped_column(String(ROUTE_LENGTH))
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigId)
    state: Mapped[InstanceState] = mapped_column(
        _enum(InstanceState), default=InstanceState.RECEIVED, index=True
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    received_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    # A worker reading the image in a batch holds it for a lease; others wait or take over.
    claimed_by: Mapped[str | None] = mapped_column(String(64), nullable=True)
    claimed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    case: Mapped[ScreeningCase] = relationship(back_populates="instances")
    predictions: Mapped[list[Prediction]] = relationship(back_populates="instance")


class ModelVersion(Base):
    """A model the service can run: identified by the sha256 of its checkpoint file."""

    __tablename__ = "model_version"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(32))
    route: Mapped[str] = mapped_column(String(ROUTE_LENGTH))
    weights_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    taxonomy_version: Mapped[str] = mapped_column(String(32))
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ModelActivation(Base):
    """Which model reads a route at a site from when on; the newest row per (route, site) is
    the active one, so the history of deployments and rollbacks is kept."""

    __tablename__ = "model_activation"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    route: Mapped[str] = mapped_column(String(ROUTE_LENGTH))
    site: Mapped[str] = mapped_column(String(64), default="")  # "" = every site
    model_version_pk: Mapped[int] = mapped_column(ForeignKey("model_version.id"))
    activated_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    activated_by: Mapped[str] = mapped_column(String(64), default="")

    model_version: Mapped[ModelVersion] = relationship()


class Prediction(Base):
    """The model's read of one instance. One per (instance, model): re-running is a no-op."""

    __tablename__ = "prediction"
    __table_args__ = (UniqueConstraint("instance_pk", "model_version_pk"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    instance_pk: Mapped[int] = mapped_column(ForeignKey("instance.id"), index=True)
    model_version_pk: Mapped[int] = mapped_column(ForeignKey("model_version.id"))
    probabilities: Mapped[dict[str, float]] = mapped_column(JSON)
    thresholds: Mapped[dict[str, float]] = mapped_column(JSON)
    top3: Mapped[list[str]] = mapped_column(JSON)
    referral: Mapped[bool] = mapped_column(Boolean)
    quality: Mapped[str] = mapped_column(String(32), default="gradable")
    provenance: Mapped[dict[str, Any]] = mapped_column(JSON)
    heatmap_path: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    instance: Mapped[Instance] = relationship(back_populates="predictions")
    model_version: Mapped[ModelVersion] = relationship()
    findings: Mapped[list[PredictionFinding]] = relationship(
        back_populates="prediction", cascade="all, delete-orphan", order_by="PredictionFinding.id"
    )


class PredictionFinding(Base):
    """One taxonomy class of one prediction: probability, threshold and the decision
    (threshold and decision NULL when the model does not assess the class)."""

    __tablename__ = "prediction_finding"
    __table_args__ = (
        UniqueConstraint("prediction_pk", "code"),
        Index("ix_prediction_finding_code_positive", "code", "positive"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    prediction_pk: Mapped[int] = mapped_column(ForeignKey("prediction.id", ondelete="CASCADE"))
    code: Mapped[str] = mapped_column(String(32))
    level: Mapped[int] = mapped_column(Integer)
    probability: Mapped[float] = mapped_column(Float)
    # Both NULL for a class the model does not assess: no threshold, no decision.
    threshold: Mapped[float | None] = mapped_column(Float, nullable=True)
    positive: Mapped[bool | None] = mapped_column(Boolean, nullable=True)

    prediction: Mapped[Prediction] = relationship(back_populates="findings")


class OutboxMessage(Base):
    """Work to hand to the queue, written in the same transaction as the data it is about."""

    __tablename__ = "outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    task_name: Mapped[str] = mapped_column(String(TASK_NAME_LENGTH))
    args: Mapped[list[Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True, index=True)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    # Taken by a worker to do inline (``take``): if that worker dies before marking the row
    # sent, the sweeper publishes it once this is older than the inline lease.
    taken_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    taken_by: Mapped[str | None] = mapped_column(String(64), nullable=True)  # the worker's id


report_prediction = Table(
    "report_prediction",
    Base.metadata,
    Column("report_pk", BigId, ForeignKey("report.id", ondelete="CASCADE"), primary_key=True),
    Column("prediction_pk", BigId, ForeignKey("prediction.id"), primary_key=True),
)


class Report(Base):
    """A DICOM SR about a screening case: every read image of the visit. A re-read (a later
    image, an arbitration decision) makes a new report that points at its predecessor."""

    __tablename__ = "report"
    __table_args__ = (UniqueConstraint("case_pk", "content_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_pk: Mapped[int] = mapped_column(ForeignKey("screening_case.id"), index=True)
    predecessor_pk: Mapped[int | None] = mapped_column(ForeignKey("report.id"), nullable=True)
    decision_pk: Mapped[int | None] = mapped_column(
        ForeignKey("arbitration_decision.id"), nullable=True
    )
    # What the report says (sha256 of e.g. "p:12,13;d:4"; rows from revision 0002 hold the text
    # itself): building the same content twice is a no-op.
    content_key: Mapped[str] = mapped_column(String(512))
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    sha256: Mapped[str] = mapped_column(String(64))
    pdf_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    case: Mapped[ScreeningCase] = relationship()
    predictions: Mapped[list[Prediction]] = relationship(secondary=report_prediction)
    deliveries: Mapped[list[ReportDelivery]] = relationship(back_populates="report")


class ReportDelivery(Base):
    """The delivery of one report to one destination, with its attempts and last status."""

    __tablename__ = "report_delivery"
    __table_args__ = (
        UniqueConstraint("report_pk", "destination"),
        # Stored, commitment asked, no answer yet: a handful among millions delivered.
        Index(
            "ix_report_delivery_uncommitted",
            "commitment_requested_at",
            postgresql_where=text("commitment_requested_at IS NOT NULL AND committed_at IS NULL"),
            sqlite_where=text("commitment_requested_at IS NOT NULL AND committed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    report_pk: Mapped[int] = mapped_column(ForeignKey("report.id"))
    destination: Mapped[str] = mapped_column(String(128))
    state: Mapped[DeliveryState] = mapped_column(
        _enum(DeliveryState), default=DeliveryState.PENDING, index=True
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    next_attempt_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    channel: Mapped[DeliveryChannel] = mapped_column(
        _enum(DeliveryChannel), default=DeliveryChannel.DICOM, server_default="dicom"
    )
    # What an HL7 delivery sends (the ORU^R01 built with the report, in the report store):
    # built once, so every retry sends the same message with the same control id.
    payload_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # An attempt's C-STORE may have reached the PACS and its answer was never recorded (no
    # response, or the process died mid-attempt): ask the PACS before sending again.
    in_doubt: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    sending_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # Storage Commitment (push model): the request's Transaction UID, when it was asked, and
    # when the PACS answered that it keeps the object (N-EVENT-REPORT success).
    commitment_uid: Mapped[str | None] = mapped_column(String(64), nullable=True, index=True)
    commitment_requested_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    committed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    report: Mapped[Report] = relationship(back_populates="deliveries")


class ExpectedVisit(Base):
    """A scheduled screening procedure read from the department's Modality Worklist: who is
    expected at a site on a day, and the screening case that came of it once matched."""

    __tablename__ = "expected_visit"
    __table_args__ = (
        UniqueConstraint("site", "visit_key"),
        Index("ix_expected_visit_site_day", "site", "scheduled_date"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    site: Mapped[str] = mapped_column(String(64), default="")
    # accession, else study UID, else scheduled step id: the same item fetched again is one row
    visit_key: Mapped[str] = mapped_column(String(96))
    scheduled_date: Mapped[str] = mapped_column(String(8))  # DICOM DA
    scheduled_time: Mapped[str] = mapped_column(String(16), default="")  # DICOM TM
    accession_number: Mapped[str] = mapped_column(String(16), default="", index=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    requested_procedure_id: Mapped[str] = mapped_column(String(16), default="")
    step_id: Mapped[str] = mapped_column(String(16), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")  # PHI: never logged
    issuer: Mapped[str] = mapped_column(String(64), default="")
    patient_name: Mapped[str] = mapped_column(String(324), default="")
    modality: Mapped[str] = mapped_column(String(16), default="")
    station_ae: Mapped[str] = mapped_column(String(16), default="")
    procedure_code: Mapped[str] = mapped_column(String(64), default="")
    source: Mapped[str] = mapped_column(String(128), default="")  # the worklist it came from
    first_seen_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    case_pk: Mapped[int | None] = mapped_column(
        ForeignKey("screening_case.id"), nullable=True, index=True
    )
    matched_by: Mapped[str] = mapped_column(String(16), default="")  # accession, study, patient
    matched_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)

    case: Mapped[ScreeningCase | None] = relationship()


class PerformedStep(Base):
    """A Modality Performed Procedure Step the camera reported (N-CREATE, then N-SET): when it
    is completed its visit closes at once and its referenced images are checked."""

    __tablename__ = "performed_step"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    sop_instance_uid: Mapped[str] = mapped_column(String(64), unique=True)
    status: Mapped[StepStatus] = mapped_column(_enum(StepStatus), default=StepStatus.IN_PROGRESS)
    calling_ae: Mapped[str] = mapped_column(String(16), default="")
    study_instance_uid: Mapped[str] = mapped_column(String(64), default="", index=True)
    accession_number: Mapped[str] = mapped_column(String(16), default="")
    patient_id: Mapped[str] = mapped_column(String(64), default="")  # PHI: never logged
    referenced: Mapped[list[str]] = mapped_column(JSON, default=list)  # SOP Instance UIDs
    missing: Mapped[list[str]] = mapped_column(JSON, default=list)  # referenced, not received
    discontinued_reason: Mapped[str] = mapped_column(String(128), default="")
    case_pk: Mapped[int | None] = mapped_column(
        ForeignKey("screening_case.id"), nullable=True, index=True
    )
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)


class FailsafeItem(Base):
    """One patient who may have fallen through (never imaged, unread, unreported, referred
    without outcome): it stays on the list until a person closes it with a reason, even once
    the condition clears (``resolved_at``), so nobody leaves the list unseen."""

    __tablename__ = "failsafe_item"
    __table_args__ = (
        UniqueConstraint("kind", "subject"),
        Index("ix_failsafe_item_site_day", "site", "day"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    site: Mapped[str] = mapped_column(String(64), default="")
    day: Mapped[str] = mapped_column(String(8))  # the visit's day, DICOM DA
    kind: Mapped[FailsafeKind] = mapped_column(_enum(FailsafeKind))
    subject: Mapped[str] = mapped_column(String(64))  # e.g. "visit:12", "delivery:7"
    visit_pk: Mapped[int | None] = mapped_column(ForeignKey("expected_visit.id"), nullable=True)
    case_pk: Mapped[int | None] = mapped_column(ForeignKey("screening_case.id"), nullable=True)
    detail: Mapped[str] = mapped_column(Text, default="")  # what is wrong, no patient data
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True, index=True)
    closed_by_pk: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    close_reason: Mapped[str] = mapped_column(Text, default="")


class Role(enum.StrEnum):
    """What a person may do: grade, arbitrate, administer, analyse."""

    GRADER = "grader"
    ARBITER = "arbiter"  # a senior ophthalmologist on the arbitration panel
    SENIOR_ARBITER = "senior_arbiter"  # decides what the panel could not agree on
    STATISTICIAN = "statistician"
    ADMIN = "admin"


class Person(Base):
    """Someone who signs in: graders, the arbitration panel, statisticians, administrators."""

    __tablename__ = "person"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    username: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(128))  # as in DICOM PN: Family^Given
    role: Mapped[Role] = mapped_column(_enum(Role))
    password_hash: Mapped[str | None] = mapped_column(String(256), nullable=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # A new grader's reads all go to arbitration until an admin signs the grader off.
    arbitrate_all: Mapped[bool] = mapped_column(Boolean, default=False)
    api_token_sha256: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)

    sites: Mapped[list[PersonSite]] = relationship(cascade="all, delete-orphan")

    @property
    def site_names(self) -> set[str]:
        return {s.site for s in self.sites}


class PersonSite(Base):
    """A site whose cases a person may see; data access is checked against these rows."""

    __tablename__ = "person_site"

    person_pk: Mapped[int] = mapped_column(ForeignKey("person.id"), primary_key=True)
    site: Mapped[str] = mapped_column(String(64), primary_key=True)


class WebSession(Base):
    """A signed-in browser: the cookie holds the token, the table only its hash."""

    __tablename__ = "web_session"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    person_pk: Mapped[int] = mapped_column(ForeignKey("person.id"), index=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    address: Mapped[str] = mapped_column(String(64), default="")

    person: Mapped[Person] = relationship()


class ReadSource(enum.StrEnum):
    """Where a grader's read came from."""

    WEB = "web"
    CSV = "csv"
    API = "api"


class CaseRead(Base):
    """A grader's read of a whole visit: per eye, level-2 codes, or normal, or ungradable with a
    reason. Level-1 codes and the referral are derived by rule. Never updated: an amendment is a
    new version pointing at the one it replaces."""

    __tablename__ = "case_read"
    __table_args__ = (UniqueConstraint("case_pk", "grader_pk", "version"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_pk: Mapped[int] = mapped_column(ForeignKey("screening_case.id"), index=True)
    grader_pk: Mapped[int] = mapped_column(ForeignKey("person.id"), index=True)
    version: Mapped[int] = mapped_column(Integer, default=1)
    # {"R": {"codes": [...level 2...], "ungradable": reason or null}, "L": {...}}
    eyes: Mapped[dict[str, Any]] = mapped_column(JSON)
    findings: Mapped[dict[str, list[str]]] = mapped_column(JSON)  # eye -> codes, all levels
    referral: Mapped[bool] = mapped_column(Boolean)
    reading_ms: Mapped[int | None] = mapped_column(Integer, nullable=True)
    source: Mapped[ReadSource] = mapped_column(_enum(ReadSource), default=ReadSource.WEB)
    amends_pk: Mapped[int | None] = mapped_column(ForeignKey("case_read.id"), nullable=True)
    amend_reason: Mapped[str] = mapped_column(Text, default="")
    # Whether the grader could not see the model's output before submitting (None: read
    # elsewhere, unknown); the study reports it (STARD 13a).
    blinded: Mapped[bool | None] = mapped_column(Boolean, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)

    grader: Mapped[Person] = relationship()


class ArbitrationState(enum.StrEnum):
    """An arbitration is open until the panel decides it."""

    OPEN = "open"
    DECIDED = "decided"


class ArbitrationCase(Base):
    """A screening case where the model and the graders disagree, queued for the panel."""

    __tablename__ = "arbitration_case"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_pk: Mapped[int] = mapped_column(ForeignKey("screening_case.id"), unique=True)
    reason: Mapped[str] = mapped_column(Text)
    state: Mapped[ArbitrationState] = mapped_column(
        _enum(ArbitrationState), default=ArbitrationState.OPEN, index=True
    )
    opened_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    decided_at: Mapped[datetime | None] = mapped_column(UtcDateTime(), nullable=True)
    # a services.clinic.triage.Conflict
    conflict: Mapped[str] = mapped_column(String(24), default="")
    rule_version: Mapped[str] = mapped_column(String(32), default="")
    read_pk: Mapped[int | None] = mapped_column(ForeignKey("case_read.id"), nullable=True)
    # The chance this case was sent to the panel: 1 for a discrepancy, the QC share otherwise.
    inclusion_probability: Mapped[float] = mapped_column(Float, default=1.0)
    escalated: Mapped[bool] = mapped_column(Boolean, default=False)
    outcome: Mapped[str | None] = mapped_column(String(24), nullable=True)  # ungradable cases
    # A senior arbiter an admin gave the case to when nobody of its site could decide it.
    assigned_pk: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)

    case: Mapped[ScreeningCase] = relationship()
    read: Mapped[CaseRead | None] = relationship()


class Triage(Base):
    """The one-time verdict on a case with both a model result and a grader's read: concordant
    or not under the rule of the day, sampled for QC or not, and the inclusion probability the
    study's verification-bias correction needs (kept for every triaged case, sent or not)."""

    __tablename__ = "triage"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    case_pk: Mapped[int] = mapped_column(ForeignKey("screening_case.id"), unique=True)
    read_pk: Mapped[int] = mapped_column(ForeignKey("case_read.id"))
    rule_version: Mapped[str] = mapped_column(String(32))
    conflict: Mapped[str] = mapped_column(String(24))  # "" when concordant
    sampled: Mapped[bool] = mapped_column(Boolean, default=False)
    inclusion_probability: Mapped[float] = mapped_column(Float)
    to_arbitration: Mapped[bool] = mapped_column(Boolean)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)


class ArbitrationVote(Base):
    """One arbiter's signed vote; a quorum of agreeing votes decides, disagreement escalates."""

    __tablename__ = "arbitration_vote"
    # One vote per arbiter on each version of the grader's read: an amendment reopens voting.
    __table_args__ = (UniqueConstraint("arbitration_pk", "arbiter_pk", "read_pk"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    arbitration_pk: Mapped[int] = mapped_column(ForeignKey("arbitration_case.id"), index=True)
    arbiter_pk: Mapped[int] = mapped_column(ForeignKey("person.id"))
    choice: Mapped[str] = mapped_column(String(8))  # A, B or other
    findings: Mapped[dict[str, list[str]]] = mapped_column(JSON)  # eye -> codes, all levels
    referral: Mapped[bool] = mapped_column(Boolean)
    comment: Mapped[str] = mapped_column(Text, default="")
    signed_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    read_pk: Mapped[int | None] = mapped_column(ForeignKey("case_read.id"), nullable=True)


class ArbitrationDecision(Base):
    """The panel's verdict on a case; it is reported to the PACS as a verified SR revision."""

    __tablename__ = "arbitration_decision"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    arbitration_pk: Mapped[int] = mapped_column(ForeignKey("arbitration_case.id"), index=True)
    case_pk: Mapped[int] = mapped_column(ForeignKey("screening_case.id"), index=True)
    decided_by_pk: Mapped[int] = mapped_column(ForeignKey("person.id"))
    findings: Mapped[dict[str, bool]] = mapped_column(JSON)  # taxonomy code -> present
    referral: Mapped[bool] = mapped_column(Boolean)
    comment: Mapped[str] = mapped_column(Text, default="")
    decided_at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow)
    eyes: Mapped[dict[str, list[str]] | None] = mapped_column(JSON, nullable=True)  # per eye
    # What it was made on: {"read": id, "read_version": n, "predictions": [ids]}.
    basis: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    # Every arbiter who signed it (person ids, in signing order): the SR's Verifying Observers.
    signers: Mapped[list[int] | None] = mapped_column(JSON, nullable=True)

    decided_by: Mapped[Person] = relationship()


class AuditEvent(Base):
    """Who looked at or changed what, when: every access to a case by a person."""

    __tablename__ = "audit_event"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    at: Mapped[datetime] = mapped_column(UtcDateTime(), default=utcnow, index=True)
    person_pk: Mapped[int | None] = mapped_column(ForeignKey("person.id"), nullable=True)
    action: Mapped[str] = mapped_column(String(64))
    case_pk: Mapped[int | None] = mapped_column(
        ForeignKey("screening_case.id"), nullable=True, index=True
    )
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    address: Mapped[str] = mapped_column(String(64), default="")
    request_id: Mapped[str] = mapped_column(String(36), default="")
