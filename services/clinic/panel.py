"""The arbitration panel's work: the queue, the two reads shown blind as Read A and Read B,
signed votes, a quorum, escalation to a senior arbiter, and the final, locked decision that
becomes the case's reference standard and a verified, revised SR."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from services.access import password_matches
from services.clinic.arbitration import record_decision
from services.clinic.escalation import Step, after_vote
from services.clinic.grading import as_entered, case_eyes, derive, latest_read, normalise
from services.clinic.triage import Conflict, model_read
from services.db.base import utcnow
from services.db.models import (
    ArbitrationCase,
    ArbitrationState,
    ArbitrationVote,
    CaseRead,
    Person,
    PersonSite,
    Role,
    ScreeningCase,
)
from services.reporting import latest_predictions

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
    version: int  # the grader's read: above 1 once amended (the page says so)


def model_first(arbitration_id: int, seed: int) -> bool:
    """Whether the model's read is Read A here: fixed per arbitration, half the time each."""
    return hashlib.sha256(f"{seed}:ab:{arbitration_id}".encode()).digest()[0] % 2 == 0


def shown_reads(session: Session, arbitration: ArbitrationCase, seed: int) -> list[ShownRead]:
    """The model's read and the newest version of the grader's, in the arbitration's order."""
    model = model_read(session, arbitration.case_pk)
    read = current_read(session, arbitration)
    if model is None or read is None:
        raise DecisionError("this case lacks the model's result or the grader's read")
    machine = (
        model.findings,
        {eye: model.reasons.get(eye, "not gradable by the model") for eye in model.ungradable},
        model.referral,
        True,
        1,
    )
    human = (
        dict(read.findings),
        {eye: v["ungradable"] for eye, v in read.eyes.items() if v["ungradable"]},
        read.referral,
        False,
        read.version,
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
            or_(
                ScreeningCase.site.in_(person.site_names),
                ArbitrationCase.assigned_pk == person.id,
            ),
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


def eligible(session: Session, arbitration: ArbitrationCase, senior: bool = False) -> list[Person]:
    """Active panel members who may act on the case: of its site, or its assignee."""
    roles = (Role.SENIOR_ARBITER,) if senior else PANEL
    members = select(Person).where(Person.role.in_(roles), Person.active.is_(True))
    of_site = members.join(PersonSite).where(PersonSite.site == arbitration.case.site)
    found = {p.id: p for p in session.scalars(of_site)}
    assignee = session.get(Person, arbitration.assigned_pk) if arbitration.assigned_pk else None
    if assignee is not None and assignee.active and assignee.role in roles:
        found[assignee.id] = assignee
    return list(found.values())


def undecidable(session: Session, sites: set[str]) -> list[ArbitrationCase]:
    """Open arbitrations of these sites that nobody eligible can decide: escalated with no
    active senior arbiter (or assignee), or with no active panel member at all. The
    dashboard lists them; an admin assigns them to a senior arbiter."""
    open_ones = session.scalars(
        select(ArbitrationCase)
        .join(ScreeningCase, ScreeningCase.id == ArbitrationCase.case_pk)
        .where(ArbitrationCase.state == ArbitrationState.OPEN, ScreeningCase.site.in_(sites))
        .order_by(ArbitrationCase.opened_at)
    )
    return [a for a in open_ones if not eligible(session, a, senior=True)]


def assign(session: Session, arbitration: ArbitrationCase, senior: Person) -> None:
    """Give a case to an active senior arbiter (of any site), as its final, escalated act."""
    if senior.role != Role.SENIOR_ARBITER or not senior.active:
        raise DecisionError(f"{senior.username} is not an active senior arbiter")
    if arbitration.state != ArbitrationState.OPEN:
        raise DecisionError("this arbitration is decided and locked")
    arbitration.assigned_pk = senior.id
    arbitration.escalated = True


def _may_decide(arbitration: ArbitrationCase, person: Person) -> None:
    """An active panel member of the case's site (or its assignee), on an open arbitration;
    once escalated, a senior arbiter (the queue shows escalated cases to them only)."""
    if person.role not in PANEL or not person.active:
        raise DecisionError("only members of the arbitration panel decide")
    if arbitration.case.site not in person.site_names and arbitration.assigned_pk != person.id:
        raise DecisionError("not a case of your sites")
    if arbitration.state != ArbitrationState.OPEN:
        raise DecisionError("this arbitration is decided and locked")
    if arbitration.escalated and person.role != Role.SENIOR_ARBITER:
        raise DecisionError("escalated: a senior arbiter decides this case")


def current_read(session: Session, arbitration: ArbitrationCase) -> CaseRead | None:
    """The newest version of the read that sent the case: its grader's latest amendment."""
    read = arbitration.read
    if read is None:
        return None
    return latest_read(session, arbitration.case_pk, read.grader_pk) or read


def read_history(session: Session, arbitration: ArbitrationCase) -> list[CaseRead]:
    """Every version of the grader's read of the case, oldest first."""
    read = arbitration.read
    if read is None:
        return []
    return list(
        session.scalars(
            select(CaseRead)
            .where(CaseRead.case_pk == arbitration.case_pk, CaseRead.grader_pk == read.grader_pk)
            .order_by(CaseRead.version)
        )
    )


def _content(
    session: Session,
    arbitration: ArbitrationCase,
    reads: Mapping[str, ShownRead],
    choice: str,
    other: Mapping[str, Any] | None,
    comment: str,
) -> tuple[dict[str, list[str]], bool]:
    """What the vote says: an adopted read, or the eyes the arbiter entered one by one."""
    if choice in reads:
        return reads[choice].findings, reads[choice].referral
    if choice != "other" or other is None:
        raise DecisionError("choose Read A, Read B or another decision")
    eyes = normalise(as_entered(other), case_eyes(session, arbitration.case_pk))
    findings, referral = derive(eyes)
    same_as = [r for r in reads.values() if r.findings == findings and r.referral == referral]
    if not same_as and not comment.strip():
        raise DecisionError("overriding both reads needs a comment")
    return findings, referral


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
    """A signed vote (the password re-entered) on the current version of the grader's read.
    Returns what happened: "decided", "waiting" for more votes, or "escalated" (the rule is
    ``escalation.after_vote``). Once escalated, a senior arbiter's vote is the final decision,
    whether or not they voted before. The decision is locked."""
    _may_decide(arbitration, arbiter)
    if not password_matches(arbiter, password):
        raise DecisionError("the signature's password is wrong")
    read = current_read(session, arbitration)
    reads = {r.label: r for r in shown_reads(session, arbitration, seed)}
    findings, referral = _content(session, arbitration, reads, choice, other, comment)
    assert read is not None  # shown_reads refused a case without one
    on_this_read = select(ArbitrationVote).where(
        ArbitrationVote.arbitration_pk == arbitration.id, ArbitrationVote.read_pk == read.id
    )
    if arbitration.escalated:  # _may_decide let only a senior arbiter through
        same = [
            v.arbiter_pk
            for v in session.scalars(on_this_read.order_by(ArbitrationVote.id))
            if v.findings == findings and v.referral == referral
        ]  # who signed this very content before: co-signers of the final decision
        _decide(session, arbitration, arbiter, findings, referral, comment, choice, reads, same)
        return Step.DECIDED
    if any(v.arbiter_pk == arbiter.id for v in session.scalars(on_this_read)):
        raise DecisionError("you have already voted on this version of the read")
    session.add(
        ArbitrationVote(
            arbitration_pk=arbitration.id,
            arbiter_pk=arbiter.id,
            read_pk=read.id,
            choice=choice,
            findings=findings,
            referral=referral,
            comment=comment.strip(),
        )
    )
    session.flush()
    votes = session.scalars(on_this_read.order_by(ArbitrationVote.id)).all()
    agreeing = [v for v in votes if v.findings == findings and v.referral == referral]
    voted = {v.arbiter_pk for v in votes}
    left = [p for p in eligible(session, arbitration) if p.id not in voted]
    step = after_vote(len(agreeing), len(votes), quorum, len(left))
    if step == Step.DECIDED:
        signers = [v.arbiter_pk for v in agreeing]
        _decide(session, arbitration, arbiter, findings, referral, comment, choice, reads, signers)
    elif step == Step.ESCALATED:
        arbitration.escalated = True
    return step


def _decide(
    session: Session,
    arbitration: ArbitrationCase,
    arbiter: Person,
    findings: dict[str, list[str]],
    referral: bool,
    comment: str,
    choice: str,
    reads: Mapping[str, ShownRead],
    signers: list[int],
) -> None:
    adopted = reads[choice].is_model if choice in reads else None
    note = comment.strip()
    if adopted is not None:
        note = (
            note + " " if note else ""
        ) + f"[adopted the {'model' if adopted else 'grader'}'s read]"
    present = {code: True for codes in findings.values() for code in codes}
    read = current_read(session, arbitration)
    basis = {
        "read": read.id if read else None,
        "read_version": read.version if read else None,
        "predictions": [p.id for p in latest_predictions(session, arbitration.case_pk)],
    }
    record_decision(
        session,
        arbitration,
        arbiter,
        present,
        referral,
        note,
        eyes=findings,
        basis=basis,
        signers=list(dict.fromkeys([*signers, arbiter.id])),
    )


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


def votes_still_needed(session: Session, arbitration: ArbitrationCase, quorum: int) -> int:
    """How many more agreeing votes an open arbitration waits for (0 once decided)."""
    if arbitration.decided_at is not None:
        return 0
    cast = session.scalar(
        select(func.count(ArbitrationVote.id)).where(
            ArbitrationVote.arbitration_pk == arbitration.id
        )
    )
    return max(0, quorum - int(cast or 0))
