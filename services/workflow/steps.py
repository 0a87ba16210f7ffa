"""Modality Performed Procedure Steps: the camera saying when an acquisition ends.

A step is created IN PROGRESS (N-CREATE) and set once to COMPLETED or DISCONTINUED (N-SET);
after that it is final. COMPLETED closes its visit at once (no quiet timer) and compares the
images it references with those that arrived: the ones that did not are named in ``missing``
and stay on the failsafe list until they come. If the step ends before its images arrive, the
sweep links it to its case later (``settle_steps``). DISCONTINUED keeps its reason; the
visit stays open to the quiet timer (the patient may be imaged again).
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.db.base import utcnow
from services.db.models import (
    CaseState,
    Instance,
    PerformedStep,
    Report,
    ScreeningCase,
    StepStatus,
    Study,
)
from services.db.session import transaction
from services.kernel.outbox import add_message
from services.kernel.task_names import RENDER_TASK

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StepReport:
    """What an N-CREATE or N-SET says about a step; a field left None was not in the message."""

    status: StepStatus | None = None
    study_instance_uid: str | None = None
    accession_number: str | None = None
    patient_id: str | None = None
    referenced: tuple[str, ...] | None = None  # SOP Instance UIDs of the performed series
    discontinued_reason: str | None = None


class StepProblem(enum.StrEnum):
    """Why an MPPS message is refused (the gateway answers each with its DIMSE status)."""

    DUPLICATE = "duplicate"  # N-CREATE of a step that exists
    UNKNOWN = "unknown"  # N-SET of a step never created
    FINAL = "final"  # N-SET of a step already completed or discontinued
    BAD_STATUS = "bad_status"  # a status not allowed here (e.g. N-CREATE not IN PROGRESS)


class StepError(Exception):
    """An MPPS message refused; ``problem`` says which rule it broke."""

    def __init__(self, problem: StepProblem, message: str) -> None:
        super().__init__(message)
        self.problem = problem


@dataclass
class PerformedSteps:
    """The MPPS SCP's service: records steps and ends their visits."""

    sessions: sessionmaker[Session]
    render_pdfs: bool = False

    def create(self, uid: str, calling_ae: str, report: StepReport) -> None:
        if report.status not in (None, StepStatus.IN_PROGRESS):
            raise StepError(StepProblem.BAD_STATUS, "a new step must be IN PROGRESS")
        try:
            with transaction(self.sessions) as session:
                if session.scalar(select(PerformedStep.id).where(_uid(uid))) is not None:
                    raise StepError(StepProblem.DUPLICATE, f"step {uid} already exists")
                step = PerformedStep(sop_instance_uid=uid, calling_ae=calling_ae[:16])
                _apply(step, report)
                step.status = StepStatus.IN_PROGRESS
                session.add(step)
        except IntegrityError as exc:  # created concurrently on another association
            raise StepError(StepProblem.DUPLICATE, f"step {uid} already exists") from exc
        log.info("MPPS %s in progress (from %s)", uid, calling_ae)

    def update(self, uid: str, report: StepReport) -> list[int]:
        """Apply an N-SET; returns the outbox ids of work that ending the visit queued."""
        with transaction(self.sessions) as session:
            step = session.scalar(select(PerformedStep).where(_uid(uid)))
            if step is None:
                raise StepError(StepProblem.UNKNOWN, f"no step {uid}")
            if step.status != StepStatus.IN_PROGRESS:
                raise StepError(StepProblem.FINAL, f"step {uid} is already {step.status}")
            _apply(step, report)
            if step.status == StepStatus.IN_PROGRESS:
                return []
            step.ended_at = utcnow()
            ids = settle(session, step, self.render_pdfs)
            log.info("MPPS %s %s, %d image(s) missing", uid, step.status, len(step.missing))
            return ids


def _uid(uid: str) -> ColumnElement[bool]:
    return PerformedStep.sop_instance_uid == uid


def _apply(step: PerformedStep, report: StepReport) -> None:
    for name in ("status", "study_instance_uid", "accession_number", "patient_id"):
        value = getattr(report, name)
        if value is not None:
            setattr(step, name, value[:64] if isinstance(value, str) else value)
    if report.referenced is not None:
        step.referenced = sorted(set(report.referenced))
    if report.discontinued_reason is not None:
        step.discontinued_reason = report.discontinued_reason[:128]


def _case_of(session: Session, step: PerformedStep) -> ScreeningCase | None:
    keys = []
    if step.study_instance_uid:
        keys.append(Study.study_instance_uid == step.study_instance_uid)
    if step.accession_number:
        keys.append(Study.accession_number == step.accession_number)
    if not keys:
        return None
    return session.scalars(
        select(ScreeningCase)
        .join(Study, Study.id == ScreeningCase.study_pk)
        .where(or_(*keys))
        .order_by(ScreeningCase.id)
    ).first()


def settle(session: Session, step: PerformedStep, render_pdfs: bool) -> list[int]:
    """Link an ended step to its case, name its missing images; a completed step closes the
    case. Returns the outbox ids of the PDF rendering that closing queues."""
    case = session.get(ScreeningCase, step.case_pk) if step.case_pk else _case_of(session, step)
    if case is None:
        step.missing = list(step.referenced)
        return []
    step.case_pk = case.id
    arrived = set(
        session.scalars(select(Instance.sop_instance_uid).where(Instance.case_pk == case.id))
    )
    step.missing = [uid for uid in step.referenced if uid not in arrived]
    if step.status != StepStatus.COMPLETED or case.state != CaseState.OPEN:
        return []
    case.state, case.closed_at = CaseState.CLOSED, utcnow()
    latest = session.scalar(
        select(Report.id).where(Report.case_pk == case.id).order_by(Report.id.desc())
    )
    if render_pdfs and latest is not None:
        return [add_message(session, RENDER_TASK, latest).id]
    return []


def settle_steps(session: Session, render_pdfs: bool = False, within_days: int = 7) -> list[int]:
    """Ended steps (of the last days) still without their case or with images missing,
    settled again: their images may have arrived since, and a late image that reopened the
    visit is closed in again at once, as the step said acquisition was complete."""
    since = utcnow() - timedelta(days=within_days)
    ended = session.scalars(
        select(PerformedStep).where(
            PerformedStep.status != StepStatus.IN_PROGRESS, PerformedStep.ended_at >= since
        )
    ).all()
    ids: list[int] = []
    for step in ended:
        if step.case_pk is None or step.missing:
            ids += settle(session, step, render_pdfs)
    return ids
