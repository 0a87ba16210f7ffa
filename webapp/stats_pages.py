"""The statisticians' download page: a de-identified study export for a filter, as a zip."""

from __future__ import annotations

import io
import tempfile
import zipfile
from datetime import date, datetime
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from reports.study_export import export
from services.access import audit
from services.db.models import Instance, ModelVersion, Role
from services.study.protocol import load_protocol
from services.study.records import Filters, study_key
from webapp.security import Principal, db, posted, require
from webapp.templating import render

router = APIRouter()
ANALYSTS = (Role.STATISTICIAN, Role.ADMIN)


@router.get("/stats")
def stats_page(
    request: Request,
    principal: Principal = Depends(require(*ANALYSTS)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    versions = sorted(set(session.scalars(select(ModelVersion.version))))
    cameras = sorted(set(session.scalars(select(Instance.calling_ae).distinct())) - {""})
    return render(
        request, "stats.html", {"me": principal, "versions": versions, "cameras": cameras}
    )


def _day(value: str) -> date | None:
    try:
        return datetime.strptime(value, "%Y-%m-%d").date() if value else None
    except ValueError as exc:
        raise HTTPException(422, f"not a date: {value!r} (YYYY-MM-DD)") from exc


@router.post("/stats/export")
async def stats_export(
    request: Request,
    principal: Principal = Depends(posted(*ANALYSTS)),
    session: Session = Depends(db, scope="function"),
) -> Response:
    form = await request.form()
    asked = {str(s).strip() for s in form.getlist("site") if str(s).strip()}
    allowed = principal.person.site_names
    refused = sorted(asked - allowed) if allowed else sorted(asked) or ["(no site of yours)"]
    if refused:  # never another site's cases, and never "no filter" in place of a refusal
        audit.record(
            session, principal.actor, "stats.refused", asked=sorted(asked), refused=refused
        )
        message = f"not a site of yours: {', '.join(refused)}"
        return render(request, "error.html", {"status": 403, "message": message}, status_code=403)
    sites = tuple(sorted(asked or allowed))
    filters = Filters(
        _day(str(form.get("date_from") or "")),
        _day(str(form.get("date_to") or "")),
        sites,
        tuple(str(r) for r in form.getlist("route") if r),
        tuple(str(v) for v in form.getlist("model_version") if v),
        tuple(str(c).strip() for c in form.getlist("camera") if str(c).strip()),
    )
    settings = request.app.state.settings
    key = study_key(settings.study_key_file or settings.data_path / "study.key")
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        snapshot = export(
            session,
            filters,
            out,
            key,
            None,  # the protocol's bootstrap
            identified=False,
            protocol=load_protocol(settings.study_protocol_file),
        )
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(out.iterdir()):
                archive.write(path, path.name)
    audit.record(
        session,
        principal.actor,
        "stats.export",
        identified=False,
        asked=sorted(asked),
        filters=snapshot["filters"],
        eyes=snapshot["eyes"],
    )
    return Response(
        buffer.getvalue(),
        media_type="application/zip",
        headers={"Content-Disposition": "attachment; filename=study-export.zip"},
    )
