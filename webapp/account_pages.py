"""A person's own account: their API token. Only the owner ever sees a token: an admin can
revoke one (``admin_pages``) but never read or make another person's, so a read sent with a
token is that person's own act (a service account is a person of its own, who signs in to get
its token)."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from sqlalchemy.orm import Session

from services.access import audit, people
from services.db.models import Role
from webapp.security import Principal, db, posted, signed_in
from webapp.templating import render

router = APIRouter()


@router.get("/account")
def account_page(request: Request, principal: Principal = Depends(signed_in)) -> Response:
    return render(request, "account.html", {"me": principal, "token": None, "error": None})


@router.post("/account/token")
async def new_token(
    request: Request,
    principal: Principal = Depends(posted(*Role)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    """A new token for the signed-in person, the password re-entered; shown once."""
    form = await request.form()
    person = session.merge(principal.person)
    if not people.password_matches(person, str(form.get("password") or "")):
        audit.record(session, principal.actor, "token.refused")
        context = {"me": principal, "token": None, "error": "the password is wrong"}
        return render(request, "account.html", context, status_code=422)
    token = people.new_api_token(person)
    audit.record(session, principal.actor, "token.new")
    return render(request, "account.html", {"me": principal, "token": token, "error": None})
