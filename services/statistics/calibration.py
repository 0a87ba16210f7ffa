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
    slope_intercept: float = math.nan  # the intercept of the slope's fit (a in a + b logit p)


def calibration(
    probabilities: np.ndarray, outcomes: np.ndarray, weights: np.ndarray | None = None
) -> Calibration:
    """Brier score, calibration intercept and slope; with ``weights`` (inverse probabilities
    of verification) every sum is weighted, so the figures describe the whole population."""
    p = np.clip(np.asarray(probabilities, dtype=float), EPS, 1 - EPS)
    y = np.asarray(outcomes, dtype=float)
    w = np.ones(len(y)) if weights is None else np.asarray(weights, dtype=float)
    brier = float(np.average((p - y) ** 2, weights=w)) if len(y) else math.nan
    intercept = slope = slope_intercept = math.nan
    if 0 < y.sum() < len(y):
        logit = np.log(p / (1 - p))
        binomial = sm.families.Binomial()
        try:
            fitted = sm.GLM(y, sm.add_constant(logit), family=binomial, freq_weights=w).fit()
            slope, slope_intercept = float(fitted.params[1]), float(fitted.params[0])
            offset = sm.GLM(y, np.ones_like(y), family=binomial, offset=logit, freq_weights=w).fit()
            intercept = float(offset.params[0])
        except (ValueError, np.linalg.LinAlgError):  # separation: no finite estimate
            pass
    return Calibration(brier, intercept, slope, len(y), int(y.sum()), slope_intercept)


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


def calibration_terms(
    probabilities: np.ndarray, outcomes: np.ndarray, weights: np.ndarray, fitted: Calibration
) -> np.ndarray:
    """Per eye (n x 10): the weighted sums the Brier score is a ratio of (w, w (p - y)^2, w y),
    and the contributions at the point estimate to the score and information of the offset
    (intercept) and the two-parameter (slope) logistic fits: what ``calibration_replicates``
    needs from a bootstrap's sums."""
    p = np.clip(np.asarray(probabilities, dtype=float), EPS, 1 - EPS)
    y, w = np.asarray(outcomes, dtype=float), np.asarray(weights, dtype=float)
    x = np.log(p / (1 - p))
    offset = _sigmoid(_finite(fitted.intercept) + x)
    line = _sigmoid(_finite(fitted.slope_intercept) + _finite(fitted.slope) * x)
    r, v = w * (y - line), w * line * (1 - line)
    brier = [w, w * (p - y) ** 2, w * y]
    intercept = [w * (y - offset), w * offset * (1 - offset)]
    return np.column_stack([*brier, *intercept, r, r * x, v, v * x, v * x * x])


def calibration_replicates(sums: np.ndarray, fitted: Calibration) -> dict[str, np.ndarray]:
    """Brier score, intercept and slope per bootstrap replicate from the replicates' sums of
    ``calibration_terms``: the Brier score exactly, the logistic fits by one Newton step from
    the point estimate (the one-step bootstrap: first-order equal to refitting each replicate,
    at the cost of a sum). nan where a replicate has one class only."""
    total, squared, events = sums[:, 0], sums[:, 1], sums[:, 2]
    g0, g1, h00, h01, h11 = (sums[:, k] for k in range(5, 10))
    with np.errstate(invalid="ignore", divide="ignore"):
        both = (events > 0) & (events < total)
        intercept = fitted.intercept + sums[:, 3] / sums[:, 4]
        slope = fitted.slope + (h00 * g1 - h01 * g0) / (h00 * h11 - h01 * h01)
        return {
            "brier": squared / total,
            "intercept": np.where(both, intercept, np.nan),
            "slope": np.where(both, slope, np.nan),
        }


def _sigmoid(eta: np.ndarray) -> np.ndarray:
    return np.asarray(1 / (1 + np.exp(-eta)))


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.nan
