"""The shared kernel's plumbing: typed settings, the domain error hierarchy, the closed list of
task names, the content-addressed file store, the transactional outbox and the metrics.

May import: ``services.db``. Imported by every context (at any depth)."""
