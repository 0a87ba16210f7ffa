"""Calibration of the model's disease risk, the reliability diagram and the decision curve."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from services.statistics.calibration import calibration, net_benefit, reliability
from services.study.records import EyeRecord
from services.study.tables.common import (
    Row,
    assessed_classes,
    disease_risk,
    has_reference,
    num,
)
from services.taxonomy.tree import route_of_code


def calibration_rows(records: Sequence[EyeRecord]) -> tuple[list[Row], list[Row], list[Row]]:
    """Calibration per class and for any disease; reliability bins; decision curve."""
    summary, bins, curve = [], [], []
    targets = [("any disease", "", disease_risk)] + [
        (name, code, lambda r, c=code: r.probabilities.get(c, math.nan))
        for level, route, code, name in assessed_classes(records)
    ]
    for name, code, risk in targets:
        eyes = [
            r
            for r in records
            if has_reference(r)
            and r.model_gradable
            and (not code or route_of_code(code) == r.route)
        ]
        if not eyes:
            continue
        p = np.array([risk(r) for r in eyes])
        y = np.array(
            [(code in (r.reference or set())) if code else bool(r.reference) for r in eyes]
        )
        fitted = calibration(p, y)
        summary.append(
            {
                "target": name,
                "code": code,
                "eyes": fitted.n,
                "events": fitted.events,
                "brier": num(fitted.brier),
                "intercept": num(fitted.intercept),
                "slope": num(fitted.slope),
            }
        )
        for predicted, observed, count in reliability(p, y):
            bins.append(
                {
                    "target": name,
                    "code": code,
                    "mean_predicted": num(predicted),
                    "observed": num(observed),
                    "eyes": count,
                }
            )
        if not code:
            prevalence = float(y.mean())
            for threshold in np.round(np.arange(0.05, 0.55, 0.05), 2):
                t = float(threshold)
                curve.append(
                    {
                        "threshold": num(t, 2),
                        "model_risk": num(net_benefit(p, y, t)),
                        "model_referral": num(
                            net_benefit(np.array([float(r.model_referral) for r in eyes]), y, t)
                        ),
                        "refer_all": num(prevalence - (1 - prevalence) * t / (1 - t)),
                        "refer_none": num(0.0),
                    }
                )
    return summary, bins, curve
