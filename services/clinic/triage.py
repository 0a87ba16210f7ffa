"""Which cases the arbitration panel sees: once a case has both the model's result and a
grader's read, it is triaged exactly once. A disagreement under the configured rule sends it;
so does an ungradable eye (to the outcome queue), a grader still to be signed off, and a seeded
random share of concordant cases for quality control. Every triage row stores the chance the
case had of being sent: the study's verification-bias correction weights by its inverse."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from enum import StrEnum

from sqlalchemy import exists, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from services.clinic.grading import eye_of, latest_read
from services.db.base import utcnow
from services.db.models import (
    ArbitrationCase,
    ArbitrationState,
    CaseRead,
    Instance,
    InstanceState,
    Prediction,
    ScreeningCase,
    Triage,
)
from services.reporting import latest_predictions
from services.screening import Quality
from services.taxonomy.tree import level_of_code, load_taxonomy

log = logging.getLogger(__name__)


class Rule(StrEnum):
    """What counts as a disagreement between the model and a grader."""

    LEVEL1 = "level1"  # a level-1 class present for one and absent for the other, in an eye
    LEVEL2 = "level2"  # any class, level 1 or 2
    REFERRAL = "referral"  # only the referral of the visit


RULE_REVISION = 1  # bump when the meaning of a rule changes; stored with each triage


def rule_version(rule: Rule) -> str:
    return f"{rule.value}.v{RULE_REVISION}"


class Conflict(StrEnum):
    """Why a case went to the panel."""

    REFERRAL_FLIP = "referral_flip"  # the model and the grader refer differently
    MISSED_FINDING = "missed_finding"  # the grader found what the model did not
    EXTRA_FINDING = "extra_finding"  # the model found what the grader did not
    UNGRADABLE = "ungradable"  # the grader could not grade an eye: outcome queue
    NEW_GRADER = "new_grader"  # every read of a grader not yet signed off
    QC_SAMPLE = "qc_sample"  # concordant, drawn for quality control


@dataclass(frozen=True)
class ModelRead:
    """The model's result for a visit in the shape of a grader's read."""

    findings: dict[str, list[str]]  # eye -> positive codes, all levels, normal classes left out
    ungradable: set[str]  # eyes none of whose photographs was gradable
    referral: bool
    # why an ungradable eye is so, where the model says more than "not gradable": its
    # photographs lay beyond the model's guard (unlike anything it was trained on)
    reasons: dict[str, str] = field(default_factory=dict)


def model_read(session: Session, case_id: int) -> ModelRead | None:
    """None while an image of the case still waits for the model."""
    waiting = exists().where(Instance.case_pk == case_id, Instance.state == InstanceState.RECEIVED)
    if session.scalar(select(waiting)):
        return None
    predictions = latest_predictions(session, case_id)
    if not predictions:
        return None
    findings: dict[str, set[str]] = {}
    gradable: dict[str, bool] = {}
    unfamiliar: dict[str, str] = {}
    for prediction in predictions:
        eye = eye_of(prediction.instance.laterality)
        if prediction.quality == Quality.UNFAMILIAR:
            unfamiliar[eye] = _unfamiliar_reason(prediction)
        taxonomy = load_taxonomy(prediction.instance.route)
        codes = findings.setdefault(eye, set())
        is_gradable = prediction.quality == "gradable"
        gradable[eye] = gradable.get(eye, False) or is_gradable
        if is_gradable:
            codes |= {
                f.code
                for f in prediction.findings
                if f.positive and not taxonomy.node(f.code).normal
            }
    return ModelRead(
        findings={eye: sorted(codes) for eye, codes in findings.items()},
        ungradable={eye for eye, ok in gradable.items() if not ok},
        referral=any(p.referral for p in predictions),
        reasons={
            eye: unfamiliar[eye] for eye, ok in gradable.items() if not ok and eye in unfamiliar
        },
    )


def _unfamiliar_reason(prediction: Prediction) -> str:
    """Why the model did not assess the photograph, in the grader's words."""
    other_route = (prediction.provenance or {}).get("looks_like_route")
    if other_route:
        return f"not assessable by this model: it looks like a {other_route} photograph"
    return "not assessable by this model: unlike its training photographs"


def conflict(model: ModelRead, read: CaseRead, rule: Rule) -> Conflict | None:
    """The disagreement between the model and the read under the rule, if any."""
    if any(eye["ungradable"] for eye in read.eyes.values()):
        return Conflict.UNGRADABLE
    if model.referral != read.referral:
        return Conflict.REFERRAL_FLIP
    if rule == Rule.REFERRAL:
        return None
    for eye, grader_codes in read.findings.items():
        ours, theirs = set(grader_codes), set(model.findings.get(eye, []))
        if rule == Rule.LEVEL1:
            ours, theirs = (
                {c for c in ours if level_of_code(c) == 1},
                {c for c in theirs if level_of_code(c) == 1},
            )
        if ours - theirs:
            return Conflict.MISSED_FINDING
        if theirs - ours:
            return Conflict.EXTRA_FINDING
    return None


