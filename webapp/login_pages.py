"""Log-in and log-out. The only pages open without a session are these."""

from __future__ import annotations

import secrets

from fastapi import APIRouter, Depends, Form, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from services.access import audit, people, web_sessions
from webapp.security import COOKIE, Principal, actor_of, csrf_checked, db
from webapp.templating import render

router = APIRouter()


def _safe_next(target: str) -> str:
    """Only paths of this site: never an open redirect to another host."""
    return target if target.startswith("/") and not target.startswith("//") else "/"


LOGIN_COOKIE = "eyescreen_login"
# Failed log-ins from one address within people.LOCKOUT before it is refused outright (beside
# the per-account lock of people.MAX_FAILED_LOGINS).
ADDRESS_LIMIT = 20  # the log-in form's CSRF token, before there is a session


def _login_form(request: Request, next: str, error: str | None, status: int = 200) -> Response:
    """The log-in page with a fresh form token, also set as a cookie (double submit): a page
    elsewhere cannot sign a browser into an account of its choosing."""
    token = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        {"next": _safe_next(next), "error": error, "login_token": token},
        status_code=status,
    )
    _set_private_cookie(request, response, LOGIN_COOKIE, token, 3600)
    return response


def _set_private_cookie(
    request: Request, response: Response, name: str, value: str, max_age: int
) -> None:
    """A cookie only this site's pages send back, never to scripts, Secure under HTTPS."""
    response.set_cookie(
        name,
        value,
        httponly=True,
        samesite="strict",
        secure=request.app.state.secure_cookies,
        max_age=max_age,
    )


@router.get("/login")
def login_page(request: Request, next: str = "/") -> Response:
    return _login_form(request, next, None)


@router.post("/login")
def login(
    request: Request,
    username: str = Form(...),
    password: str = Form(...),
    next: str = Form("/"),
    login_token: str = Form(""),
    session: Session = Depends(db, scope="function"),
) -> Response:
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not secrets.compare_digest(cookie, login_token):
        return _login_form(request, next, "The log-in form expired: please sign in again.", 403)
    actor = actor_of(request, None)
    if audit.recent(session, "login.failed", actor.address, people.LOCKOUT) >= ADDRESS_LIMIT:
        # Before the password is even checked: guessing from one address stops here, and the
        # accounts it aims at are not locked any further by it.
        audit.record(session, actor, "login.throttled", username=username[:64])
        return _login_form(
            request, next, "Too many failed log-ins from your computer: wait 15 minutes.", 429
        )
    person = people.authenticate(session, username.strip(), password)
    if person is None:
        audit.record(session, actor_of(request, None), "login.failed", username=username[:64])
        return _login_form(
            request, next, "Wrong user name or password, or the account is locked.", 401
        )
    token, _ = web_sessions.start(session, person, actor_of(request, person.id).address)
    audit.record(session, actor_of(request, person.id), "login")
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.delete_cookie(LOGIN_COOKIE)
    _set_private_cookie(request, response, COOKIE, token, 12 * 3600)
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
