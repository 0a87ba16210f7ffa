"""The in-worker follow-up: the outbox rows a task wrote that are marked inline in the task
table (build the case's report, deliver it) are done at once by the same process, so one task
carries an image from the model to the PACS without queue round trips. Whatever is not done here
goes to the queue as usual; the rows stay the safety net."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable

from sqlalchemy import select

from services.db.models import ReportDelivery
from services.kernel.outbox import finish, give_back, take
from services.kernel.task_names import TaskName
from worker.failpoints import reach
from worker.handlers import HANDLERS, INLINE
from worker.runtime import WorkerRuntime

log = logging.getLogger(__name__)


def follow_up(rt: WorkerRuntime, outbox_ids: Iterable[int]) -> None:
    """Do the work these outbox rows announce (build the case's report, deliver it) here
    and now, so that one task carries an image from the model to the PACS without queue
    round trips; the reports of a batch go to each PACS over one association. Whatever is
    not done here (PDFs, a failed or backing-off delivery, an error) is handed to the queue
    as usual; the rows stay the safety net."""
    pending = list(outbox_ids)
    if pending:
        reach(rt.settings, "after-predictions")  # fault tests: rows written, none taken yet
    deliveries: dict[int, int] = {}  # delivery id -> its outbox row, sent together below
    while pending:
        message_id = pending.pop(0)
        taken = _take(rt, message_id)
        if taken is None:
            continue
        task, argument = taken
        if task == TaskName.DELIVER:
            deliveries[argument] = message_id
            continue
        try:
            done = follow_one(rt, task, argument, pending)
        except Exception:  # handed to the queue, which retries with backoff
            log.exception("inline %s(%s) failed; queued instead", task, argument)
            done = False
        if done:
            finish(rt.sessions, [message_id])
        else:
            _queue(rt, message_id)
    _deliver_together(rt, deliveries)


def _take(rt: WorkerRuntime, message_id: int) -> tuple[TaskName, int] | None:
    taken = take(rt.sessions, message_id, rt.worker_id)
    if taken is None:
        return None
    task, args = taken
    return TaskName(task), int(args[0])


def _queue(rt: WorkerRuntime, message_id: int) -> None:
    give_back(rt.sessions, message_id)
    rt.dispatcher.dispatch([message_id])


def follow_one(rt: WorkerRuntime, name: TaskName, argument: int, pending: list[int]) -> bool:
    """Run one inline row's handler here; False leaves the row to the queue."""

    if name not in INLINE:
        return False
    handled = HANDLERS[name](rt, argument)
    if handled.retry_in_s is not None:
        return False
    pending.extend(handled.follow)
    return True


def _deliver_together(rt: WorkerRuntime, deliveries: dict[int, int]) -> None:
    """Deliver the reports now, one association per destination; a destination that failed
    a moment ago is left to the queue's backoff, as is every delivery not done here."""
    now = time.monotonic()
    destinations = _destinations(rt, list(deliveries))
    todo = [
        delivery_id
        for delivery_id in deliveries
        if now >= rt.unreachable_until.get(destinations[delivery_id], 0.0)
    ]
    try:
        outcomes = rt.reports().deliver_together(todo, rt.sender(), rt.asker()) if todo else {}
    except Exception:
        log.exception("inline delivery of %d report(s) failed; queued instead", len(todo))
        outcomes = {}
    finished = []
    for delivery_id, message_id in deliveries.items():
        outcome = outcomes.get(delivery_id)
        if outcome is not None and outcome.retry_in_s is None:
            finished.append(message_id)  # delivered, or dead-lettered for an administrator
            continue
        if outcome is not None and outcome.error is not None:
            rt.unreachable_until[destinations[delivery_id]] = now + 60
        _queue(rt, message_id)
    finish(rt.sessions, finished)


def _destinations(rt: WorkerRuntime, delivery_ids: list[int]) -> dict[int, str]:
    """Each delivery's destination, in one query."""
    if not delivery_ids:
        return {}
    with rt.sessions() as session:
        rows = session.execute(
            select(ReportDelivery.id, ReportDelivery.destination).where(
                ReportDelivery.id.in_(delivery_ids)
            )
        )
        return {delivery_id: destination for delivery_id, destination in rows}
