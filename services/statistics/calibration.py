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


def calibration(probabilities: np.ndarray, outcomes: np.ndarray) -> Calibration:
    p = np.clip(np.asarray(probabilities, dtype=float), EPS, 1 - EPS)
    y = np.asarray(outcomes, dtype=float)
    brier = float(np.mean((p - y) ** 2)) if len(y) else math.nan
    intercept = slope = math.nan
    if 0 < y.sum() < len(y):
        logit = np.log(p / (1 - p))
        try:
            fitted = sm.GLM(y, sm.add_constant(logit), family=sm.families.Binomial()).fit()
            slope = float(fitted.params[1])
            offset = sm.GLM(y, np.ones_like(y), family=sm.families.Binomial(), offset=logit).fit()
            intercept = float(offset.params[0])
        except (ValueError, np.linalg.LinAlgError):  # separation: no finite estimate
            pass
    return Calibration(brier, intercept, slope, len(y), int(y.sum()))


def reliability(
    probabilities: np.ndarray, outcomes: np.ndarray, bins: int = 10
) -> list[tuple[float, float, int]]:
    """(mean predicted, observed rate, count) per equal-width probability bin with cases."""
    p, y = np.asarray(probabilities, dtype=float), np.asarray(outcomes, dtype=float)
    edges = np.linspace(0, 1, bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        chosen = index == b
        if chosen.any():
            rows.append((float(p[chosen].mean()), float(y[chosen].mean()), int(chosen.sum())))
    return rows


def net_benefit(probabilities: np.ndarray, outcomes: np.ndarray, threshold: float) -> float:
    """Net benefit of referring when the risk reaches the threshold (Vickers and Elkin 2006)."""
    p, y = np.asarray(probabilities, dtype=float), np.asarray(outcomes, dtype=bool)
    n = len(y)
    if n == 0 or not 0 < threshold < 1:
        return math.nan
    referred = p >= threshold
    true_positive = np.sum(referred & y) / n
    false_positive = np.sum(referred & ~y) / n
    return float(true_positive - false_positive * threshold / (1 - threshold))
