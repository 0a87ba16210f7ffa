"""The one table of queued work: each task name and the service call that does it.

Celery registers a task per row (``worker.tasks``) and the in-worker follow-up
(``worker.follow_up``) runs the rows marked inline through the same functions, so a
step of an image's path is written once whichever way it is reached."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from services.db.models import DeliveryState
from services.kernel.task_names import TaskName
from services.operations import recovery

if TYPE_CHECKING:
    from worker.runtime import WorkerRuntime


@dataclass(frozen=True)
class Handled:
    """What a handler did: the outbox rows its work wrote (to follow up at once), and, when it
    could not finish yet (a delivery backing off), how long to wait before trying again."""

    follow: list[int] = field(default_factory=list)
    retry_in_s: float | None = None


Handler = Callable[["WorkerRuntime", int], Handled]


def infer(rt: WorkerRuntime, instance_id: int) -> Handled:
    outcomes = rt.inference().infer_batch(instance_id, rt.worker_id, rt.batch_policy)
    return Handled([i for outcome in outcomes for i in outcome.outbox_ids])


def infer_urgent(rt: WorkerRuntime, instance_id: int) -> Handled:
    """The urgent lane: this image alone, its report built and sent right after."""
    alone = replace(rt.batch_policy, size=1)
    outcomes = rt.inference().infer_batch(instance_id, rt.worker_id, alone)
    return Handled([i for outcome in outcomes for i in outcome.outbox_ids])


def build_report(rt: WorkerRuntime, case_id: int) -> Handled:
    return Handled(list(rt.reports().build_case(case_id)))


def render_pdf(rt: WorkerRuntime, report_id: int) -> Handled:
    rt.explain_report(report_id)  # heatmaps first: the PDF shows them
    rt.reports().render_pdf(report_id)
    return Handled()


def deliver(rt: WorkerRuntime, delivery_id: int) -> Handled:
    outcome = rt.reports().deliver(delivery_id, rt.sender(), rt.asker())
    if outcome.state == DeliveryState.PENDING and outcome.retry_in_s is not None:
        return Handled(retry_in_s=outcome.retry_in_s)
    return Handled()


def deliver_hl7(rt: WorkerRuntime, delivery_id: int) -> Handled:
    """The case result to the hospital's record (ORU^R01 over MLLP), same retry as SRs."""
    outcome = rt.reports().deliver(delivery_id, rt.hl7_sender())
    if outcome.state == DeliveryState.PENDING and outcome.retry_in_s is not None:
        return Handled(retry_in_s=outcome.retry_in_s)
    return Handled()


def sweep(rt: WorkerRuntime, _: int = 0) -> Handled:
    """Outbox re-sends, quiet cases, stale claims (Celery beat; takes no id)."""
    recovery.sweep(rt.settings, rt.sessions, rt.dispatcher)
    return Handled()


HANDLERS: dict[TaskName, Handler] = {
    TaskName.INFER: infer,
    TaskName.INFER_URGENT: infer_urgent,
    TaskName.REPORT: build_report,
    TaskName.DELIVER: deliver,
    TaskName.DELIVER_HL7: deliver_hl7,
    TaskName.RENDER: render_pdf,
    TaskName.HOUSEKEEPING: sweep,
}
assert set(HANDLERS) == set(TaskName), "every task name needs its handler"

# Steps on the way from the model to the PACS, done inline by the task that made them; the
# rest (PDFs, heatmaps) waits in the queue so it never delays a report.
INLINE = frozenset({TaskName.REPORT, TaskName.DELIVER})
