"""Calibration (reliability, intercept and slope, Brier score) and decision-curve net benefit."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import statsmodels.api as sm

EPS = 1e-6


@dataclass(frozen=True)
class Calibration:
    brier: float
    intercept: float  # calibration in the large: 0 when the mean risk is right
    slope: float  # 1 when the spread of risks is right; < 1: too extreme
    n: int
    events: int


def calibration(
    probabilities: np.ndarray, outcomes: np.ndarray, weights: np.ndarray | None = None
) -> Calibration:
    """Brier score, calibration intercept and slope; with ``weights`` (inverse probabilities
    of verification) every sum is weighted, so the figures describe the whole population."""
    p = np.clip(np.asarray(probabilities, dtype=float), EPS, 1 - EPS)
    y = np.asarray(outcomes, dtype=float)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    brier = float(np.average((p - y) ** 2, weights=w)) if len(y) else math.nan
    intercept = slope = math.nan
    if 0 < y.sum() < len(y):
        logit = np.log(p / (1 - p))
        binomial = sm.families.Binomial()
        try:
            fitted = sm.GLM(y, sm.add_constant(logit), family=binomial, freq_weights=w).fit()
            slope = float(fitted.params[1])
            offset = sm.GLM(y, np.ones_like(y), family=binomial, offset=logit, freq_weights=w).fit()
            intercept = float(offset.params[0])
        except (ValueError, np.linalg.LinAlgError):  # separation: no finite estimate
            pass
    return Calibration(brier, intercept, slope, len(y), int(y.sum()))


def reliability(
    probabilities: np.ndarray,
    outcomes: np.ndarray,
    bins: int = 10,
    weights: np.ndarray | None = None,
) -> list[tuple[float, float, int]]:
    """(mean predicted, observed rate, count) per equal-width probability bin with cases;
    means weighted when ``weights`` are given (the count stays a count of eyes)."""
    p, y = np.asarray(probabilities, dtype=float), np.asarray(outcomes, dtype=float)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        chosen = index == b
        if chosen.any():
            rows.append(
                (
                    float(np.average(p[chosen], weights=w[chosen])),
                    float(np.average(y[chosen], weights=w[chosen])),
                    int(chosen.sum()),
                )
            )
    return rows


def net_benefit(
    probabilities: np.ndarray,
    outcomes: np.ndarray,
    threshold: float,
    weights: np.ndarray | None = None,
) -> float:
    """Net benefit of referring when the risk reaches the threshold (Vickers and Elkin 2006);
    true and false positives as weighted shares when ``weights`` are given."""
    p, y = np.asarray(probabilities, dtype=float), np.asarray(outcomes, dtype=bool)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    total = w.sum()
    if len(y) == 0 or not 0 < threshold < 1:
        return math.nan
    referred = p >= threshold
    true_positive = np.sum(w * (referred & y)) / total
    false_positive = np.sum(w * (referred & ~y)) / total
    return float(true_positive - false_positive * threshold / (1 - threshold))
