"""The JSON API for hospitals whose graders use another tool: a per-person bearer token."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter, Depends, Header, HTTPException, Request
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.access import audit, people
from services.clinic import grading
from services.clinic.grading import READERS
from services.clinic.triage import triage_case
from services.db.models import Person, ReadSource, ScreeningCase, Study
from webapp.grading_pages import policy_of
from webapp.security import actor_of, db

router = APIRouter(prefix="/api")


def token_holder(
    request: Request,
    authorization: str = Header(""),
    session: Session = Depends(db, scope="function"),
) -> Person:
    scheme, _, token = authorization.partition(" ")
    person = people.person_for_token(session, token) if scheme.lower() == "bearer" else None
    if person is None:
        raise HTTPException(401, "a valid bearer token is needed")
    if person.role not in READERS:
        raise HTTPException(403, "your role does not allow this")
    return person


class EyeRead(BaseModel):
    codes: list[str] = Field(default_factory=list)
    ungradable: str | None = None
    dr: dict[str, str | bool] | None = None  # at sites that grade DR: retinopathy, maculopathy…


class ReadIn(BaseModel):
    study_instance_uid: str
    eyes: dict[str, EyeRead]
    reading_ms: int | None = None
    amend_reason: str = ""


@router.get("/worklist")
def worklist(
    request: Request,
    person: Person = Depends(token_holder),
    session: Session = Depends(db, scope="function"),
) -> dict[str, Any]:
    turnaround = timedelta(hours=request.app.state.settings.turnaround_hours)
    items, counts = grading.worklist(session, person, turnaround, limit=500)
    studies = dict(
        session.execute(
            select(ScreeningCase.id, Study.study_instance_uid)
            .join(Study)
            .where(ScreeningCase.id.in_([i.case_id for i in items]))
        ).all()
    )
    audit.record(session, actor_of(request, person.id), "api.worklist", count=len(items))
    return {
        "counts": counts,
        "cases": [
            {
                "case": item.case_id,
                "study_instance_uid": studies[item.case_id],
                "urgent": item.urgent,
                "eyes": grading.case_eyes(session, item.case_id),
                "waiting_since": item.opened_at.isoformat(),
            }
            for item in items
        ],
    }


@router.post("/reads", status_code=201)
def post_read(
    request: Request,
    body: ReadIn,
    person: Person = Depends(token_holder),
    session: Session = Depends(db, scope="function"),
) -> dict[str, Any]:
    case = session.scalar(
        select(ScreeningCase).join(Study).where(Study.study_instance_uid == body.study_instance_uid)
    )
    if case is None or case.site not in person.site_names:
        raise HTTPException(404, "no such study at your sites")
    eyes = {eye: read.model_dump(exclude_none=True) for eye, read in body.eyes.items()}
    try:
        read = grading.submit_read(
            session,
            case,
            person,
            eyes,
            body.reading_ms,
            ReadSource.API,
            body.amend_reason,
            dr_scheme=request.app.state.settings.dr_scheme_at(case.site),
        )
    except grading.ReadError as exc:
        raise HTTPException(422, str(exc)) from exc
    audit.record(
        session,
        actor_of(request, person.id),
        "read.submit",
        case.id,
        read=read.id,
        version=read.version,
        source="api",
    )
    triaged = triage_case(session, case.id, policy_of(request))
    return {
        "read": read.id,
        "version": read.version,
        "findings": read.findings,
        "referral": read.referral,
        "to_arbitration": bool(triaged and triaged.to_arbitration),
    }
