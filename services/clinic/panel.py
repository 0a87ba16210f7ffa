"""The arbitration panel's work: the queue, the two reads shown blind as Read A and Read B,
signed votes, a quorum, escalation to a senior arbiter, and the final, locked decision that
becomes the case's reference standard and a verified, revised SR."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.access import password_matches
from services.clinic.arbitration import record_decision
from services.clinic.grading import case_eyes, derive, normalise
from services.clinic.triage import Conflict, model_read
from services.db.base import utcnow
from services.db.models import (
    ArbitrationCase,
    ArbitrationState,
    ArbitrationVote,
    Person,
    Role,
    ScreeningCase,
)

PANEL = (Role.ARBITER, Role.SENIOR_ARBITER)
OUTCOMES = ("re-image", "slit-lamp examination", "exclude")


class DecisionError(ValueError):
    """A vote that cannot be taken as given (the message says why)."""


@dataclass(frozen=True)
class ShownRead:
    """One of the two reads as the panel sees it: findings per eye and the referral."""

    label: str  # "A" or "B"
    findings: dict[str, list[str]]
    ungradable: dict[str, str]
    referral: bool
    is_model: bool  # never shown on the page; used to record what was adopted


def model_first(arbitration_id: int, seed: int) -> bool:
    """Whether the model's read is Read A here: fixed per arbitration, half the time each."""
    return hashlib.sha256(f"{seed}:ab:{arbitration_id}".encode()).digest()[0] % 2 == 0


def shown_reads(session: Session, arbitration: ArbitrationCase, seed: int) -> list[ShownRead]:
    model = model_read(session, arbitration.case_pk)
    read = arbitration.read
    if model is None or read is None:
        raise DecisionError("this case lacks the model's result or the grader's read")
    machine = (
        model.findings,
        {eye: model.reasons.get(eye, "not gradable by the model") for eye in model.ungradable},
        model.referral,
        True,
    )
    human = (
        dict(read.findings),
        {eye: v["ungradable"] for eye, v in read.eyes.items() if v["ungradable"]},
        read.referral,
        False,
    )
    first, second = (machine, human) if model_first(arbitration.id, seed) else (human, machine)
    return [ShownRead("A", *first), ShownRead("B", *second)]


def queue(
    session: Session,
    person: Person,
    conflict: str | None = None,
    outcome_queue: bool = False,
    limit: int = 100,
    site: str | None = None,
    opened_from: date | None = None,
    opened_to: date | None = None,
    finding: str | None = None,
) -> list[ArbitrationCase]:
    """Open arbitrations of the person's sites, filtered by site, opening date, conflict type
    and a finding in the grader's read; a senior arbiter sees the escalated ones first.
    Ungradable cases form the outcome queue of their own."""
    query = (
        select(ArbitrationCase)
        .join(ScreeningCase, ScreeningCase.id == ArbitrationCase.case_pk)
        .where(
            ArbitrationCase.state == ArbitrationState.OPEN,
            ScreeningCase.site.in_(person.site_names),
        )
    )
    if outcome_queue:
        query = query.where(ArbitrationCase.conflict == Conflict.UNGRADABLE)
    else:
        query = query.where(ArbitrationCase.conflict != Conflict.UNGRADABLE)
    if conflict:
        query = query.where(ArbitrationCase.conflict == conflict)
    if site:
        query = query.where(ScreeningCase.site == site)
    if opened_from:
        query = query.where(ArbitrationCase.opened_at >= datetime.combine(opened_from, time(), UTC))
    if opened_to:
        end = datetime.combine(opened_to, time(), UTC) + timedelta(days=1)
        query = query.where(ArbitrationCase.opened_at < end)
    if person.role != Role.SENIOR_ARBITER:
        query = query.where(ArbitrationCase.escalated.is_(False))
    order = (ArbitrationCase.escalated.desc(), ArbitrationCase.opened_at, ArbitrationCase.id)
    found = list(session.scalars(query.order_by(*order).limit(limit if not finding else 2000)))
    if finding:  # in the grader's read of either eye, or in the model's (a JSON field: in Python)
        found = [a for a in found if _mentions(session, a, finding)][:limit]
    return found


def _mentions(session: Session, arbitration: ArbitrationCase, code: str) -> bool:
    read = arbitration.read
    if read is not None and any(code in codes for codes in read.findings.values()):
        return True
    model = model_read(session, arbitration.case_pk)
    return model is not None and any(code in codes for codes in model.findings.values())


