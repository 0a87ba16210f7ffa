"""Reporting: a case's report built once per content and revision (``service``), delivered to
each destination with retries and a dead letter, and committed by the PACS (``commitment``);
what a report says (``content``), read from the case's rows (``gathering``), and what sending
it takes and gives (``sending``), whose
writers and senders the edges inject; ``predictions`` reads the latest model result of each
image of a case, which triage and the study read too.

May import: the shared kernel, ``services.screening``."""

from services.reporting.predictions import latest_predictions, latest_predictions_by_case

__all__ = ["latest_predictions", "latest_predictions_by_case"]
