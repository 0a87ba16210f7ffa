"""Admins' and everyone's overview pages: the dashboard with grader QA, users, the audit trail."""

from __future__ import annotations

import csv
import io

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.access import audit, people, web_sessions
from services.clinic import dashboard, panel
from services.db.base import utcnow
from services.db.models import ArbitrationCase, AuditEvent, Person, PersonSite, Role
from services.reporting.service import requeue_dead
from services.workflow import open_counts
from webapp.security import (
    MAX_ID,
    Principal,
    RowId,
    case_for,
    db,
    posted,
    require,
    signed_in,
)
from webapp.templating import render

router = APIRouter()
ADMIN = require(Role.ADMIN)


@router.get("/dashboard")
def dashboard_page(
    request: Request,
    principal: Principal = Depends(signed_in),
    session: Session = Depends(db, scope="function"),
) -> Response:
    sites = principal.person.site_names
    named = principal.person.role == Role.ADMIN
    return render(
        request,
        "dashboard.html",
        {
            "me": principal,
            "overview": dashboard.overview(session, sites),
            "graders": dashboard.grader_quality(session, sites, principal.person, named),
            "named": named,
            "failsafe": open_counts(session, sites),
            "undecidable": panel.undecidable(session, sites),
            "seniors": session.scalars(
                select(Person)
                .where(Person.role == Role.SENIOR_ARBITER, Person.active.is_(True))
                .order_by(Person.username)
            ).all()
            if named
            else [],
        },
    )


@router.post("/admin/arbitrations/{arbitration_id}/assign")
async def assign_arbitration(
    request: Request,
    arbitration_id: RowId,
    principal: Principal = Depends(posted(Role.ADMIN)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    """A case nobody of its site can decide, given to a senior arbiter (of any site)."""
    arbitration = session.get(ArbitrationCase, arbitration_id)
    if arbitration is None:
        raise HTTPException(404, "no such arbitration")
    case_for(session, principal, arbitration.case_pk)  # an admin of the case's site
    form = await request.form()
    senior = session.scalar(select(Person).where(Person.username == str(form.get("senior") or "")))
    if senior is None:
        raise HTTPException(422, "choose a senior arbiter")
    try:
        panel.assign(session, arbitration, senior)
    except panel.DecisionError as exc:
        raise HTTPException(422, str(exc)) from exc
    audit.record(
        session,
        principal.actor,
        "arbitration.assign",
        arbitration.case_pk,
        arbitration=arbitration.id,
        to=senior.username,
    )
    return RedirectResponse("/dashboard", status_code=303)


@router.post("/dashboard/resend/{delivery_id}")
def resend(
    delivery_id: RowId,
    principal: Principal = Depends(posted(Role.ADMIN)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    requeue_dead(session, [delivery_id])
    audit.record(session, principal.actor, "delivery.resend", delivery=delivery_id)
    return RedirectResponse("/dashboard", status_code=303)


@router.get("/admin/users")
def users_page(
    request: Request,
    principal: Principal = Depends(ADMIN),
    session: Session = Depends(db, scope="function"),
) -> Response:
    return _users(request, principal, session)


def _users(
    request: Request,
    principal: Principal,
    session: Session,
    error: str | None = None,
) -> Response:
    """The users page, or it with why an addition was refused."""
    everyone = session.scalars(select(Person).order_by(Person.username)).all()
    return render(
        request,
        "users.html",
        {
            "me": principal,
            "people": everyone,
            "roles": list(Role),
            "error": error,
            "now": utcnow(),  # who is locked out now
        },
        status_code=422 if error else 200,
    )


@router.post("/admin/users")
async def add_user(
    request: Request,
    principal: Principal = Depends(posted(Role.ADMIN)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    form = await request.form()
    sites = [s.strip() for s in str(form.get("sites") or "").split(",")]
    try:
        person = people.add_person(
            session,
            str(form.get("username") or "").strip(),
            str(form.get("display_name") or "").strip(),
            Role(str(form.get("role") or "")),
            sites,
            str(form.get("password") or ""),
            arbitrate_all=form.get("arbitrate_all") == "on",
        )
    except (people.AccountError, ValueError) as exc:
        return _users(request, principal, session, error=str(exc))
    audit.record(
        session,
        principal.actor,
        "user.add",
        user=person.username,
        role=person.role.value,
        sites=sorted(person.site_names),
    )
    return RedirectResponse("/admin/users", status_code=303)


@router.post("/admin/users/{person_id}/{action}")
async def change_user(
    request: Request,
    person_id: RowId,
    action: str,
    principal: Principal = Depends(posted(Role.ADMIN)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    person = session.get(Person, person_id)
    if person is None:
        raise HTTPException(404, "no such user")
    form = await request.form()
    if action == "disable":
        person.active = False
        web_sessions.end_all(session, person)  # re-enabling must not revive old cookies
    elif action == "enable":
        person.active = True
    elif action == "unlock":
        person.failed_logins, person.locked_until = 0, None
    elif action == "sign-off":
        person.arbitrate_all = False
    elif action == "reset-password":
        try:
            people.reset_password(person, str(form.get("password") or ""))
        except people.AccountError as exc:
            raise HTTPException(422, str(exc)) from exc
    elif action == "revoke-token":  # never "show": a token is seen by its owner only
        person.api_token_sha256 = None
    elif action == "sites":
        person.sites = [PersonSite(site=s.strip()) for s in str(form.get("sites") or "").split(",")]
    else:
        raise HTTPException(404, "no such action")
    audit.record(session, principal.actor, f"user.{action}", user=person.username)
    return RedirectResponse("/admin/users", status_code=303)


@router.get("/admin/audit")
def audit_page(
    request: Request,
    action: str = "",
    case: str = "",
    format: str = "html",
    principal: Principal = Depends(ADMIN),
    session: Session = Depends(db, scope="function"),
) -> Response:
    query = select(AuditEvent, Person.username).outerjoin(Person, Person.id == AuditEvent.person_pk)
    if action:
        query = query.where(AuditEvent.action.startswith(action))
    case_id = int(case) if case.strip().isdigit() and int(case) <= MAX_ID else None
    if case_id is not None:
        query = query.where(AuditEvent.case_pk == case_id)
    rows = session.execute(
        query.order_by(AuditEvent.id.desc()).limit(5000 if format == "csv" else 200)
    ).all()
    audit.record(
        session,
        principal.actor,
        "audit.export" if format == "csv" else "audit.view",
        filter_action=action,
        filter_case=case_id,
    )
    if format == "csv":
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(["id", "at", "user", "action", "case", "address", "request_id", "detail"])
        for event, username in rows:
            writer.writerow(
                [
                    event.id,
                    event.at.isoformat(),
                    username or "",
                    event.action,
                    event.case_pk or "",
                    event.address,
                    event.request_id,
                    event.detail,
                ]
            )
        return Response(
            out.getvalue(),
            media_type="text/csv",
            headers={"Content-Disposition": "attachment; filename=audit.csv"},
        )
    return render(
        request, "audit.html", {"me": principal, "rows": rows, "action": action, "case": case_id}
    )
