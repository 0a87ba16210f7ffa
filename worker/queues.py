"""The worker's queues: which task goes to which, and the order a worker reads them in.
Kept apart from the Celery app so that the supervisor can name them without loading it."""

from __future__ import annotations

from services.kernel.task_names import INFER_URGENT_TASK

QUEUES = ("inference", "reports", "housekeeping", "urgent")
# The order a worker takes its queues in. With Redis ("priority" order) a queue is read only
# while the ones before it are empty, so the small, patient-facing work comes first: an urgent
# image, then building and sending reports of images already read, then the sweeps, and only
# then new images. With inference first, a backlog of thousands kept SRs that waited for a
# PACS to come back, and the sweeps, waiting until the whole backlog was read (57 minutes in
# the 5,000-photograph soak).
CONSUME_ORDER = ("urgent", "reports", "housekeeping", "inference")


def queues_option(urgent: bool = True) -> str:
    """``--queues`` for a worker: every queue in ``CONSUME_ORDER``, without urgent if it has a
    worker of its own."""
    return ",".join(q for q in CONSUME_ORDER if urgent or q != "urgent")


def queue_for(task_name: str) -> str:
    if task_name == INFER_URGENT_TASK:
        return "urgent"
    prefix = task_name.split(".", 1)[0]
    return {"screening": "inference", "reports": "reports"}.get(prefix, "housekeeping")
