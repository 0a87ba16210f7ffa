"""The periodic sweep: finding work that fell through the cracks (a worker killed, a broker
message lost) and queueing it again, closing visits gone quiet (``close_quiet_cases``: the timer
for cameras without MPPS), triaging late model results, escalating overdue arbitrations and
refreshing the failsafe. Every task is idempotent, so a spurious re-queue costs only compute."""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import delete, exists, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, sessionmaker

from services.clinic import Rule, TriagePolicy, escalate_overdue, triage_case, untriaged_cases
from services.db.base import utcnow
from services.db.models import (
    CaseState,
    DeliveryChannel,
    DeliveryState,
    Instance,
    InstanceState,
    OutboxMessage,
    Prediction,
    Report,
    ReportDelivery,
    ScreeningCase,
    report_prediction,
)
from services.db.session import transaction
from services.kernel.outbox import OutboxDispatcher, add_message
from services.kernel.settings import Settings
from services.kernel.task_names import (
    DELIVER_HL7_TASK,
    DELIVER_TASK,
    INFER_TASK,
    RENDER_TASK,
    REPORT_TASK,
)
from services.workflow import FailsafePolicy, refresh, settle_steps

log = logging.getLogger(__name__)


def sweep(
    settings: Settings, sessions: sessionmaker[Session], dispatcher: OutboxDispatcher
) -> None:
    """One housekeeping round with this installation's settings (the gateway's loop and the
    worker's beat task both call this)."""
    housekeeping(
        sessions,
        dispatcher,
        timedelta(seconds=settings.outbox_resend_after_s),
        timedelta(minutes=settings.case_quiet_minutes),
        timedelta(seconds=settings.stale_after_s),
        settings.pdf_reports,
        timedelta(seconds=settings.inference_lease_s),
    )
    triage_waiting(settings, sessions)
    workflow_round(settings, sessions, dispatcher)


def workflow_round(
    settings: Settings, sessions: sessionmaker[Session], dispatcher: OutboxDispatcher
) -> None:
    """Ended MPPS steps settled again (their images may have come since: the visit closes at
    once), expected visits matched, and the site's failsafe list brought up to date."""
    with transaction(sessions) as session:
        ids = settle_steps(session, settings.pdf_reports)
    dispatcher.dispatch(ids)
    try:
        with transaction(sessions) as session:
            refresh(session, settings.site, FailsafePolicy.from_settings(settings))
    except IntegrityError:  # the gateway's and the beat's sweeps added the same item at once
        log.info("failsafe refreshed concurrently by another sweep; its items stand")


def triage_waiting(settings: Settings, sessions: sessionmaker[Session]) -> None:
    """Triage the cases whose model result came after the grader's read; escalate overdue
    arbitrations to a senior arbiter."""
    policy = TriagePolicy(
        Rule(settings.discrepancy_rule), settings.qc_sample_rate, settings.qc_seed
    )
    with transaction(sessions) as session:
        for case_id in untriaged_cases(session):
            triage_case(session, case_id, policy)
        escalate_overdue(session, timedelta(hours=settings.escalate_after_hours))


def housekeeping(
    sessions: sessionmaker[Session],
    dispatcher: OutboxDispatcher,
    outbox_grace: timedelta,
    case_quiet: timedelta,
    stale_after: timedelta = timedelta(minutes=10),
    render_pdfs: bool = False,
    lease: timedelta | None = None,
) -> None:
    """One round of the sweeper: re-queue stale work, close quiet cases, re-send the outbox."""
    with transaction(sessions) as session:
        ids = requeue_abandoned_claims(session, lease) if lease is not None else []
        ids += requeue_lost_follow_ups(session, lease) if lease is not None else []
        ids += requeue_stale_work(session, stale_after, render_pdfs)
        ids += close_quiet_cases(session, case_quiet, render_pdfs)
        prune_sent_messages(session, SENT_RETENTION)
    dispatcher.dispatch(ids)
    dispatcher.sweep(outbox_grace)


SENT_RETENTION = timedelta(days=7)  # sent outbox rows kept this long, for tracing


