"""The arbitration panel's pages: the queue, the case with Read A and Read B, the signed vote,
and the outcome queue for ungradable cases."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from services.access import audit
from services.clinic import grading, panel
from services.clinic.panel import PANEL, DecisionError
from services.clinic.triage import Conflict
from services.db.models import ArbitrationCase
from webapp.grading_pages import entered_eyes_from_form, finding_choices, photos_by_eye
from webapp.security import Principal, RowId, case_for, db, posted, require
from webapp.templating import render

router = APIRouter()


def _arbitration(session: Session, principal: Principal, arbitration_id: int) -> ArbitrationCase:
    arbitration = session.get(ArbitrationCase, arbitration_id)
    if arbitration is None:
        raise HTTPException(404, "no such arbitration")
    case_for(session, principal, arbitration.case_pk)  # refuses another site's case
    return arbitration


def _day(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError as exc:
        raise HTTPException(422, f"not a date: {value!r} (YYYY-MM-DD)") from exc


@router.get("/arbitration")
def queue_page(
    request: Request,
    conflict: str = "",
    outcomes: bool = False,
    site: str = "",
    opened_from: str = "",
    opened_to: str = "",
    finding: str = "",
    principal: Principal = Depends(require(*PANEL)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    items = panel.queue(
        session,
        principal.person,
        conflict or None,
        outcomes,
        site=site or None,
        opened_from=_day(opened_from),
        opened_to=_day(opened_to),
        finding=finding or None,
    )
    return render(
        request,
        "arbitration_queue.html",
        {
            "me": principal,
            "items": items,
            "conflicts": [c.value for c in Conflict if c != Conflict.UNGRADABLE],
            "conflict": conflict,
            "outcomes": outcomes,
            "site": site,
            "opened_from": opened_from,
            "opened_to": opened_to,
            "finding": finding,
            "findings": grading.gradable_findings(),
        },
    )


@router.get("/arbitration/{arbitration_id}")
def arbitration_page(
    request: Request,
    arbitration_id: RowId,
    principal: Principal = Depends(require(*PANEL)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    arbitration = _arbitration(session, principal, arbitration_id)
    audit.record(
        session,
        principal.actor,
        "arbitration.view",
        arbitration.case_pk,
        arbitration=arbitration.id,
    )
    seed = request.app.state.settings.qc_seed
    outcome_queue = arbitration.conflict == Conflict.UNGRADABLE
    return render(
        request,
        "arbitration_case.html",
        {
            "me": principal,
            "arbitration": arbitration,
            "case": arbitration.case,
            "patient": arbitration.case.study.patient,
            "photos": photos_by_eye(session, arbitration.case_pk),
            "reads": [] if outcome_queue else panel.shown_reads(session, arbitration, seed),
            "ungradable_read": panel.current_read(session, arbitration),
            "history": panel.read_history(session, arbitration),
            "outcome_queue": outcome_queue,
            "outcomes": panel.OUTCOMES,
        }
        | finding_choices(session, arbitration.case_pk),
    )


@router.post("/arbitration/{arbitration_id}/vote")
async def vote(
    request: Request,
    arbitration_id: RowId,
    principal: Principal = Depends(posted(*PANEL)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    arbitration = _arbitration(session, principal, arbitration_id)
    form = await request.form()
    settings = request.app.state.settings
    password = str(form.get("password") or "")
    try:
        if arbitration.conflict == Conflict.UNGRADABLE:
            outcome = str(form.get("outcome") or "")
            panel.decide_outcome(session, arbitration, principal.person, password, outcome)
            result = "decided"
            audit.record(
                session,
                principal.actor,
                "arbitration.outcome",
                arbitration.case_pk,
                arbitration=arbitration.id,
                outcome=outcome,
            )
        else:
            choice = str(form.get("choice") or "")
            eyes = list(grading.case_eyes(session, arbitration.case_pk))
            other = entered_eyes_from_form(form, eyes) if choice == "other" else None
            result = panel.vote(
                session,
                arbitration,
                principal.person,
                password,
                choice,
                other,
                str(form.get("comment") or ""),
                settings.arbitration_quorum,
                settings.qc_seed,
            )
            audit.record(
                session,
                principal.actor,
                "arbitration.vote",
                arbitration.case_pk,
                arbitration=arbitration.id,
                choice=choice,
                result=result,
            )
    except (DecisionError, grading.ReadError) as exc:
        audit.record(
            session,
            principal.actor,
            "arbitration.refused",
            arbitration.case_pk,
            arbitration=arbitration.id,
            reason=str(exc)[:200],
        )
        # Rendered, not raised: the refusal's audit row is committed with the request.
        return render(request, "error.html", {"status": 422, "message": str(exc)}, status_code=422)
    return RedirectResponse(f"/arbitration?done={arbitration.id}&result={result}", status_code=303)
