"""Finding work that fell through the cracks (a worker killed, a broker message lost) and
queueing it again. Every task is idempotent, so a spurious re-queue costs only compute."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import (
    DeliveryState,
    Instance,
    InstanceState,
    Prediction,
    Report,
    ReportDelivery,
)
from services.inference import REPORT_TASK
from services.ingest import INFER_TASK
from services.outbox import add_message
from services.reporting import DELIVER_TASK


def requeue_stale_work(session: Session, grace: timedelta = timedelta(minutes=10)) -> list[int]:
    """Add outbox rows for work not done ``grace`` after it should have been; returns their ids."""
    cutoff = utcnow() - grace
    ids = []
    for instance_id in session.scalars(
        select(Instance.id)
        .where(Instance.state == InstanceState.RECEIVED, Instance.received_at < cutoff)
        .limit(500)
    ):
        ids.append(add_message(session, INFER_TASK, instance_id).id)
    for prediction_id in session.scalars(
        select(Prediction.id)
        .outerjoin(Report, Report.prediction_pk == Prediction.id)
        .where(Report.id.is_(None), Prediction.created_at < cutoff)
        .limit(500)
    ):
        ids.append(add_message(session, REPORT_TASK, prediction_id).id)
    for delivery_id in session.scalars(
        select(ReportDelivery.id)
        .where(
            ReportDelivery.state == DeliveryState.PENDING, ReportDelivery.next_attempt_at < cutoff
        )
        .limit(500)
    ):
        ids.append(add_message(session, DELIVER_TASK, delivery_id).id)
    return ids
