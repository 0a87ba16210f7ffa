"""Workflow: who is expected and whether each of them got through. Expected visits from the
department's Modality Worklist matched to the studies that arrive (``visits``), the
modality's performed procedure steps closing a visit at once and naming missing images
(``steps``), and the failsafe list of patients who may have fallen through, per site and day,
each kept until a person closes it with a reason (``failsafe``).

May import: the shared kernel only. The gateway (MWL SCU, MPPS SCP), the web application and
the CLI call it; ``operations`` refreshes the failsafe list in its sweep."""

from services.workflow.steps import PerformedSteps, StepError, StepProblem, StepReport
from services.workflow.visits import WorklistItem, match_visits, record_worklist, unmatched_cases

__all__ = [
    "PerformedSteps",
    "StepError",
    "StepProblem",
    "StepReport",
    "WorklistItem",
    "match_visits",
    "record_worklist",
    "unmatched_cases",
]
