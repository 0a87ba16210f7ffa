"""Workflow: who is expected and whether each of them got through. Expected visits from the
department's Modality Worklist matched to the studies that arrive (``visits``), the
modality's performed procedure steps closing a visit at once and naming missing images
(``steps``), and the failsafe list of patients who may have fallen through, per site and day,
each kept until a person closes it with a reason (``failsafe``).

May import: the shared kernel only. The gateway (MWL SCU, MPPS SCP), the web application and
the CLI call it; ``operations`` refreshes the failsafe list in its sweep."""

from services.workflow.failsafe import (
    DaySummary,
    FailsafeError,
    FailsafePolicy,
    close_item,
    day_summary,
    items,
    open_counts,
    refresh,
)
from services.workflow.steps import PerformedSteps, StepError, StepProblem, StepReport, settle_steps
from services.workflow.visits import WorklistItem, match_visits, record_worklist, unmatched_cases

__all__ = [
    "DaySummary",
    "FailsafeError",
    "FailsafePolicy",
    "PerformedSteps",
    "StepError",
    "StepProblem",
    "StepReport",
    "WorklistItem",
    "close_item",
    "day_summary",
    "items",
    "match_visits",
    "open_counts",
    "record_worklist",
    "refresh",
    "settle_steps",
    "unmatched_cases",
]
