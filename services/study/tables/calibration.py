"""Calibration of the model's risks, the reliability diagram and the decision curve, weighted
(verified eyes, inverse probability of verification) and naive."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.statistics.calibration import calibration, net_benefit, reliability
from services.study.records import EyeRecord
from services.study.tables.common import ANALYSES, Row, num, verification
from services.study.tables.discrimination import auc_targets, scored_eyes


def calibration_rows(records: Sequence[EyeRecord]) -> tuple[list[Row], list[Row], list[Row]]:
    """Calibration per class and for any disease; reliability bins; decision curve."""
    summary, bins, curve = [], [], []
    analyses = {a: verification(records, a) for a in ANALYSES}
    for _level, route, code, name, score in auc_targets(records):
        for analysis in ANALYSES:
            eyes, p, y, w = scored_eyes(records, route, code, score, analyses[analysis])
            if not eyes:
                continue
            fitted = calibration(p, y, w)
            summary.append(
                {
                    "target": name,
                    "code": code,
                    "analysis": analysis,
                    "eyes": fitted.n,
                    "events": fitted.events,
                    "brier": num(fitted.brier),
                    "intercept": num(fitted.intercept),
                    "slope": num(fitted.slope),
                }
            )
            for predicted, observed, count in reliability(p, y, weights=w):
                bins.append(
                    {
                        "target": name,
                        "code": code,
                        "analysis": analysis,
                        "mean_predicted": num(predicted),
                        "observed": num(observed),
                        "eyes": count,
                    }
                )
            if not code:
                curve += _decision_curve(eyes, p, y, w, analysis)
    return summary, bins, curve


def _decision_curve(
    eyes: Sequence[EyeRecord], p: np.ndarray, y: np.ndarray, w: np.ndarray, analysis: str
) -> list[Row]:
    prevalence = float(np.average(y, weights=w))
    referral = np.array([float(r.model_referral) for r in eyes])
    rows = []
    for threshold in np.round(np.arange(0.05, 0.55, 0.05), 2):
        t = float(threshold)
        rows.append(
            {
                "analysis": analysis,
                "threshold": num(t, 2),
                "model_risk": num(net_benefit(p, y, t, w)),
                "model_referral": num(net_benefit(referral, y, t, w)),
                "refer_all": num(prevalence - (1 - prevalence) * t / (1 - t)),
                "refer_none": num(0.0),
            }
        )
    return rows
