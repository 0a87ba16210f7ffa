"""Storage Commitment results and the deliveries they settle (no DICOM here: the gateway's
``dicom_gateway/commitment.py`` translates the N-EVENT-REPORT into a ``CommitmentResult``).

A delivery is *delivered* when the PACS answered the C-STORE with success, and *committed*
only when the PACS later says, for the Transaction UID we asked with, that it keeps the object.
A failure in that answer means the PACS does not have it: the delivery is pending again and
is sent again (the one re-send under the same UID that is certainly needed)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from services.db.base import utcnow
from services.db.models import DeliveryState, Report, ReportDelivery
from services.db.session import transaction
from services.kernel.outbox import add_message
from services.kernel.task_names import DELIVER_TASK

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class CommitmentResult:
    """The PACS's answer to one Storage Commitment request."""

    transaction_uid: str
    committed: tuple[str, ...]  # SOP Instance UIDs it keeps
    failed: tuple[str, ...]  # SOP Instance UIDs it does not


def record_commitment(session: Session, result: CommitmentResult) -> list[int]:
    """Mark the request's deliveries committed, or pending again where the PACS failed them;
    returns the outbox ids of the re-sends. An unknown Transaction UID changes nothing."""
    rows = session.execute(
        select(ReportDelivery, Report.sop_instance_uid)
        .join(Report, Report.id == ReportDelivery.report_pk)
        .where(ReportDelivery.commitment_uid == result.transaction_uid)
    ).all()
    if not rows:
        log.warning("storage commitment %s: no delivery asked for it", result.transaction_uid)
        return []
    committed, failed = set(result.committed), set(result.failed)
    now, ids = utcnow(), []
    for delivery, uid in rows:
        if uid in failed:
            delivery.state = DeliveryState.PENDING
            delivery.commitment_uid = delivery.commitment_requested_at = None
            delivery.in_doubt, delivery.next_attempt_at = False, now
            delivery.last_error = "the PACS did not commit the report (storage commitment)"
            ids.append(add_message(session, DELIVER_TASK, delivery.id).id)
        elif uid in committed and delivery.committed_at is None:
            delivery.committed_at = now
    log.info(
        "storage commitment %s: %d committed, %d failed (sent again)",
        result.transaction_uid,
        len(committed),
        len(ids),
    )
    return ids


def uncommitted_count(session: Session) -> int:
    """Deliveries the PACS answered with success but has not (yet) committed."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(ReportDelivery)
            .where(
                ReportDelivery.state == DeliveryState.DELIVERED,
                ReportDelivery.commitment_requested_at.is_not(None),
                ReportDelivery.committed_at.is_(None),
            )
        )
        or 0
    )


def settle(sessions: sessionmaker[Session], result: CommitmentResult) -> list[int]:
    """``record_commitment`` in a transaction of its own (the gateway's handler calls this)."""
    with transaction(sessions) as session:
        return record_commitment(session, result)
