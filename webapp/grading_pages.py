"""The graders' pages: worklist, the case (both eyes, every photograph), the read, images."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from services.access import audit
from services.clinic import grading
from services.clinic.dr_grading import describe, scheme_named
from services.clinic.grading import READERS, ImportFailed, ReadError
from services.clinic.triage import Rule, TriagePolicy, model_read, triage_case
from services.db.models import Instance, Prediction, Role
from webapp.images import for_browser, heatmap_png
from webapp.security import MAX_ID, Principal, RowId, case_for, db, posted, require, signed_in
from webapp.templating import render

router = APIRouter()


def policy_of(request: Request) -> TriagePolicy:
    settings = request.app.state.settings
    return TriagePolicy(Rule(settings.discrepancy_rule), settings.qc_sample_rate, settings.qc_seed)


@router.get("/")
def home(principal: Principal = Depends(signed_in)) -> Response:
    role = principal.person.role
    target = {
        Role.GRADER: "/worklist",
        Role.ARBITER: "/arbitration",
        Role.SENIOR_ARBITER: "/arbitration",
    }.get(role, "/dashboard")
    return RedirectResponse(target, status_code=303)


@router.get("/worklist")
def worklist_page(
    request: Request,
    page: Annotated[int, Query(ge=0, le=MAX_ID // 50)] = 0,
    saved: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    principal: Principal = Depends(require(*READERS)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    settings = request.app.state.settings
    turnaround = timedelta(hours=settings.turnaround_hours)
    items, counts = grading.worklist(session, principal.person, turnaround, 50, page * 50)
    stuck = grading.stuck_cases(session, principal.person.site_names, timedelta(hours=1))
    return render(
        request,
        "worklist.html",
        {
            "me": principal,
            "items": items,
            "counts": counts,
            "page": page,
            "stuck": stuck,
            "turnaround_hours": settings.turnaround_hours,
            "saved": saved,
        },
    )


@router.get("/cases/next")
def next_case(
    after: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    saved: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    principal: Principal = Depends(require(*READERS)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    """The next case to read; ``saved`` (the case just read) is carried on to say so there."""
    if after is not None:
        grading.release(session, after, principal.person)  # skipped: free for a colleague
    case_id = grading.next_case(session, principal.person, after)
    target = f"/cases/{case_id}" if case_id else "/worklist"
    return RedirectResponse(target + (f"?saved={saved}" if saved else ""), status_code=303)


def photos_by_eye(session: Session, case_id: int) -> dict[str, list[dict[str, Any]]]:
    eyes: dict[str, list[dict[str, Any]]] = {}
    for instance in session.scalars(
        select(Instance).where(Instance.case_pk == case_id).order_by(Instance.id)
    ):
        eyes.setdefault(grading.eye_of(instance.laterality), []).append(
            {"id": instance.id, "route": instance.route, "state": instance.state.value}
        )
    return {eye: eyes[eye] for eye in grading.EYES if eye in eyes}


@router.get("/cases/{case_id}")
def case_page(
    request: Request,
    case_id: RowId,
    saved: Annotated[int | None, Query(ge=0, le=MAX_ID)] = None,
    principal: Principal = Depends(require(*READERS)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    case = case_for(session, principal, case_id)
    settings = request.app.state.settings
    mine = grading.latest_read(session, case_id, principal.person.id)
    held = True
    if mine is None:
        held = grading.lease(session, case_id, principal.person, settings.read_lease_minutes)
    audit.record(session, principal.actor, "case.view", case_id)
    unblinded = mine is not None or not settings.blind_at(case.site)
    return render(
        request,
        "case.html",
        {
            "me": principal,
            "case": case,
            "patient": case.study.patient,
            "study": case.study,
            "photos": photos_by_eye(session, case_id),
            "mine": mine,
            "held": held,
            "model": model_read(session, case_id) if unblinded else None,
            "saved": saved,
            "place": _place(session, principal, case_id) if mine is None else None,
            "dr": scheme_named(settings.dr_scheme_at(case.site)),
            "dr_text": describe,
        }
        | finding_choices(session, case_id),
    )


def _place(session: Session, principal: Principal, case_id: int) -> dict[str, int] | None:
    found = grading.place_in_list(session, principal.person, case_id)
    return {"n": found[0], "total": found[1], "cap": grading.PLACE_CAP} if found else None


@router.post("/cases/{case_id}/release")
def release_case(
    case_id: RowId,
    principal: Principal = Depends(posted(*READERS)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    """The page sends this as it is left unread (a beacon): the case is free for a colleague
    at once instead of when the lease runs out."""
    case_for(session, principal, case_id)
    grading.release(session, case_id, principal.person)
    return Response(status_code=204)


def finding_choices(session: Session, case_id: int) -> dict[str, Any]:
    """What the grading form offers for a case: the case's eyes, per eye the numbered level-2
    findings of the photo types taken of it, and every finding's display name."""
    findings = grading.gradable_findings()
    eyes = grading.case_eyes(session, case_id)
    return {
        "eyes": eyes,
        "numbered": {e: [f for f in findings if f.route in routes] for e, routes in eyes.items()},
        "names": {f.code: f"{f.parent_name}: {f.name}" for f in findings},
    }


def entered_eyes_from_form(form: FormData, eyes: list[str]) -> dict[str, Any]:
    """Each eye as the form states it, blank states kept blank (for ``grading.as_entered``)."""
    return {
        eye: {
            "state": str(form.get(f"eye_{eye}_state") or ""),
            "codes": [str(c) for c in form.getlist(f"eye_{eye}_code")],
            "ungradable": str(form.get(f"eye_{eye}_reason") or ""),
        }
        for eye in eyes
    }


