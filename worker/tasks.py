"""Celery tasks, one per row of ``worker.handlers.HANDLERS``: thin, taking ids, idempotent."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from celery import Celery, Task
from sqlalchemy.exc import OperationalError

from services.kernel.task_names import TaskName
from worker.follow_up import follow_up
from worker.handlers import HANDLERS, Handler

if TYPE_CHECKING:
    from worker.runtime import WorkerRuntime

TRANSIENT = (OperationalError, ConnectionError, TimeoutError)

RETRY_POLICY: dict[str, Any] = {
    "autoretry_for": TRANSIENT,
    "retry_backoff": 2,
    "retry_backoff_max": 300,
    "retry_jitter": True,
    "max_retries": 20,
}


def register_tasks(app: Celery, runtime: Callable[[], WorkerRuntime]) -> None:
    for name, handler in HANDLERS.items():
        _register(app, name, handler, runtime)


def _register(
    app: Celery, name: TaskName, handler: Handler, runtime: Callable[[], WorkerRuntime]
) -> None:
    def run(self: Task, *ids: int) -> None:
        rt = runtime()
        handled = handler(rt, *ids)
        if handled.retry_in_s is not None:  # e.g. a delivery backing off: not an error
            raise self.retry(countdown=handled.retry_in_s, max_retries=None)
        follow_up(rt, handled.follow)  # report and delivery right here when they can

    run.__name__ = name.value.rsplit(".", 1)[-1]
    run.__doc__ = handler.__doc__
    app.task(name=name.value, bind=True, **RETRY_POLICY)(run)
