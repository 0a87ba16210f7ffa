"""State counts for ``eyescreen status``."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.db.models import (
    DeliveryChannel,
    DeliveryState,
    Instance,
    Prediction,
    ReportDelivery,
)
from services.db.session import make_engine, make_session_factory
from services.kernel.settings import Settings


def collect_status(settings: Settings) -> dict[str, dict[str, int]]:
    engine = make_engine(settings.effective_database_url)
    try:
        with make_session_factory(engine)() as session:
            instances = dict(
                session.execute(select(Instance.state, func.count()).group_by(Instance.state)).all()
            )
            referrals = dict(
                session.execute(
                    select(Prediction.referral, func.count()).group_by(Prediction.referral)
                ).all()
            )
            deliveries = dict(
                session.execute(
                    select(ReportDelivery.state, func.count()).group_by(ReportDelivery.state)
                ).all()
            )
            commitment = _commitment(session)
    finally:
        engine.dispose()
    return {
        "instances": {str(k.value): v for k, v in instances.items()},
        "predictions": {("refer" if k else "no referral"): v for k, v in referrals.items()},
        "report deliveries": {str(k.value): v for k, v in deliveries.items()},
        "storage commitment": commitment,
    }


def _commitment(session: Session) -> dict[str, int]:
    """Delivered reports by what the PACS said of them: committed, asked and not yet answered
    (uncommitted), not asked (the destination does not support it); and deliveries whose
    last C-STORE went unanswered (in doubt: the PACS is asked before sending again)."""
    delivered = (ReportDelivery.state == DeliveryState.DELIVERED) & (
        ReportDelivery.channel == DeliveryChannel.DICOM  # HL7 has no commitment
    )
    asked = ReportDelivery.commitment_requested_at.is_not(None)
    done = ReportDelivery.committed_at.is_not(None)

    def count(*where: Any) -> int:
        return int(session.scalar(select(func.count(ReportDelivery.id)).where(*where)) or 0)

    return {
        "committed": count(delivered, done),
        "uncommitted": count(delivered, asked, ~done),
        "not asked": count(delivered, ~asked, ~done),
        "in doubt": count(ReportDelivery.state == DeliveryState.PENDING, ReportDelivery.in_doubt),
    }
