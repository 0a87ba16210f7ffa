"""The gateway process: Storage SCP plus the sweeper that re-sends outbox rows and stale work."""

from __future__ import annotations

import logging
import signal
import threading
from datetime import timedelta
from types import FrameType

from dicom_gateway.handlers import StoreContext
from dicom_gateway.server import start_scp
from services.db.session import make_engine, make_session_factory, transaction
from services.ingest import IngestService
from services.outbox import OutboxDispatcher
from services.recovery import requeue_stale_work
from services.routing import Router
from services.settings import Settings
from services.storage import ContentStore
from worker.app import create_app

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 10.0


def run_gateway(settings: Settings) -> None:
    settings.ensure_dirs()
    app = create_app(settings)
    publish_lock = threading.Lock()

    def publish(task_name: str, args: list[object]) -> None:
        with publish_lock:
            app.eyescreen_runtime.publish(task_name, list(args))  # type: ignore[attr-defined]

    sessions = make_session_factory(make_engine(settings.effective_database_url))
    store = ContentStore(settings.images_dir, settings.min_free_disk_mb * 2**20)
    dispatcher = OutboxDispatcher(sessions, publish)
    router = Router(by_ae=settings.route_by_ae, default=settings.default_route)
    server = start_scp(settings, StoreContext(IngestService(sessions, store), dispatcher, router))

    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        log.info("gateway stopping (signal %d)", signum)
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        while not stop.wait(SWEEP_EVERY_S):
            _sweep(sessions, dispatcher, settings)
    finally:
        server.shutdown()
        log.info("gateway stopped")


def _sweep(sessions, dispatcher: OutboxDispatcher, settings: Settings) -> None:  # type: ignore[no-untyped-def]
    try:
        with transaction(sessions) as session:
            ids = requeue_stale_work(session, timedelta(minutes=10))
        dispatcher.dispatch(ids)
        dispatcher.sweep(timedelta(seconds=settings.outbox_resend_after_s))
    except Exception:  # the database may be down for a while: log, keep serving, try again
        log.exception("sweep failed; will retry")
