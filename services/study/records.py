"""The study's analysis set, read from the running service's database: one record per eye of
each visit with the model's result, every grader's read, the reference standard and how it was
reached, and the inclusion probability; de-identified unless asked otherwise.

Reference standard (STARD 2015 item 10b): the arbitration panel's signed decision where the
case went to the panel (discordant, ungradable, a grader in training, or drawn for QC);
otherwise the concordant grader's read, which the naive ("discrepant") analysis accepts and the
weighted analysis does not."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import CompoundSelect, select, union
from sqlalchemy.orm import Session, selectinload

from services.clinic import Conflict, eye_of
from services.db.models import (
    ArbitrationCase,
    ArbitrationDecision,
    ArbitrationState,
    CaseRead,
    Person,
    Prediction,
    PredictionFinding,
    ScreeningCase,
    Study,
    Triage,
)
from services.reporting import latest_predictions_by_case
from services.screening import Quality
from services.study.eye import (
    VERIFIED,
    EyeRecord,
    ReferenceRoute,
    disease,
    reference_labels,
    route_not_sent,
)
from services.study.verification import estimate_verification
from services.taxonomy.tree import load_taxonomy

__all__ = [  # the record types, re-exported for the readers of the analysis set
    "VERIFIED",
    "EyeRecord",
    "Filters",
    "ReferenceRoute",
    "disease",
    "gather",
    "reference_labels",
    "study_key",
]


@dataclass(frozen=True)
class Filters:
    """Which cases an export covers (all of them when empty)."""

    date_from: date | None = None
    date_to: date | None = None
    sites: tuple[str, ...] = ()
    routes: tuple[str, ...] = ()
    model_versions: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()  # calling AE titles of the cameras


def study_key(path: Path) -> bytes:
    """The installation's pseudonym key: made once (random, readable by its owner only) and
    kept, so a patient has the same pseudonym in every export of the study."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "wb") as out:
            out.write(secrets.token_bytes(32))
    return path.read_bytes()


