"""What a case's report says, read from its rows: the latest reading of each image, the panel's
verdict when there is one, the report it revises, and the key that tells new content from the
same content built again."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass

from sqlalchemy import exists, select
from sqlalchemy.orm import Session

from services.db.models import (
    ArbitrationDecision,
    Instance,
    InstanceState,
    Person,
    Prediction,
    Report,
    ScreeningCase,
)
from services.kernel.storage import ContentStore
from services.reporting.content import CaseReport, ImageResult, Patient, Verdict
from services.reporting.predictions import latest_predictions, reading_order
from services.screening import Finding
from services.taxonomy.tree import load_taxonomy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatheredCase:
    """A case's report content not yet built, with the rows it comes from."""

    content: CaseReport
    content_key: str  # sha256 of the predictions and decision it says (fixed length)
    prediction_ids: list[int]
    predecessor_id: int | None
    decision_id: int | None


def gather_case(
    session: Session, case_id: int, images: ContentStore, reports: ContentStore
) -> GatheredCase | None:
    """The case's report content, or None when there is nothing new to report: an image still
    waits to be read (the last one read builds it), no image was readable, or a report with
    this content exists."""
    case = session.get_one(ScreeningCase, case_id)
    unread = exists().where(Instance.case_pk == case_id, Instance.state == InstanceState.RECEIVED)
    if session.scalar(select(unread)):
        return None
    predictions = latest_predictions(session, case_id)
    if not predictions:
        log.warning("case %d has no readable image; no report", case_id)
        return None
    decision = session.scalar(
        select(ArbitrationDecision)
        .where(ArbitrationDecision.case_pk == case_id)
        .order_by(ArbitrationDecision.id.desc())
    )
    said = "p:" + ",".join(str(p.id) for p in predictions)
    if decision is not None:
        said += f";d:{decision.id}"
    key = hashlib.sha256(said.encode()).hexdigest()
    same = select(Report.id).where(Report.case_pk == case_id, Report.content_key == key)
    if session.scalar(same):
        return None
    predecessor = session.scalar(
        select(Report).where(Report.case_pk == case_id).order_by(Report.id.desc())
    )
    content = CaseReport(
        case_id=case_id,
        patient=patient_of(case),
        images=tuple(image_result(p, images) for p in predictions),
        verdict=verdict_of(session, decision) if decision else None,
        predecessor_sr=reports.read(predecessor.sha256) if predecessor else None,
    )
    return GatheredCase(
        content,
        key,
        [p.id for p in predictions],
        predecessor.id if predecessor else None,
        decision.id if decision else None,
    )


def content_of_report(session: Session, report: Report, images: ContentStore) -> CaseReport:
    """What an existing report says, rebuilt from its rows (for its PDF)."""
    decision = session.get(ArbitrationDecision, report.decision_pk) if report.decision_pk else None
    return CaseReport(
        case_id=report.case_pk,
        patient=patient_of(report.case),
        images=tuple(image_result(p, images) for p in reading_order(report.predictions)),
        verdict=verdict_of(session, decision) if decision else None,
    )


def image_result(prediction: Prediction, images: ContentStore) -> ImageResult:
    """One image's reading as a report states it, with the model that made it."""
    instance = prediction.instance
    taxonomy = load_taxonomy(instance.route)
    model = prediction.model_version
    return ImageResult(
        source=images.read(instance.sha256),
        laterality=instance.laterality,
        route=instance.route,
        findings=tuple(
            Finding(
                f.code,
                taxonomy.node(f.code).name,
                f.level,
                f.probability,
                f.threshold,
                f.positive,
            )
            for f in prediction.findings
        ),
        top3=tuple(prediction.top3),
        referral=prediction.referral,
        quality=prediction.quality,
        algorithm_name=model.name,
        algorithm_version=model.version,
        weights_sha256=model.weights_sha256,
        threshold_set=str(prediction.provenance.get("threshold_set", "checkpoint")),
        probability_scale=str(prediction.provenance.get("probability_scale", "raw")),
        heatmap_path=prediction.heatmap_path,
    )


def verdict_of(session: Session, decision: ArbitrationDecision) -> Verdict:
    """The panel's decision as a report states it: who decided and signed, and what."""
    names: dict[str, str] = {}
    for code in decision.findings:
        for route in ("fundus", "anterior"):
            taxonomy = load_taxonomy(route)
            if taxonomy.has(code):
                names[code] = taxonomy.node(code).name
    return Verdict(
        person_name=decision.decided_by.display_name,
        login=decision.decided_by.username,
        organization="Arbitration panel",
        findings=dict(decision.findings),
        names=names,
        referral=decision.referral,
        comment=decision.comment,
        decided_at=decision.decided_at,
        signers=tuple(session.get_one(Person, pk).display_name for pk in decision.signers or []),
    )


def patient_of(case: ScreeningCase) -> Patient:
    study, patient = case.study, case.study.patient
    return Patient(
        patient.name,
        patient.patient_id,
        patient.birth_date,
        patient.sex,
        study.study_date,
        study.accession_number,
    )
