"""The FastAPI application: settings and database in, routes, templates and static files."""

from __future__ import annotations

import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import APIRouter, FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import HTTPException, RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session, sessionmaker

from services.db.session import make_engine, make_session_factory
from services.kernel.settings import Settings
from services.kernel.storage import ContentStore
from webapp import (
    account_pages,
    admin_pages,
    api,
    failsafe_pages,
    grading_pages,
    login_pages,
    panel_pages,
    stats_pages,
)
from webapp.security import NotSignedIn
from webapp.templating import make_templates, render

HERE = Path(__file__).parent
API_PREFIXES = ("/api/", "/images/", "/heatmaps/")

# Pages may load only this server's scripts, styles and images; nothing framed, nothing inline.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
        "frame-ancestors 'none'; form-action 'self'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


def create_app(settings: Settings, sessions: sessionmaker[Session] | None = None) -> FastAPI:
    app = FastAPI(title="eyescreen", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.settings = settings
    app.state.sessions = sessions or make_session_factory(
        make_engine(settings.effective_database_url)
    )
    app.state.images = ContentStore(settings.images_dir, 0)
    app.state.templates = make_templates()
    app.state.secure_cookies = settings.web_certificate is not None
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.middleware("http")
    async def request_id_and_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        request.state.request_id = str(uuid.uuid4())
        started = time.perf_counter()
        response = await call_next(request)
        elapsed_ms = (time.perf_counter() - started) * 1000
        response.headers["Server-Timing"] = f"app;dur={elapsed_ms:.1f}"  # bench/webapp.py reads it
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        response.headers["X-Request-Id"] = request.state.request_id
        return response

    @app.exception_handler(NotSignedIn)
    async def to_login(request: Request, _: NotSignedIn) -> Response:
        if request.url.path.startswith(API_PREFIXES) or request.method != "GET":
            return JSONResponse({"detail": "sign in first"}, status_code=401)
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith(API_PREFIXES):
            return JSONResponse({"detail": exc.detail}, status_code=exc.status_code)
        return render(
            request,
            "error.html",
            {"status": exc.status_code, "message": exc.detail},
            status_code=exc.status_code,
        )

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        """A page asked for with a malformed id or form gets a page that says so (the API keeps
        FastAPI's JSON, which names the field)."""
        if request.url.path.startswith(API_PREFIXES):
            return await request_validation_exception_handler(request, exc)
        message = "That address or form is not valid (an id must be a whole number)."
        return render(request, "error.html", {"status": 422, "message": message}, 422)

    for router in routers():
        app.include_router(router)
    return app


def routers() -> list[APIRouter]:
    """Every router of the application (the access tests walk all their routes)."""
    modules = (
        login_pages,
        account_pages,
        grading_pages,
        panel_pages,
        admin_pages,
        stats_pages,
        failsafe_pages,
        api,
    )
    return [m.router for m in modules]
