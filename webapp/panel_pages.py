"""The arbitration panel's pages: the queue, the case with Read A and Read B, the signed vote,
and the outcome queue for ungradable cases."""

from __future__ import annotations

from datetime import date
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from services.access import audit
from services.clinic import grading, panel, panel_record
from services.clinic.dr_grading import describe
from services.clinic.panel import PANEL, DecisionError
from services.clinic.triage import Conflict
from services.db.models import ArbitrationCase, CaseRead
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
    done: int | None = None,
    result: str = "",
    principal: Principal = Depends(require(*PANEL)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    voted = _voted_message(request, session, principal, done, result) if done else None
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
            "voted": voted,
        },
    )


def _voted_message(
    request: Request, session: Session, principal: Principal, done: int, result: str
) -> str:
    """What the arbiter's vote did, said on the queue they come back to."""
    arbitration = _arbitration(session, principal, done)
    if result == "decided" or arbitration.decided_at is not None:
        return f"Arbitration #{done}: your vote is recorded and the case is decided."
    if result == "escalated":
        return f"Arbitration #{done}: you voted; the votes disagree, a senior arbiter decides."
    quorum = request.app.state.settings.arbitration_quorum
    more = panel.votes_still_needed(session, arbitration, quorum)
    votes = "vote" if more == 1 else "votes"
    return f"Arbitration #{done}: you voted; waiting for {more} more {votes}."


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
    return _arbitration_page(request, session, principal, arbitration)


def _arbitration_page(
    request: Request,
    session: Session,
    principal: Principal,
    arbitration: ArbitrationCase,
    refused: dict[str, Any] | None = None,
) -> Response:
    """The case with both reads; after a refused vote, again with what was entered
    (``refused``: the error, its field, the form's values) and status 422."""
    seed = request.app.state.settings.qc_seed
    outcome_queue = arbitration.conflict == Conflict.UNGRADABLE
    return render(
        request,
        "arbitration_case.html",
        (refused or {"error": None, "given": {}, "given_eyes": {}})
        | {
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
            "dr": None,  # the panel decides findings; the grader's DR grade is shown as read
            "grader_dr": _grader_dr(panel.current_read(session, arbitration)),
            "decision": panel_record.decision_of(session, arbitration),
            "votes": panel_record.votes_on_current_read(session, arbitration)
            if arbitration.escalated
            else [],
        }
        | finding_choices(session, arbitration.case_pk),
        status_code=422 if refused else 200,
    )


def _grader_dr(read: CaseRead | None) -> dict[str, str]:
    """The DR grade per eye of the grader's read under arbitration, in words (sites that grade
    DR only). Shown apart from Read A and B: it does not say which of them is the model's."""
    eyes = read.eyes if read is not None else {}
    return {eye: describe(read.get("dr")) for eye, read in eyes.items() if read.get("dr")}


def _field_of(message: str) -> str:
    """Which field of the vote form a refusal is about, to show it beside that field."""
    lowered = message.lower()
    if "password" in lowered or "signature" in lowered:
        return "password"
    if "comment" in lowered:
        return "comment"
    return "choice"


def _as_given(form: FormData, eyes: list[str]) -> dict[str, Any]:
    """The vote form's values as typed, to put back on the page after a refusal (never the
    password: it is not written into a page)."""
    return {
        "error": None,
        "given": {k: str(form.get(k) or "") for k in ("choice", "comment", "outcome")},
        "given_eyes": {
            eye: {
                "state": str(form.get(f"eye_{eye}_state") or ""),
                "codes": [str(c) for c in form.getlist(f"eye_{eye}_code")],
                "reason": str(form.get(f"eye_{eye}_reason") or ""),
            }
            for eye in eyes
        },
    }


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
        # Rendered, not raised: the refusal's audit row is committed with the request. The
        # page comes back with what was typed and the reason beside its field.
        refused = _as_given(form, list(grading.case_eyes(session, arbitration.case_pk)))
        refused["error"] = {"message": str(exc), "field": _field_of(str(exc))}
        return _arbitration_page(request, session, principal, arbitration, refused)
    return RedirectResponse(f"/arbitration?done={arbitration.id}&result={result}", status_code=303)
