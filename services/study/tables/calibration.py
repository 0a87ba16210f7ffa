"""Calibration of the model's risks, the reliability diagram and the decision curve, weighted
(verified eyes, inverse probability of verification) and naive."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.statistics.bootstrap import bootstrap_sums, percentile_columns
from services.statistics.calibration import (
    calibration,
    calibration_replicates,
    calibration_terms,
    net_benefit,
    reliability,
)
from services.study.records import EyeRecord
from services.study.tables.common import (
    ANALYSES,
    Options,
    Row,
    bootstrap_label,
    num,
    verification,
)
from services.study.tables.discrimination import auc_targets, scored_eyes


def calibration_rows(
    records: Sequence[EyeRecord], options: Options | None = None
) -> tuple[list[Row], list[Row], list[Row]]:
    """Calibration per class and for any disease, with patient cluster-bootstrap intervals
    (the same patients drawn as for every other table); reliability bins; decision curve."""
    options = options or Options()
    summary, bins, curve = [], [], []
    analyses = {a: verification(records, a) for a in ANALYSES}
    position = {id(r): i for i, r in enumerate(records)}
    clusters = [r.patient_key for r in records]
    for _level, route, code, name, score in auc_targets(records):
        for analysis in ANALYSES:
            eyes, p, y, w = scored_eyes(records, route, code, score, analyses[analysis])
            if not eyes:
                continue
            fitted = calibration(p, y, w)
            terms = np.zeros((len(records), 10))
            terms[[position[id(r)] for r in eyes]] = calibration_terms(p, y, w, fitted)
            sums = bootstrap_sums(clusters, terms, options.replicates, options.seed)
            boots = calibration_replicates(sums, fitted)
            row: Row = {
                "target": name,
                "code": code,
                "analysis": analysis,
                "eyes": fitted.n,
                "events": fitted.events,
            }
            for measure in ("brier", "intercept", "slope"):
                low, high = percentile_columns(boots[measure][:, None])
                row |= {
                    measure: num(getattr(fitted, measure)),
                    f"{measure}_low": num(float(low[0])),
                    f"{measure}_high": num(float(high[0])),
                }
            summary.append(row | {"interval": bootstrap_label(options)})
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
