"""What the panel has signed on a case, for the people who open it afterwards: the votes on the
current read version (the senior arbiter who settles an escalation sees what was voted and
why) and, once decided, the decision with everyone who signed it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.models import (
    ArbitrationCase,
    ArbitrationDecision,
    ArbitrationState,
    ArbitrationVote,
    Person,
)


@dataclass(frozen=True)
class SignedVote:
    arbiter: str  # display name, as DICOM PN
    choice: str  # A, B or other
    findings: dict[str, list[str]]  # eye -> codes, all levels
    referral: bool
    comment: str
    signed_at: datetime


@dataclass(frozen=True)
class SignedDecision:
    signers: tuple[str, ...]  # display names; the deciding arbiter first
    eyes: dict[str, list[str]]  # eye -> codes, all levels ({} for an outcome)
    referral: bool | None  # None: an ungradable case's outcome, no diagnosis
    outcome: str | None
    comment: str
    decided_at: datetime


def votes_on_current_read(session: Session, arbitration: ArbitrationCase) -> list[SignedVote]:
    """The signed votes on the read version under arbitration, oldest first."""
    votes = session.scalars(
        select(ArbitrationVote)
        .where(
            ArbitrationVote.arbitration_pk == arbitration.id,
            ArbitrationVote.read_pk == arbitration.read_pk,
        )
        .order_by(ArbitrationVote.signed_at, ArbitrationVote.id)
    )
    return [
        SignedVote(
            session.get_one(Person, vote.arbiter_pk).display_name,
            vote.choice,
            dict(vote.findings),
            vote.referral,
            vote.comment,
            vote.signed_at,
        )
        for vote in votes
    ]


def decision_of(session: Session, arbitration: ArbitrationCase) -> SignedDecision | None:
    """The decision that closed the arbitration, None while it is open."""
    if arbitration.state != ArbitrationState.DECIDED:
        return None
    decision = session.scalars(
        select(ArbitrationDecision)
        .where(ArbitrationDecision.arbitration_pk == arbitration.id)
        .order_by(ArbitrationDecision.id.desc())
    ).first()
    decided_at = arbitration.decided_at or (decision.decided_at if decision else None)
    assert decided_at is not None  # a decided arbitration records when
    if decision is None:  # an ungradable case: the outcome chosen, no diagnosis
        return SignedDecision((), {}, None, arbitration.outcome, "", decided_at)
    signers = [decision.decided_by_pk, *(pk for pk in decision.signers or [])]
    names = tuple(dict.fromkeys(session.get_one(Person, pk).display_name for pk in signers))
    return SignedDecision(
        names,
        dict(decision.eyes or {}),
        decision.referral,
        arbitration.outcome,
        decision.comment,
        decided_at,
    )