def prune_sent_messages(session: Session, retention: timedelta) -> int:
    """Delete outbox rows sent longer ago than ``retention``; unsent rows are never pruned."""
    result = session.execute(
        delete(OutboxMessage).where(
            OutboxMessage.sent_at.is_not(None), OutboxMessage.sent_at < utcnow() - retention
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def close_quiet_cases(session: Session, quiet: timedelta, render_pdfs: bool = False) -> list[int]:
    """Close open cases that got no image for ``quiet`` and have no image still being read.

    A visit's images (both eyes, repeats) arrive over minutes; the case is read as a whole
    once the camera has gone quiet. Returns outbox ids of the work that closing queues.
    """
    cutoff = utcnow() - quiet
    unread = exists().where(
        Instance.case_pk == ScreeningCase.id, Instance.state == InstanceState.RECEIVED
    )
    cases = session.scalars(
        select(ScreeningCase)
        .where(ScreeningCase.state == CaseState.OPEN, ScreeningCase.last_image_at < cutoff)
        .where(~unread)
        .limit(500)
    ).all()
    now = utcnow()
    ids = []
    for case in cases:
        case.state = CaseState.CLOSED
        case.closed_at = now
        latest = session.scalar(
            select(Report.id).where(Report.case_pk == case.id).order_by(Report.id.desc())
        )
        if render_pdfs and latest is not None:  # the readable report of the whole visit
            ids.append(add_message(session, RENDER_TASK, latest).id)
    if cases:
        log.info("closed %d quiet case(s)", len(cases))
    return ids


def requeue_abandoned_claims(session: Session, lease: timedelta) -> list[int]:
    """Images a worker claimed and did not finish within its lease (the worker died mid-batch):
    queued again at once rather than after the stale period, once per lease period. The next
    worker takes them over because the lease has expired; a slow but live worker that still
    finishes first makes the repeat a no-op (one prediction per instance and model)."""
    cutoff = utcnow() - lease
    recent = {
        args[0]
        for args in session.scalars(
            select(OutboxMessage.args).where(
                OutboxMessage.task_name == INFER_TASK, OutboxMessage.created_at >= cutoff
            )
        )
    }
    ids = []
    for instance_id in session.scalars(
        select(Instance.id)
        .where(
            Instance.state == InstanceState.RECEIVED,
            Instance.claimed_at.is_not(None),
            Instance.claimed_at < cutoff,
        )
        .limit(500)
    ):
        if instance_id not in recent:
            ids.append(add_message(session, INFER_TASK, instance_id).id)
    if ids:
        log.warning("%d images held past their lease by a lost worker: queued again", len(ids))
    return ids


def requeue_lost_follow_ups(session: Session, lease: timedelta) -> list[int]:
    """Reports and deliveries whose queued message was lost with a worker's main process
    (reserved by it, unacknowledged: Redis would give it back only after its visibility
    timeout) or with the broker: queued again once a lease has passed, not after the stale
    period. A report is built by the worker that read the image, straight after; a delivery is
    due and nobody sends it: unlike images, neither waits behind a backlog for long. Repeats
    are no-ops (same content, a delivery's claim), once per lease period."""
    cutoff = utcnow() - lease
    recent = {
        (task, tuple(args))
        for task, args in session.execute(
            select(OutboxMessage.task_name, OutboxMessage.args).where(
                OutboxMessage.task_name.in_([REPORT_TASK, DELIVER_TASK]),
                OutboxMessage.created_at >= cutoff,
            )
        )
    }
    ids: list[int] = []
    reported = exists().where(report_prediction.c.prediction_pk == Prediction.id)
    newer = aliased(Prediction)
    superseded = exists().where(
        newer.instance_pk == Prediction.instance_pk, newer.id > Prediction.id
    )
    other = aliased(Instance)
    unread = exists().where(
        other.case_pk == Instance.case_pk, other.state == InstanceState.RECEIVED
    )
    for case_id in session.scalars(
        select(Instance.case_pk)
        .join(Prediction, Prediction.instance_pk == Instance.id)
        .where(~reported, ~superseded, ~unread, Prediction.created_at < cutoff)
        .distinct()
        .limit(500)
    ):
        if (REPORT_TASK, (case_id,)) not in recent:
            ids.append(add_message(session, REPORT_TASK, case_id).id)
    for delivery_id in session.scalars(
        select(ReportDelivery.id)
        .where(
            ReportDelivery.state == DeliveryState.PENDING,
            ReportDelivery.next_attempt_at < cutoff,
            or_(ReportDelivery.sending_at.is_(None), ReportDelivery.sending_at < cutoff),
        )
        .limit(500)
    ):
        if (DELIVER_TASK, (delivery_id,)) not in recent:
            ids.append(add_message(session, DELIVER_TASK, delivery_id).id)
    if ids:
        log.warning("%d report(s) or deliveries lost with a worker: queued again", len(ids))
    return ids


def requeue_stale_work(
    session: Session, grace: timedelta = timedelta(minutes=10), render_pdfs: bool = False
) -> list[int]:
    """Add outbox rows for work not done ``grace`` after it should have been; returns their ids.

    Once per stale period: work already re-queued within the last ``grace`` is left alone, so a
    sweep every 30 s does not add a message per stale item each time (a backlog is not stale
    work, and duplicates only lengthen it)."""
    cutoff = utcnow() - grace
    recent = {
        (task, tuple(args))
        for task, args in session.execute(
            select(OutboxMessage.task_name, OutboxMessage.args).where(
                OutboxMessage.created_at >= cutoff
            )
        )
    }
    ids: list[int] = []

    def requeue(task: str, argument: int) -> None:
        if (task, (argument,)) not in recent:
            ids.append(add_message(session, task, argument).id)

    for instance_id in session.scalars(
        select(Instance.id)
        .where(Instance.state == InstanceState.RECEIVED, Instance.received_at < cutoff)
        .limit(500)
    ):
        requeue(INFER_TASK, instance_id)
    reported = exists().where(report_prediction.c.prediction_pk == Prediction.id)
    newer = aliased(Prediction)
    superseded = exists().where(
        newer.instance_pk == Prediction.instance_pk, newer.id > Prediction.id
    )
    for case_id in session.scalars(
        select(Instance.case_pk)
        .join(Prediction, Prediction.instance_pk == Instance.id)
        .where(~reported, ~superseded, Prediction.created_at < cutoff)
        .distinct()
        .limit(500)
    ):
        requeue(REPORT_TASK, case_id)
    for delivery_id, channel in session.execute(
        select(ReportDelivery.id, ReportDelivery.channel)
        .where(
            ReportDelivery.state == DeliveryState.PENDING, ReportDelivery.next_attempt_at < cutoff
        )
        .limit(500)
    ):
        requeue(DELIVER_HL7_TASK if channel == DeliveryChannel.HL7 else DELIVER_TASK, delivery_id)
    if render_pdfs:  # closed cases whose latest report still has no PDF
        latest = select(func.max(Report.id)).group_by(Report.case_pk).scalar_subquery()
        for report_id in session.scalars(
            select(Report.id)
            .join(ScreeningCase, ScreeningCase.id == Report.case_pk)
            .where(Report.id.in_(latest), Report.pdf_sha256.is_(None))
            .where(ScreeningCase.state == CaseState.CLOSED, ScreeningCase.closed_at < cutoff)
            .limit(500)
        ):
            requeue(RENDER_TASK, report_id)
    return ids
