"""The clinic: graders' reads and their worklist (``grading``), the model-against-grader
comparison that sends a case to the panel (``triage``), the panel's votes and decisions
(``panel``, ``arbitration``; what was signed, for the pages: ``panel_record``), the rule
that takes every arbitration to a decision (``escalation``) and the dashboard's figures
(``dashboard``).

May import: the shared kernel, ``services.access``, ``services.reporting``,
``services.screening``."""

from services.clinic.grading import eye_of
from services.clinic.panel import escalate_overdue
from services.clinic.triage import Conflict, Rule, TriagePolicy, triage_case, untriaged_cases

__all__ = [
    "Conflict",
    "Rule",
    "TriagePolicy",
    "escalate_overdue",
    "eye_of",
    "triage_case",
    "untriaged_cases",
]