def eyes_from_form(form: FormData, eyes: list[str]) -> dict[str, Any]:
    """The grader's read as the form states it. An eye with nothing entered (no state, no
    finding ticked) is refused, never taken as normal: nobody may have looked at it."""
    given: dict[str, Any] = {}
    for eye in eyes:
        state = form.get(f"eye_{eye}_state") or ""
        codes = [str(c) for c in form.getlist(f"eye_{eye}_code")]
        reason = str(form.get(f"eye_{eye}_reason") or "")
        if not state and not codes:
            raise ReadError(f"eye {eye}: nothing entered (normal, findings or ungradable)")
        if state == "ungradable":
            given[eye] = {"codes": [], "ungradable": reason or "unspecified"}
            continue
        given[eye] = {"codes": [] if state == "normal" else codes, "ungradable": None}
        dr = {
            field: str(form.get(f"eye_{eye}_dr_{field}") or "")
            for field in ("retinopathy", "maculopathy", "photocoagulation")
        }
        if any(dr.values()):
            given[eye]["dr"] = dr | {"photocoagulation": bool(dr["photocoagulation"])}
    return given


@router.post("/cases/{case_id}/read")
async def submit_read(
    request: Request,
    case_id: RowId,
    principal: Principal = Depends(posted(*READERS)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    case = case_for(session, principal, case_id)
    form = await request.form()
    eyes = list(grading.case_eyes(session, case_id))
    mine_before = grading.latest_read(session, case_id, principal.person.id)
    try:
        reading_ms = int(str(form.get("reading_ms") or "0")) or None
    except ValueError:
        reading_ms = None
    try:
        read = grading.submit_read(
            session,
            case,
            principal.person,
            eyes_from_form(form, eyes),
            reading_ms,
            amend_reason=str(form.get("amend_reason") or ""),
            # an amendment is made after seeing the model's output
            blinded=request.app.state.settings.blind_at(case.site) and mine_before is None,
            dr_scheme=request.app.state.settings.dr_scheme_at(case.site),
        )
    except ReadError as exc:
        raise HTTPException(422, str(exc)) from exc
    audit.record(
        session,
        principal.actor,
        "read.amend" if read.version > 1 else "read.submit",
        case_id,
        read=read.id,
        version=read.version,
    )
    triage_case(session, case_id, policy_of(request))
    target = (
        f"/cases/next?after={case_id}&saved={case_id}"
        if form.get("then") == "next"
        else f"/cases/{case_id}?saved={case_id}"
    )
    return RedirectResponse(target, status_code=303)


def _instance_for(session: Session, principal: Principal, instance_id: int) -> Instance:
    """The image, if its case is one the person may open. Another site's image and a missing
    one get the same answer, so ids do not tell what exists elsewhere."""
    instance = session.get(Instance, instance_id)
    try:
        if instance is None:
            raise HTTPException(404)
        case_for(session, principal, instance.case_pk)
    except HTTPException as exc:
        raise HTTPException(404, "no such image") from exc
    return instance


@router.get("/images/{instance_id}.png")
def image(
    request: Request,
    instance_id: RowId,
    view: str = "plain",
    principal: Principal = Depends(signed_in),
    session: Session = Depends(db, scope="function"),
) -> Response:
    if principal.person.role not in READERS:
        raise HTTPException(403, "your role does not allow this")
    instance = _instance_for(session, principal, instance_id)
    audit.record(
        session, principal.actor, "image.view", instance.case_pk, instance=instance_id, view=view
    )
    data = request.app.state.images.read(instance.sha256)
    picture, media_type = for_browser(
        instance.sha256, data, "redfree" if view == "redfree" else "plain"
    )
    return Response(picture, media_type=media_type, headers={"Cache-Control": "private, no-store"})


@router.get("/heatmaps/{instance_id}.png")
def heatmap(
    request: Request,
    instance_id: RowId,
    principal: Principal = Depends(signed_in),
    session: Session = Depends(db, scope="function"),
) -> Response:
    """The model's Grad-CAM: for the panel, and for a grader only after their own read."""
    instance = _instance_for(session, principal, instance_id)
    role = principal.person.role
    if role not in READERS or (
        role == Role.GRADER
        and grading.latest_read(session, instance.case_pk, principal.person.id) is None
    ):
        raise HTTPException(403, "the model's output is shown after your own read")
    path = session.scalar(
        select(Prediction.heatmap_path)
        .where(Prediction.instance_pk == instance_id, Prediction.heatmap_path.is_not(None))
        .order_by(Prediction.id.desc())
    )
    if path is None:
        raise HTTPException(404, "no heatmap for this image")
    audit.record(session, principal.actor, "heatmap.view", instance.case_pk, instance=instance_id)
    store = request.app.state.images
    return Response(
        heatmap_png(path, lambda: store.read(instance.sha256)),
        media_type="image/png",
        headers={"Cache-Control": "private, no-store"},
    )


@router.post("/reads/import")
async def import_reads(
    request: Request,
    upload: UploadFile,
    principal: Principal = Depends(posted(Role.ADMIN)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    text = (await upload.read()).decode("utf-8-sig", errors="replace")
    try:
        with session.begin_nested():
            reads = grading.import_csv(session, text, principal.person.site_names)
    except ImportFailed as exc:
        return render(
            request,
            "import_result.html",
            {"me": principal, "problems": exc.problems, "count": 0},
            status_code=422,
        )
    for read in reads:
        triage_case(session, read.case_pk, policy_of(request))
    audit.record(session, principal.actor, "reads.import", count=len(reads))
    return render(
        request, "import_result.html", {"me": principal, "problems": [], "count": len(reads)}
    )
