"""The model's side: reading images in batches (``inference``), turning probabilities into
findings and a referral (``decision``), which model version serves (``registry``), whether the
photographs drift from the training set (``drift``) and whether a photograph is gradable
(``quality``).

May import: the shared kernel only. Exports the decision's ``Finding`` (reports name them) and
the ``Quality`` verdicts (the clinic words an unfamiliar photograph's eye)."""

from services.screening.decision import Finding
from services.screening.quality import Quality

__all__ = ["Finding", "Quality"]
