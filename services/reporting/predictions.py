"""The latest model result of each read image of a case, in reading order: what a report
shows, what triage compares with the grader and what the study analyses."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session, selectinload

from services.db.models import Instance, InstanceState, Prediction


def latest_predictions(session: Session, case_id: int) -> list[Prediction]:
    """The newest prediction of each read image of a case, right eye first (reading order)."""
    return latest_predictions_by_case(session, [case_id]).get(case_id, [])


def latest_predictions_by_case(
    session: Session, case_ids: Sequence[int]
) -> dict[int, list[Prediction]]:
    """``latest_predictions`` for many cases in one query (the study export reads thousands),
    each prediction with its image and model loaded."""
    latest: dict[int, Prediction] = {}
    for prediction in session.scalars(
        select(Prediction)
        .join(Instance)
        .where(Instance.case_pk.in_(case_ids), Instance.state == InstanceState.PREDICTED)
        .options(selectinload(Prediction.instance), selectinload(Prediction.model_version))
        .order_by(Prediction.id)
    ):
        latest[prediction.instance_pk] = prediction
    grouped: dict[int, list[Prediction]] = defaultdict(list)
    for prediction in latest.values():
        grouped[prediction.instance.case_pk].append(prediction)
    return {case_id: reading_order(found) for case_id, found in grouped.items()}


def reading_order(predictions: Iterable[Prediction]) -> list[Prediction]:
    """Right eye first, then left, then images without laterality; by arrival within each."""
    order = {"R": 0, "L": 1}
    return sorted(predictions, key=lambda p: (order.get(p.instance.laterality, 2), p.instance_pk))
