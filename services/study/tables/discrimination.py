"""Per-class AUC with DeLong and patient-bootstrap intervals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.statistics.bootstrap import bootstrap_auc
from services.statistics.roc import delong
from services.study.records import EyeRecord
from services.study.tables.common import (
    Options,
    Row,
    assessed_classes,
    has_reference,
    num,
)


def auc(records: Sequence[EyeRecord], options: Options) -> list[Row]:
    """The model's AUC per class with DeLong's interval and a patient-cluster bootstrap."""
    rows = []
    for level, route, code, name in assessed_classes(records):
        eyes = [
            r for r in records if r.route == route and has_reference(r) and code in r.probabilities
        ]
        truth = np.array([code in (r.reference or set()) for r in eyes])
        if not truth.any() or truth.all():
            continue
        scores = np.array([r.probabilities[code] for r in eyes])
        result = delong(scores, truth)

        low, high = bootstrap_auc(
            scores, truth, [r.patient_key for r in eyes], options.replicates, options.seed
        )
        rows.append(
            {
                "level": level,
                "code": code,
                "class": name,
                "positives": result.positives,
                "negatives": result.negatives,
                "auc": num(result.auc),
                "delong_low": num(result.low),
                "delong_high": num(result.high),
                "bootstrap_low": num(low),
                "bootstrap_high": num(high),
            }
        )
    return rows
