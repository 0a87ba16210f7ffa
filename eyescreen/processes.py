"""The gateway process: Storage SCP plus the sweeper that re-sends outbox rows and stale work."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from datetime import timedelta
from types import FrameType

from dicom_gateway.server import start_gateway
from dicom_gateway.worklist import WorklistSchedule
from services.db.session import make_engine, make_session_factory
from services.intake.ingest import IngestService
from services.intake.routing import Router
from services.kernel.outbox import BackgroundDispatch, OutboxDispatcher
from services.kernel.settings import Settings
from services.kernel.storage import ContentStore
from services.operations.recovery import sweep
from worker.app import create_app

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 5.0  # a killed worker's work waits a lease and at most this


# Set in the extra processes of a gateway with ``gateway_processes`` > 1: they serve the port
# only; the first process also sweeps and serves the metrics.
LISTENER_ONLY = "EYESCREEN_GATEWAY_LISTENER_ONLY"


def run_gateway(settings: Settings) -> None:
    settings.ensure_dirs()
    primary = os.environ.get(LISTENER_ONLY) != "1"
    listeners = [
        subprocess.Popen(
            [sys.executable, "-m", "eyescreen", "gateway"], env={**os.environ, LISTENER_ONLY: "1"}
        )
        for _ in range(settings.gateway_processes - 1 if primary else 0)
    ]
    app = create_app(settings)
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    store = ContentStore(settings.images_dir, settings.min_free_disk_mb * 2**20)
    lease = timedelta(seconds=settings.inline_lease_s)  # a worker's hold on inline work
    dispatcher = OutboxDispatcher(sessions, app.eyescreen_runtime.publish, lease)  # type: ignore[attr-defined]
    background = BackgroundDispatch(dispatcher)
    router = Router.from_settings(settings)
    gateway = start_gateway(
        settings, IngestService(sessions, store, settings.site), background, router
    )
    if settings.gateway_metrics_port and primary:
        from eyescreen.ops_server import make_registry, serve, standard_checks

        serve(settings.gateway_metrics_port, make_registry(settings), standard_checks(settings))

    worklists = WorklistSchedule(settings, sessions)
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("gateway stopping (signal %d)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop.wait(SWEEP_EVERY_S):
            if any(listener.poll() is not None for listener in listeners):
                log.error("a gateway listener process exited; stopping the gateway")
                break  # the supervisor (or the container) restarts the gateway whole
            if not primary:
                continue
            try:
                sweep(settings, sessions, dispatcher)
                worklists.tick()
            except Exception:  # the database may be down for a while: keep serving, try again
                log.exception("sweep failed; will retry")
    finally:
        for listener in listeners:
            listener.terminate()
        gateway.shutdown()
        background.drain()
        for listener in listeners:
            listener.wait(30)
        log.info("gateway stopped")
