"""Domain core of the screening pipeline: no DICOM, Celery, HTTP or torch in here.

Shared kernel (any context may import these, at any depth):
  db/          the schema (SQLAlchemy models), sessions and transactions
  kernel/      settings, domain errors, task names, the file store, the outbox, metrics
  taxonomy/    the disease trees and the label maps of the training data
  statistics/  diagnostic-accuracy arithmetic on counts and arrays

Contexts (each imports another only through its package, and only downwards):
  intake/      a received photograph becomes a stored instance in a screening case
  screening/   the model's side: inference, the decision, the model registry, drift, quality
  reporting/   a case's report, built once per content and delivered to each destination
  access/      people, their roles and sites, web sessions and the audit trail
  clinic/      graders' reads, triage, the arbitration panel and the dashboard
  study/       the prospective study's analysis records and tables
  workflow/    who is expected (worklist), performed steps (MPPS), the failsafe list
  operations/  backups and the sweeps that recover from crashes

``tests/import_rules.py`` states these rules and ``tests/unit/test_architecture.py`` checks them.
"""
