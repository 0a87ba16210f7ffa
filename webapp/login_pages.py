"""Log-in and log-out. The only pages open without a session are these."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from services import audit, people, web_sessions
from webapp.app import render
from webapp.security import COOKIE, Principal, actor_of, csrf_checked, db

router = APIRouter()


def _safe_next(target: str) -> str:
    """Only paths of this site: never an open redirect to another host."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return render(request, "login.html", {"next": _safe_next(next), "error": None})


@router.post("/login")
def login(
    request: Request,
    username: str = Form(...),
    password: str = Form(...),
    next: str = Form("/"),
    session: Session = Depends(db, scope="function"),
) -> Response:
    person = people.authenticate(session, username.strip(), password)
    if person is None:
        audit.record(session, actor_of(request, None), "login.failed", username=username[:64])
        return render(
            request,
            "login.html",
            {
                "next": _safe_next(next),
                "error": "Wrong user name or password, or the account is locked.",
            },
            status_code=401,
        )
    token, _ = web_sessions.start(session, person, actor_of(request, person.id).address)
    audit.record(session, actor_of(request, person.id), "login")
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(
        COOKIE,
        token,
        httponly=True,
        samesite="strict",
        secure=request.app.state.secure_cookies,
        max_age=12 * 3600,
    )
    return response


@router.post("/logout")
def logout(
    request: Request,
    principal: Principal = Depends(csrf_checked),
    session: Session = Depends(db, scope="function"),
) -> Response:
    row = session.merge(principal.web_session)
    web_sessions.end(row)
    audit.record(session, principal.actor, "logout")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(COOKIE)
    return response
