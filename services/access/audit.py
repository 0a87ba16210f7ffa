"""The audit trail: who did or saw what, when, from where. Rows are only ever added (on
PostgreSQL a trigger refuses updates and deletes)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import AuditEvent


@dataclass(frozen=True)
class Actor:
    """The person acting and the request they act through."""

    person_pk: int | None
    address: str = ""
    request_id: str = ""


def record(
    session: Session, actor: Actor, action: str, case_pk: int | None = None, **detail: Any
) -> None:
    """Add an audit row in the caller's transaction: it commits with the action or not at all."""
    session.add(
        AuditEvent(
            person_pk=actor.person_pk,
            action=action[:64],
            case_pk=case_pk,
            detail=detail,
            address=actor.address[:64],
            request_id=actor.request_id[:36],
        )
    )


def recent(session: Session, action: str, address: str, within: timedelta) -> int:
    """How many rows of this action came from this address lately (the log-in limit)."""
    return int(
        session.scalar(
            select(func.count())
            .select_from(AuditEvent)
            .where(
                AuditEvent.action == action,
                AuditEvent.address == address[:64],
                AuditEvent.at > utcnow() - within,
            )
        )
        or 0
    )