def escalate_overdue(session: Session, after: timedelta) -> int:
    """Arbitrations undecided for too long go to a senior arbiter."""
    overdue = session.scalars(
        select(ArbitrationCase).where(
            ArbitrationCase.state == ArbitrationState.OPEN,
            ArbitrationCase.escalated.is_(False),
            ArbitrationCase.opened_at < utcnow() - after,
        )
    ).all()
    for arbitration in overdue:
        arbitration.escalated = True
    return len(overdue)


def _may_decide(arbitration: ArbitrationCase, person: Person) -> None:
    """An active panel member of the case's site, on an open arbitration; once escalated, a
    senior arbiter (the queue shows escalated cases to them only)."""
    if person.role not in PANEL or not person.active:
        raise DecisionError("only members of the arbitration panel decide")
    if arbitration.case.site not in person.site_names:
        raise DecisionError("not a case of your sites")
    if arbitration.state != ArbitrationState.OPEN:
        raise DecisionError("this arbitration is decided and locked")
    if arbitration.escalated and person.role != Role.SENIOR_ARBITER:
        raise DecisionError("escalated: a senior arbiter decides this case")


def vote(
    session: Session,
    arbitration: ArbitrationCase,
    arbiter: Person,
    password: str,
    choice: str,
    other: Mapping[str, Any] | None,
    comment: str,
    quorum: int,
    seed: int,
) -> str:
    """A signed vote (the password re-entered). Returns what happened: "decided", "waiting"
    for more votes, or "escalated" when the votes disagree. The decision is locked."""
    _may_decide(arbitration, arbiter)
    if not password_matches(arbiter, password):
        raise DecisionError("the signature's password is wrong")
    reads = {r.label: r for r in shown_reads(session, arbitration, seed)}
    if choice in reads:
        findings, referral = reads[choice].findings, reads[choice].referral
    elif choice == "other" and other is not None:
        eyes = normalise(other, case_eyes(session, arbitration.case_pk))
        findings, referral = derive(eyes)
        same_as = [r for r in reads.values() if r.findings == findings and r.referral == referral]
        if not same_as and not comment.strip():
            raise DecisionError("overriding both reads needs a comment")
    else:
        raise DecisionError("choose Read A, Read B or another decision")
    if session.scalar(
        select(ArbitrationVote.id).where(
            ArbitrationVote.arbitration_pk == arbitration.id,
            ArbitrationVote.arbiter_pk == arbiter.id,
        )
    ):
        raise DecisionError("you have already voted on this case")
    session.add(
        ArbitrationVote(
            arbitration_pk=arbitration.id,
            arbiter_pk=arbiter.id,
            choice=choice,
            findings=findings,
            referral=referral,
            comment=comment.strip(),
        )
    )
    session.flush()
    if arbiter.role == Role.SENIOR_ARBITER and arbitration.escalated:
        _decide(session, arbitration, arbiter, findings, referral, comment, choice, reads)
        return "decided"
    votes = session.scalars(
        select(ArbitrationVote).where(ArbitrationVote.arbitration_pk == arbitration.id)
    ).all()
    agreeing = [v for v in votes if v.findings == findings and v.referral == referral]
    if len(agreeing) < len(votes):
        arbitration.escalated = True
        return "escalated"
    if len(agreeing) >= quorum:
        _decide(session, arbitration, arbiter, findings, referral, comment, choice, reads)
        return "decided"
    return "waiting"


def _decide(
    session: Session,
    arbitration: ArbitrationCase,
    arbiter: Person,
    findings: dict[str, list[str]],
    referral: bool,
    comment: str,
    choice: str,
    reads: Mapping[str, ShownRead],
) -> None:
    adopted = reads[choice].is_model if choice in reads else None
    note = comment.strip()
    if adopted is not None:
        note = (
            note + " " if note else ""
        ) + f"[adopted the {'model' if adopted else 'grader'}'s read]"
    present = {code: True for codes in findings.values() for code in codes}
    record_decision(session, arbitration, arbiter, present, referral, note, eyes=findings)


def decide_outcome(
    session: Session, arbitration: ArbitrationCase, person: Person, password: str, outcome: str
) -> None:
    """For an ungradable case: re-image, examine at the slit lamp, or exclude from the study."""
    _may_decide(arbitration, person)
    if outcome not in OUTCOMES:
        raise DecisionError(f"the outcome is one of {', '.join(OUTCOMES)}")
    if not password_matches(person, password):
        raise DecisionError("the signature's password is wrong")
    arbitration.outcome = outcome
    arbitration.state = ArbitrationState.DECIDED
    arbitration.decided_at = utcnow()