def pseudonym(key: bytes, kind: str, value: str) -> str:
    """A keyed hash: stable within a study (same key), meaningless outside it."""
    return kind + "-" + hmac.new(key, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()[:12]


def age_band(birth_date: str, study_date: str) -> str:
    try:
        born = datetime.strptime(birth_date, "%Y%m%d").date()
        seen = datetime.strptime(study_date, "%Y%m%d").date()
    except ValueError:
        return "unknown"
    years = seen.year - born.year - ((seen.month, seen.day) < (born.month, born.day))
    if years < 40:
        return "<40"
    if years >= 80:
        return "80+"
    low = years // 10 * 10
    return f"{low}-{low + 9}"


def _study_date(case: ScreeningCase) -> date:
    try:
        return datetime.strptime(case.study.study_date, "%Y%m%d").date()
    except ValueError:
        return case.opened_at.date()


def gather(
    session: Session, filters: Filters, key: bytes, identified: bool = False
) -> list[EyeRecord]:
    """The analysis set for the filters, eye by eye, in a fixed order (case, eye)."""
    query = (
        select(ScreeningCase)
        .options(selectinload(ScreeningCase.study).selectinload(Study.patient))
        .order_by(ScreeningCase.id)
    )
    if filters.sites:
        query = query.where(ScreeningCase.site.in_(filters.sites))
    if filters.date_from is not None or filters.date_to is not None:
        query = query.where(ScreeningCase.id.in_(_maybe_in_dates(filters)))
    cases = [c for c in session.scalars(query) if _in_dates(c, filters)]
    if not cases:
        return []
    ids = [c.id for c in cases]
    first_day = min(_study_date(c) for c in cases)
    predictions = latest_predictions_by_case(session, ids)
    positives = _positive_codes(session, [p.id for ps in predictions.values() for p in ps])
    reads = _latest_reads(session, ids)
    triage = {t.case_pk: t for t in session.scalars(select(Triage).where(Triage.case_pk.in_(ids)))}
    arbitrations = {
        a.case_pk: a
        for a in session.scalars(select(ArbitrationCase).where(ArbitrationCase.case_pk.in_(ids)))
    }
    compared = {
        r.id: r
        for r in session.scalars(
            select(CaseRead).where(CaseRead.id.in_([t.read_pk for t in triage.values()]))
        )
    }
    decisions: dict[int, ArbitrationDecision] = {}
    for decision in session.scalars(
        select(ArbitrationDecision)
        .where(ArbitrationDecision.case_pk.in_(ids))
        .order_by(ArbitrationDecision.id)
    ):
        decisions[decision.case_pk] = decision
    graders = {p.id: p.username for p in session.scalars(select(Person))}
    records: list[EyeRecord] = []
    for case in cases:
        patient = case.study.patient
        patient_value = f"{patient.issuer}|{patient.patient_id}"
        by_eye: dict[str, list[Prediction]] = defaultdict(list)
        for prediction in predictions.get(case.id, []):
            by_eye[eye_of(prediction.instance.laterality)].append(prediction)
        for eye, eye_predictions in sorted(by_eye.items()):
            record = _eye_record(case, eye, eye_predictions, positives, filters)
            if record is None:
                continue
            record.case_key = str(case.id) if identified else pseudonym(key, "case", str(case.id))
            record.patient_key = (
                patient_value if identified else pseudonym(key, "patient", patient_value)
            )
            record.age_band = age_band(patient.birth_date, case.study.study_date)
            record.sex = patient.sex or "unknown"
            record.study_day = (_study_date(case) - first_day).days
            for read in reads.get(case.id, []):
                grader = (
                    graders[read.grader_pk]
                    if identified
                    else pseudonym(key, "grader", str(read.grader_pk))
                )
                ungradable = bool(read.eyes.get(eye, {}).get("ungradable"))
                record.reads[grader] = None if ungradable else set(read.findings.get(eye, []))
                record.read_blinded[grader] = read.blinded
            record.dr_grade = _dr_grade(eye, triage.get(case.id), compared, reads.get(case.id))
            _reference(
                record,
                eye,
                triage.get(case.id),
                arbitrations.get(case.id),
                decisions.get(case.id),
                compared,
            )
            records.append(record)
    estimate_verification(records)
    return records


def _dr_grade(
    eye: str, triage: Triage | None, compared: dict[int, CaseRead], reads: list[CaseRead] | None
) -> dict[str, Any] | None:
    """The DR grade of the read the triage compared (else of the first grader's read)."""
    read = compared.get(triage.read_pk) if triage is not None else None
    read = read or (reads[0] if reads else None)
    grade = read.eyes.get(eye, {}).get("dr") if read is not None else None
    return dict(grade) if grade else None


def _maybe_in_dates(filters: Filters) -> CompoundSelect:
    """The visits that may fall in the dates, found by index rather than by reading the
    archive: a study date in range, or opened in range (give or take a day of time zone) for
    the visits whose study date is missing or unreadable. ``_in_dates`` decides exactly."""
    by_study_date = select(ScreeningCase.id).join(Study, ScreeningCase.study_pk == Study.id)
    by_opening = select(ScreeningCase.id)
    if filters.date_from is not None:
        by_study_date = by_study_date.where(Study.study_date >= f"{filters.date_from:%Y%m%d}")
        since = datetime.combine(filters.date_from, time.min, UTC) - timedelta(days=1)
        by_opening = by_opening.where(ScreeningCase.opened_at >= since)
    if filters.date_to is not None:
        by_study_date = by_study_date.where(Study.study_date <= f"{filters.date_to:%Y%m%d}")
        until = datetime.combine(filters.date_to, time.max, UTC) + timedelta(days=1)
        by_opening = by_opening.where(ScreeningCase.opened_at <= until)
    return union(by_study_date, by_opening)


def _in_dates(case: ScreeningCase, filters: Filters) -> bool:
    day = _study_date(case)
    return (filters.date_from is None or day >= filters.date_from) and (
        filters.date_to is None or day <= filters.date_to
    )


def _positive_codes(session: Session, prediction_ids: list[int]) -> dict[int, list[str]]:
    """The classes each prediction found present (one narrow query, not every finding row)."""
    found: dict[int, list[str]] = defaultdict(list)
    for start in range(0, len(prediction_ids), 10_000):
        chunk = prediction_ids[start : start + 10_000]
        for prediction_pk, code in session.execute(
            select(PredictionFinding.prediction_pk, PredictionFinding.code).where(
                PredictionFinding.prediction_pk.in_(chunk), PredictionFinding.positive.is_(True)
            )
        ):
            found[prediction_pk].append(code)
    return found


def _latest_reads(session: Session, case_ids: list[int]) -> dict[int, list[CaseRead]]:
    latest: dict[tuple[int, int], CaseRead] = {}
    for read in session.scalars(
        select(CaseRead).where(CaseRead.case_pk.in_(case_ids)).order_by(CaseRead.id)
    ):
        latest[(read.case_pk, read.grader_pk)] = read
    grouped: dict[int, list[CaseRead]] = defaultdict(list)
    for (case_pk, _), read in sorted(latest.items()):
        grouped[case_pk].append(read)
    return grouped


def _eye_record(
    case: ScreeningCase,
    eye: str,
    predictions: list[Prediction],
    positives: dict[int, list[str]],
    filters: Filters,
) -> EyeRecord | None:
    predictions = sorted(predictions, key=lambda p: p.instance_pk)
    route = predictions[0].instance.route
    version = f"{predictions[0].model_version.name} {predictions[0].model_version.version}"
    if filters.routes and route not in filters.routes:
        return None
    if (
        filters.model_versions
        and predictions[0].model_version.version not in filters.model_versions
    ):
        return None
    if filters.cameras and predictions[0].instance.calling_ae not in filters.cameras:
        return None
    taxonomy = load_taxonomy(route)
    gradable = [p for p in predictions if p.quality == "gradable"]
    probabilities: dict[str, float] = {}
    for prediction in gradable:
        for code, value in prediction.probabilities.items():
            probabilities[code] = max(probabilities.get(code, 0.0), float(value))
    codes = {
        code for p in gradable for code in positives.get(p.id, ()) if not taxonomy.node(code).normal
    }
    return EyeRecord(
        case_key="",
        patient_key="",
        eye=eye,
        site=case.site,
        camera=predictions[0].instance.calling_ae or "unknown",
        route=route,
        model_version=version,
        age_band="",
        sex="",
        study_day=0,
        model_gradable=bool(gradable),
        model_unfamiliar=not gradable and any(p.quality == Quality.UNFAMILIAR for p in predictions),
        model_codes=codes,
        model_referral=any(p.referral for p in predictions),
        probabilities=probabilities,
        thresholds={k: float(v) for k, v in predictions[0].thresholds.items()},
        top3=list(predictions[0].top3),
        index_at=min(p.created_at for p in predictions),
        photographs=[p.instance.sha256 for p in gradable],
    )


def _reference(
    record: EyeRecord,
    eye: str,
    triage: Triage | None,
    arbitration: ArbitrationCase | None,
    decision: ArbitrationDecision | None,
    compared: dict[int, CaseRead],
) -> None:
    if triage is None:
        record.reference_route = (
            ReferenceRoute.NOT_TRIAGED if record.reads else ReferenceRoute.NOT_READ
        )
        return
    record.inclusion_probability = triage.inclusion_probability
    triaged = compared.get(triage.read_pk)
    record.blind = None if triaged is None else triaged.blinded
    if triaged is not None and not triaged.eyes.get(eye, {}).get("ungradable"):
        record.triaged_read = set(triaged.findings.get(eye, []))
    if not triage.to_arbitration:
        record.reference_route = route_not_sent(record.model_gradable)
        record.reference = record.triaged_read
        record.reference_at = None if triaged is None else triaged.created_at
        return
    if triage.conflict == Conflict.UNGRADABLE and decision is None:
        _ungradable_case(record)
        return
    if arbitration is None or arbitration.state != ArbitrationState.DECIDED or decision is None:
        record.reference_route = ReferenceRoute.PANEL_PENDING
        return
    record.reference = set((decision.eyes or {}).get(eye, []))
    record.reference_at = decision.decided_at
    record.reference_route = {
        Conflict.QC_SAMPLE: ReferenceRoute.PANEL_QC,
        Conflict.NEW_GRADER: ReferenceRoute.PANEL_TRAINEE,
    }.get(Conflict(triage.conflict), ReferenceRoute.PANEL_DISCORDANT)


def _ungradable_case(record: EyeRecord) -> None:
    """A case the grader could not fully grade goes to the outcome queue, which decides what
    happens (re-image, slit lamp, exclude), not a diagnosis, and never to the panel: neither
    eye can be verified. The eye the grader could not grade has no read; its fellow eye keeps
    its own read (``triaged_read``) and its index-test result, but no reference standard,
    whether model and grader agree on it or not (the flow gives the reason)."""
    if record.triaged_read is None:
        record.reference_route = ReferenceRoute.UNGRADABLE
    elif record.model_gradable and record.model_codes == _diseases(record, record.triaged_read):
        record.reference_route = ReferenceRoute.FELLOW_UNGRADABLE_CONCORDANT
    else:
        record.reference_route = ReferenceRoute.FELLOW_UNGRADABLE


def _diseases(record: EyeRecord, codes: set[str]) -> set[str]:
    taxonomy = load_taxonomy(record.route)
    return {c for c in codes if not taxonomy.node(c).normal}
