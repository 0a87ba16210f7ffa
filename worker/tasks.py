"""Thin, named tasks taking ids; the work is in services. Each is idempotent."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from sqlalchemy.exc import OperationalError

from services.db.models import DeliveryState
from services.recovery import housekeeping
from services.task_names import TaskName

if TYPE_CHECKING:
    from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)

TRANSIENT = (OperationalError, ConnectionError, TimeoutError)


def register_tasks(app: Celery, runtime: Callable[[], WorkerRuntime]) -> None:
    retry_policy: dict[str, Any] = {
        "autoretry_for": TRANSIENT,
        "retry_backoff": 2,
        "retry_backoff_max": 300,
        "retry_jitter": True,
        "max_retries": 20,
    }

    @app.task(name=TaskName.INFER.value, **retry_policy)
    def infer(instance_id: int) -> None:
        rt = runtime()
        for outcome in rt.inference().infer_batch(instance_id, rt.worker_id, rt.batch_policy):
            rt.follow_up(outcome.outbox_ids)  # report and delivery right here when they can

    @app.task(name=TaskName.INFER_URGENT.value, **retry_policy)
    def infer_urgent(instance_id: int) -> None:
        """The urgent lane: this image alone, its report built and sent right here."""
        rt = runtime()
        alone = replace(rt.batch_policy, size=1)
        for outcome in rt.inference().infer_batch(instance_id, rt.worker_id, alone):
            rt.follow_up(outcome.outbox_ids)

    @app.task(name=TaskName.REPORT.value, **retry_policy)
    def build_report(case_id: int) -> None:
        rt = runtime()
        rt.follow_up(rt.reports().build_case(case_id))

    @app.task(name=TaskName.RENDER.value, **retry_policy)
    def render_pdf(report_id: int) -> None:
        rt = runtime()
        rt.explain_report(report_id)  # heatmaps first: the PDF shows them
        rt.reports().render_pdf(report_id)

    @app.task(name=TaskName.DELIVER.value, bind=True, **retry_policy)
    def deliver_report(self: Task, delivery_id: int) -> None:
        rt = runtime()
        outcome = rt.reports().deliver(delivery_id, rt.sender())
        if outcome.state == DeliveryState.PENDING and outcome.retry_in_s is not None:
            raise self.retry(countdown=outcome.retry_in_s, max_retries=None)

    @app.task(name=TaskName.HOUSEKEEPING.value, **retry_policy)
    def sweep() -> None:
        rt = runtime()
        housekeeping(
            rt.sessions,
            rt.dispatcher,
            timedelta(seconds=rt.settings.outbox_resend_after_s),
            timedelta(minutes=rt.settings.case_quiet_minutes),
            timedelta(seconds=rt.settings.stale_after_s),
            rt.settings.pdf_reports,
        )
