"""Operations: online backups and their restore (``backup``), and the periodic sweep
(``recovery.sweep``) that brings work back after a crash or an outage (outbox re-sends, stale
claims, pending deliveries), closes visits gone quiet for ``EYESCREEN_CASE_QUIET_MINUTES``
(those without a completed MPPS), triages cases whose model result came after the grader,
escalates overdue arbitrations and refreshes the workflow's failsafe list.

May import: the shared kernel, ``services.clinic``, ``services.workflow``."""
