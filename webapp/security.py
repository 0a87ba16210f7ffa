"""Who is asking: the signed-in person behind a request, their roles and sites, CSRF checks.
Everything but the log-in page goes through ``signed_in``; every case goes through
``case_for`` so another site's case is refused on the server, whatever the page or URL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi import Path as PathParam
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.access import web_sessions
from services.access.audit import Actor
from services.db.models import (
    ArbitrationCase,
    ArbitrationState,
    Person,
    Role,
    ScreeningCase,
    WebSession,
)

COOKIE = "eyescreen_session"

# Ids in URLs are database keys (64-bit): a larger number is refused with 422 before any query
# (it used to reach PostgreSQL and fail there with a 500).
MAX_ID = 2**63 - 1
RowId = Annotated[int, PathParam(ge=0, le=MAX_ID)]


class NotSignedIn(Exception):
    """No live session: pages redirect to the log-in page, the API and images answer 401."""


@dataclass
class Principal:
    person: Person
    web_session: WebSession
    actor: Actor

    @property
    def csrf(self) -> str:
        return self.web_session.csrf_token


def db(request: Request) -> Iterator[Session]:
    """One session per request, committed when the handler returns without error. Used as
    ``Depends(db, scope="function")`` so the commit happens before the response is sent: a
    redirect after a POST never reaches the browser ahead of the data it points at."""
    sessions: sessionmaker[Session] = request.app.state.sessions
    with sessions() as session, session.begin():
        yield session


def actor_of(request: Request, person_pk: int | None) -> Actor:
    address = request.client.host if request.client else ""
    return Actor(person_pk, address, request.state.request_id)


def signed_in(request: Request, session: Session = Depends(db, scope="function")) -> Principal:
    token = request.cookies.get(COOKIE)
    idle = timedelta(minutes=request.app.state.settings.web_session_idle_minutes)
    row = web_sessions.current(session, token, idle) if token else None
    if row is None:
        raise NotSignedIn()
    return Principal(row.person, row, actor_of(request, row.person.id))


def require(*roles: Role) -> Callable[..., Principal]:
    """A dependency admitting only people with one of these roles."""

    def check(principal: Principal = Depends(signed_in)) -> Principal:
        if principal.person.role not in roles:
            raise HTTPException(403, "your role does not allow this")
        return principal

    return check


async def csrf_checked(request: Request, principal: Principal = Depends(signed_in)) -> Principal:
    """For every POST from a page: the form's (or header's) token must be the session's."""
    token = request.headers.get("x-csrf-token")
    if token is None:
        form = await request.form()
        value = form.get("csrf_token")
        token = value if isinstance(value, str) else None
    if not web_sessions.csrf_matches(principal.web_session, token):
        raise HTTPException(403, "the form's security token is missing or stale: reload the page")
    return principal


def posted(*roles: Role) -> Callable[..., Awaitable[Principal]]:
    """For a form POST: the CSRF token checked, then the role (as ``require`` for pages)."""

    async def check(principal: Principal = Depends(csrf_checked)) -> Principal:
        if principal.person.role not in roles:
            raise HTTPException(403, "your role does not allow this")
        return principal

    return check


def case_for(session: Session, principal: Principal, case_id: int) -> ScreeningCase:
    """The case, if it belongs to one of the person's sites; otherwise 404 (so another site's
    case ids do not even show that they exist)."""
    case = session.get(ScreeningCase, case_id)
    if case is None or not (
        case.site in principal.person.site_names or _assigned(session, principal, case_id)
    ):
        raise HTTPException(404, "no such case at your sites")
    return case


def _assigned(session: Session, principal: Principal, case_id: int) -> bool:
    """An admin gave this open arbitration to this (senior) arbiter of another site."""
    return (
        session.scalar(
            select(ArbitrationCase.id).where(
                ArbitrationCase.case_pk == case_id,
                ArbitrationCase.assigned_pk == principal.person.id,
                ArbitrationCase.state == ArbitrationState.OPEN,
            )
        )
        is not None
    )
