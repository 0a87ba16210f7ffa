"""The failsafe page: per site and day, who was expected and who may have fallen through; an
admin closes an item with a reason. Viewing and closing are audited; other sites' items are
neither shown nor closable."""

from __future__ import annotations

from datetime import date

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy.orm import Session

from services.access import audit
from services.db.models import ExpectedVisit, FailsafeItem, Role, ScreeningCase
from services.workflow import FailsafeError, close_item, day_summary, items
from webapp.security import Principal, db, posted, signed_in
from webapp.templating import render

router = APIRouter()


def _who(session: Session, item: FailsafeItem) -> tuple[str, str]:
    """(patient id, name) of the item's visit or case: the clinic must know whom to call."""
    if item.case_pk is not None:
        patient = session.get_one(ScreeningCase, item.case_pk).study.patient
        return patient.patient_id, patient.name
    if item.visit_pk is not None:
        visit = session.get_one(ExpectedVisit, item.visit_pk)
        return visit.patient_id, visit.patient_name
    return "", ""


@router.get("/failsafe")
def failsafe_page(
    request: Request,
    day: str = "",
    closed: bool = False,
    principal: Principal = Depends(signed_in),
    session: Session = Depends(db, scope="function"),
) -> Response:
    if day and not (len(day) == 8 and day.isdigit()):
        raise HTTPException(422, "day: write YYYYMMDD")
    sites = sorted(principal.person.site_names)
    shown = items(session, sites, day or None, closed)
    summary_day = day or date.today().strftime("%Y%m%d")
    audit.record(session, principal.actor, "failsafe.view", day=day, items=[i.id for i in shown])
    return render(
        request,
        "failsafe.html",
        {
            "me": principal,
            "rows": [(item, *_who(session, item)) for item in shown],
            "summaries": [day_summary(session, site, summary_day) for site in sites],
            "day": day,
            "closed": closed,
            "error": request.query_params.get("error", ""),
        },
    )


@router.post("/failsafe/{item_id}/close")
def close(
    item_id: int,
    reason: str = Form(""),
    principal: Principal = Depends(posted(Role.ADMIN)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    try:
        item = close_item(
            session, item_id, principal.person.id, reason, principal.person.site_names
        )
    except FailsafeError as exc:
        if "no failsafe item" in str(exc):
            raise HTTPException(404, str(exc)) from None
        raise HTTPException(422, str(exc)) from None
    audit.record(
        session,
        principal.actor,
        "failsafe.close",
        item.case_pk,
        item=item_id,
        kind=item.kind.value,
        reason=item.close_reason,
    )
    return RedirectResponse("/failsafe", status_code=303)
