"""The study's statistics: proportions with intervals, diagnostic accuracy, ROC with DeLong,
paired comparisons, agreement, calibration and the decision curve, verification-bias
correction and the patient-level cluster bootstrap. Pure functions on counts and arrays; the
study data come from ``services.study.records``.

May import: nothing else of ``services``. Imported by every context (at any depth)."""
