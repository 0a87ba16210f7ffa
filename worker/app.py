"""The Celery application, built from settings by whoever starts a worker or publishes."""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery
from celery.signals import task_failure, task_retry, worker_process_init
from kombu import Queue

from services.kernel.settings import Settings
from services.kernel.task_names import TaskName
from worker import embedded_broker
from worker.queues import QUEUES, queue_for
from worker.runtime import WorkerRuntime
from worker.tasks import register_tasks


class RuntimeHolder:
    """Creates the worker runtime lazily, once per process (after fork in prefork children)."""

    def __init__(self, settings: Settings, app: Celery) -> None:
        self.settings = settings
        self.app = app
        self._runtime: WorkerRuntime | None = None
        self._lock = threading.Lock()
        self._publish_lock = threading.Lock()  # kombu producers are not thread-safe

    def get(self) -> WorkerRuntime:
        with self._lock:
            if self._runtime is None:
                self._runtime = WorkerRuntime(self.settings, self.publish)
            return self._runtime

    def publish(self, task_name: str, args: list[Any]) -> None:
        with self._publish_lock:
            self.app.send_task(task_name, args=args, queue=queue_for(task_name))


def _count_task_errors() -> None:
    from services.kernel.metrics import TASK_ERRORS

    def failed(sender: Any = None, exception: BaseException | None = None, **_: Any) -> None:
        TASK_ERRORS.labels(task=getattr(sender, "name", "?"), kind=type(exception).__name__).inc()

    def retried(sender: Any = None, reason: Any = None, **_: Any) -> None:
        kind = type(reason).__name__ if isinstance(reason, BaseException) else "retry"
        TASK_ERRORS.labels(task=getattr(sender, "name", "?"), kind=kind).inc()

    task_failure.connect(failed, weak=False)
    task_retry.connect(retried, weak=False)


def create_app(settings: Settings) -> Celery:
    settings.ensure_dirs()
    app = Celery("eyescreen", broker=settings.effective_broker_url, set_as_current=True)
    embedded_broker.register()
    transport_options: dict[str, Any] = {}
    if settings.effective_broker_url.startswith("redis"):
        # An unacknowledged message comes back after this long (a worker lost mid-task).
        transport_options = {"visibility_timeout": 3600, "queue_order_strategy": "priority"}
    app.conf.update(
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_acks_on_failure_or_timeout=True,
        worker_prefetch_multiplier=1,
        task_time_limit=600,
        task_soft_time_limit=540,
        task_default_queue="inference",
        task_queues=[Queue(name) for name in QUEUES],
        broker_transport_options=transport_options,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=4,
        # Publishing gives up quickly: the outbox row stays and the sweeper re-sends it.
        task_publish_retry_policy={
            "max_retries": 2,
            "interval_start": 0,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
        task_serializer="json",
        # Housekeeping by Celery beat where one runs (``eyescreen worker --beat``); the gateway
        # sweeps too, so the embedded profile needs no beat.
        beat_schedule={
            "housekeeping": {
                "task": TaskName.HOUSEKEEPING.value,
                "schedule": 30.0,
                "options": {"queue": "housekeeping", "expires": 60},
            }
        },
        accept_content=["json"],
    )
    holder = RuntimeHolder(settings, app)
    register_tasks(app, holder.get)

    def _warm(**_: Any) -> None:
        holder.get().warm_up()

    worker_process_init.connect(_warm, weak=False)
    _count_task_errors()
    app.eyescreen_runtime = holder  # type: ignore[attr-defined]
    return app
