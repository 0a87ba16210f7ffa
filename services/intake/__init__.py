"""Intake: a received photograph becomes a durable file, an instance row in its visit's
screening case and a queued inference, in one transaction (``ingest``), many associations'
images per commit (``group_commit``); ``routing`` picks the model route.

May import: the shared kernel only. Exports nothing other contexts need."""
