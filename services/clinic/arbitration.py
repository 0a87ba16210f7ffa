"""Recording the arbitration panel's decision on a case; the revised, verified report follows."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import (
    ArbitrationCase,
    ArbitrationDecision,
    ArbitrationState,
    AuditEvent,
    Person,
    Role,
)
from services.kernel.outbox import add_message
from services.kernel.task_names import REPORT_TASK


class NotAnArbiter(PermissionError):
    """Only members of the arbitration panel decide cases."""


def record_decision(
    session: Session,
    arbitration: ArbitrationCase,
    arbiter: Person,
    findings: dict[str, bool],
    referral: bool,
    comment: str = "",
    eyes: dict[str, list[str]] | None = None,
    basis: dict[str, Any] | None = None,
    signers: list[int] | None = None,
) -> ArbitrationDecision:
    """Store the decision with what it was made on (``basis``) and everyone who signed it,
    close the arbitration, audit it and queue the revised report."""
    if arbiter.role not in (Role.ARBITER, Role.SENIOR_ARBITER) or not arbiter.active:
        raise NotAnArbiter(f"{arbiter.username} is not an active member of the panel")
    decision = ArbitrationDecision(
        arbitration_pk=arbitration.id,
        case_pk=arbitration.case_pk,
        decided_by_pk=arbiter.id,
        findings=findings,
        referral=referral,
        comment=comment,
        eyes=eyes,
        basis=basis,
        signers=signers or [arbiter.id],
    )
    session.add(decision)
    arbitration.state = ArbitrationState.DECIDED
    arbitration.decided_at = utcnow()
    session.flush()
    session.add(
        AuditEvent(
            person_pk=arbiter.id,
            action="arbitration.decide",
            case_pk=arbitration.case_pk,
            detail={
                "decision": decision.id,
                "referral": referral,
                "eyes": eyes or {},
                "basis": basis or {},
                "signers": decision.signers,
            },
        )
    )
    add_message(session, REPORT_TASK, arbitration.case_pk)
    return decision
