"""Model against graders on the same cases: exact McNemar, Newcombe's interval for a paired
difference of proportions, and agreement (Cohen's kappa with its interval, Fleiss' kappa,
Gwet's AC1)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import binomtest
from statsmodels.stats.inter_rater import fleiss_kappa as _fleiss_kappa

from services.statistics.proportions import Z95, wilson


def mcnemar_exact(both: int, only_first: int, only_second: int, neither: int) -> float:
    """Two-sided exact McNemar p: the discordant pairs as a binomial with p = 1/2."""
    del both, neither  # concordant pairs carry no information here
    discordant = only_first + only_second
    if discordant == 0:
        return 1.0
    return float(binomtest(only_first, discordant, 0.5, alternative="two-sided").pvalue)


@dataclass(frozen=True)
class Difference:
    estimate: float
    low: float
    high: float


def newcombe_paired(both: int, only_first: int, only_second: int, neither: int) -> Difference:
    """Difference p1 - p2 of two proportions on the same subjects (p1 = (both + only_first)/n)
    with Newcombe's hybrid score interval for paired data (1998, method 10): Wilson limits of
    each proportion combined with the correlation phi of the pairs."""
    n = both + only_first + only_second + neither
    if n == 0:
        return Difference(math.nan, math.nan, math.nan)
    first, second = wilson(both + only_first, n), wilson(both + only_second, n)
    p1, p2 = first.estimate, second.estimate
    l1, u1, l2, u2 = first.low, first.high, second.low, second.high
    delta = p1 - p2
    margins = [
        (both + only_first),
        (only_second + neither),
        (both + only_second),
        (only_first + neither),
    ]
    product = math.prod(margins)
    phi = 0.0
    if product > 0:
        excess: float = both * neither - only_first * only_second
        if excess > 0:  # Newcombe's continuity correction of a positive correlation
            excess = max(excess - n / 2, 0.0)
        phi = excess / math.sqrt(product)
    lower_sq = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    upper_sq = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    return Difference(
        delta, delta - math.sqrt(max(0.0, lower_sq)), delta + math.sqrt(max(0.0, upper_sq))
    )


@dataclass(frozen=True)
class Kappa:
    kappa: float
    low: float
    high: float
    n: int


def cohen_kappa(table: Sequence[Sequence[int]]) -> Kappa:
    """Cohen's kappa of a square table of two raters' categories, with the large-sample
    standard error of Fleiss, Cohen and Everitt (1969) for the interval."""
    counts = np.asarray(table, dtype=float)
    n = counts.sum()
    if n == 0:
        return Kappa(math.nan, math.nan, math.nan, 0)
    p = counts / n
    rows, cols = p.sum(axis=1), p.sum(axis=0)
    observed, expected = np.trace(p), float(rows @ cols)
    if expected == 1:
        return Kappa(math.nan, math.nan, math.nan, int(n))
    kappa = (observed - expected) / (1 - expected)
    k = len(p)
    diagonal = sum(p[i, i] * (1 - (rows[i] + cols[i]) * (1 - kappa)) ** 2 for i in range(k))
    off = (
        sum(p[i, j] * (cols[i] + rows[j]) ** 2 for i in range(k) for j in range(k) if i != j)
        * (1 - kappa) ** 2
    )
    variance = (diagonal + off - (kappa - expected * (1 - kappa)) ** 2) / (n * (1 - expected) ** 2)
    se = math.sqrt(max(0.0, variance))
    return Kappa(float(kappa), float(kappa - Z95 * se), float(kappa + Z95 * se), int(n))


def fleiss_kappa(ratings: np.ndarray) -> float:
    """Fleiss' kappa; ``ratings[i, c]`` = raters putting subject i in category c."""
    return float(_fleiss_kappa(np.asarray(ratings), method="fleiss"))


def gwet_ac1(ratings: np.ndarray) -> float:
    """Gwet's AC1 for several raters (same layout as Fleiss): agreement corrected by a chance
    term that does not collapse when one category dominates, as normal eyes do in screening."""
    counts = np.asarray(ratings, dtype=float)
    raters = counts.sum(axis=1)
    keep = raters >= 2
    counts, raters = counts[keep], raters[keep]
    if len(counts) == 0:
        return math.nan
    k = counts.shape[1]
    observed = float(np.mean(((counts * (counts - 1)).sum(axis=1)) / (raters * (raters - 1))))
    pi = (counts / raters[:, None]).mean(axis=0)
    chance = float((pi * (1 - pi)).sum() / (k - 1))
    return (observed - chance) / (1 - chance)
