"""State counts for ``eyescreen status``."""

from __future__ import annotations

from sqlalchemy import func, select

from services.db.models import Instance, Prediction, ReportDelivery
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
    finally:
        engine.dispose()
    return {
        "instances": {str(k.value): v for k, v in instances.items()},
        "predictions": {("refer" if k else "no referral"): v for k, v in referrals.items()},
        "report deliveries": {str(k.value): v for k, v in deliveries.items()},
    }