def drawn_for_qc(seed: int, case_id: int, rate: float) -> bool:
    """A reproducible draw: the same seed and case always give the same answer."""
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 < rate


@dataclass(frozen=True)
class TriagePolicy:
    rule: Rule
    qc_rate: float
    seed: int


def triage_case(session: Session, case_id: int, policy: TriagePolicy) -> Triage | None:
    """Triage the case if it is ready and not yet triaged; once per case (a unique row per case:
    a concurrent second attempt fails on it and backs off). A read amended since is triaged
    again (``retriage``)."""
    existing = session.scalar(select(Triage).where(Triage.case_pk == case_id))
    read = latest_read(session, case_id)
    if existing is not None and (read is None or existing.read_pk == read.id):
        return None
    model = model_read(session, case_id)
    if read is None or model is None:
        return None
    found = _verdict(model, read, policy)
    if existing is not None:
        return retriage(session, existing, read, found, policy)
    sampled = found is None and drawn_for_qc(policy.seed, case_id, policy.qc_rate)
    probability = 1.0 if found is not None else policy.qc_rate
    send = found is not None or sampled
    row = Triage(
        case_pk=case_id,
        read_pk=read.id,
        rule_version=rule_version(policy.rule),
        conflict=(found or (Conflict.QC_SAMPLE if sampled else "")),
        sampled=sampled,
        inclusion_probability=probability,
        to_arbitration=send,
    )
    try:
        with session.begin_nested():
            session.add(row)
            if send:
                session.add(
                    ArbitrationCase(
                        case_pk=case_id,
                        reason=str(row.conflict),
                        conflict=str(row.conflict),
                        rule_version=row.rule_version,
                        read_pk=read.id,
                        inclusion_probability=probability,
                    )
                )
    except IntegrityError:
        log.info("case %d was triaged concurrently", case_id)
        return None
    return row


def _verdict(model: ModelRead, read: CaseRead, policy: TriagePolicy) -> Conflict | None:
    found = conflict(model, read, policy.rule)
    if found is None and read.grader.arbitrate_all:
        found = Conflict.NEW_GRADER
    return found


def retriage(
    session: Session,
    row: Triage,
    read: CaseRead,
    found: Conflict | None,
    policy: TriagePolicy,
) -> Triage:
    """An amended read after triage. An open arbitration follows the new version (the panel
    sees it, and votes on it afresh); a concordant case that now disagrees goes to the panel
    (for certain: inclusion probability 1); a decided arbitration stays locked."""
    arbitration = session.scalar(
        select(ArbitrationCase).where(ArbitrationCase.case_pk == row.case_pk)
    )
    row.read_pk, row.rule_version, row.at = read.id, rule_version(policy.rule), utcnow()
    if arbitration is None:
        row.conflict = found or ""
        if found is not None:
            row.sampled, row.inclusion_probability, row.to_arbitration = False, 1.0, True
            session.add(
                ArbitrationCase(
                    case_pk=row.case_pk,
                    reason=str(found),
                    conflict=str(found),
                    rule_version=row.rule_version,
                    read_pk=read.id,
                    inclusion_probability=1.0,
                )
            )
    elif arbitration.state == ArbitrationState.OPEN:
        arbitration.read_pk = read.id
        if found is not None:
            arbitration.conflict = row.conflict = str(found)
    session.flush()
    return row


def untriaged_cases(session: Session, limit: int = 500) -> list[int]:
    """Cases with a read but no triage (the model finished after the read): the sweeper's.
    Only cases the model has finished and read something of: a case whose every photograph
    failed can never be triaged, and enough of them would fill every sweep's ``limit`` and keep
    the triageable ones out for good."""
    query = (
        select(ScreeningCase.id)
        .where(
            exists().where(CaseRead.case_pk == ScreeningCase.id),
            ~exists().where(Triage.case_pk == ScreeningCase.id),
            exists().where(
                Instance.case_pk == ScreeningCase.id, Instance.state == InstanceState.PREDICTED
            ),
            ~exists().where(
                Instance.case_pk == ScreeningCase.id, Instance.state == InstanceState.RECEIVED
            ),
        )
        .order_by(ScreeningCase.id)
        .limit(limit)
    )
    return list(session.scalars(query))
