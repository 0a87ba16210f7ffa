"""A small HTTP endpoint per process for operations: ``/metrics`` (Prometheus) and
``/healthz`` (200 when the database and the broker answer, 503 otherwise, JSON either way)."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest, multiprocess
from sqlalchemy import text

from services.db.session import make_engine, make_session_factory
from services.kernel.metrics import WorkWaiting
from services.kernel.settings import Settings

log = logging.getLogger(__name__)

Check = Callable[[], None]  # raises when unhealthy


def make_registry(settings: Settings) -> CollectorRegistry:
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
    else:
        from prometheus_client import REGISTRY

        registry = REGISTRY
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    registry.register(WorkWaiting(sessions))
    return registry


def standard_checks(settings: Settings) -> dict[str, Check]:
    engine = make_engine(settings.effective_database_url)

    def database() -> None:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))

    def broker() -> None:
        from kombu import Connection

        from worker import embedded_broker

        embedded_broker.register()
        with Connection(settings.effective_broker_url, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1)

    return {"database": database, "broker": broker}


def serve(port: int, registry: CollectorRegistry, checks: dict[str, Check]) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._reply(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif self.path == "/healthz":
                results = {}
                for name, check in checks.items():
                    try:
                        check()
                        results[name] = "ok"
                    except Exception as exc:  # any failure makes the process unhealthy
                        results[name] = f"{type(exc).__name__}: {exc}"[:200]
                healthy = all(v == "ok" for v in results.values())
                body = json.dumps({"healthy": healthy, "checks": results}).encode()
                self._reply(200 if healthy else 503, body, "application/json")
            else:
                self._reply(404, b"not found\n", "text/plain")

        def _reply(self, code: int, body: bytes, content_type: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass  # scrapes every few seconds would drown the log

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)
    threading.Thread(target=server.serve_forever, name="ops-http", daemon=True).start()
    log.info("metrics and health on port %d (/metrics, /healthz)", port)
    return server
