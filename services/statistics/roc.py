"""AUC with DeLong's variance, by the fast midrank algorithm of Sun and Xu (2014)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from services.statistics.proportions import Z95


@dataclass(frozen=True)
class Auc:
    auc: float
    se: float
    low: float
    high: float
    positives: int
    negatives: int


def delong(scores: np.ndarray, truth: np.ndarray) -> Auc:
    """The AUC and its DeLong standard error; the 95 % interval is normal, clipped to [0, 1]
    (as pROC's ``ci.auc(method = "delong")``)."""
    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth, dtype=bool)
    positive, negative = scores[truth], scores[~truth]
    m, n = len(positive), len(negative)
    if m == 0 or n == 0:
        return Auc(math.nan, math.nan, math.nan, math.nan, m, n)
    all_ranks = rankdata(np.concatenate([positive, negative]))  # midranks over both groups
    rank_x, rank_y = rankdata(positive), rankdata(negative)
    auc = (all_ranks[:m].sum() - m * (m + 1) / 2) / (m * n)
    v10 = (all_ranks[:m] - rank_x) / n  # structural components of the positives
    v01 = 1 - (all_ranks[m:] - rank_y) / m  # and of the negatives
    s10 = v10.var(ddof=1) if m > 1 else 0.0
    s01 = v01.var(ddof=1) if n > 1 else 0.0
    se = math.sqrt(s10 / m + s01 / n)
    return Auc(float(auc), se, max(0.0, auc - Z95 * se), min(1.0, auc + Z95 * se), m, n)
