"""The study's statistics: diagnostic accuracy with intervals, ROC with DeLong, paired
comparisons, agreement, verification-bias correction and the patient-level cluster bootstrap.
Pure functions on counts and arrays; the study data come from ``services.study``."""
