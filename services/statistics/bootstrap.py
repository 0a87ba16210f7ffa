"""The patient-level cluster bootstrap: patients are drawn with replacement and bring all their
eyes and images, so correlated eyes do not narrow the intervals. Seeded: the same seed gives
the same interval."""

from __future__ import annotations

import functools
import math
import warnings
from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def cluster_bootstrap(
    items: Sequence[T],
    cluster_of: Callable[[T], str],
    statistic: Callable[[Sequence[T]], float | tuple[float, ...]],
    replicates: int,
    seed: int,
) -> list[tuple[float, float]]:
    """Percentile 95 % intervals of each value the statistic returns."""
    groups: dict[str, list[T]] = defaultdict(list)
    for item in items:
        groups[cluster_of(item)].append(item)
    keys = sorted(groups)
    if not keys:
        return []
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(replicates):
        drawn = rng.integers(0, len(keys), len(keys))
        sample = [item for index in drawn for item in groups[keys[index]]]
        result = statistic(sample)
        values.append(result if isinstance(result, tuple) else (result,))
    columns = np.array(values, dtype=float)
    intervals = []
    for column in columns.T:
        finite = column[np.isfinite(column)]
        if len(finite) < replicates / 2:
            intervals.append((math.nan, math.nan))
        else:
            intervals.append(
                (float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5)))
            )
    return intervals


def _draws(clusters: Sequence[str], replicates: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Each item's patient index, and how often each patient is drawn in each replicate. The
    same items, replicates and seed give the same draws (kept for the next table of an export:
    every table of one export resamples the same patients)."""
    return _cached_draws(tuple(clusters), replicates, seed)


@functools.lru_cache(maxsize=4)
def _cached_draws(
    clusters: tuple[str, ...], replicates: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    keys, index = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(keys), np.full(len(keys), 1 / len(keys)), size=replicates)
    index.setflags(write=False)
    counts.setflags(write=False)
    return index, counts


def bootstrap_sums(
    clusters: Sequence[str], values: np.ndarray, replicates: int, seed: int
) -> np.ndarray:
    """The cluster bootstrap for statistics made of sums: (replicates x k) sums of the items'
    ``values`` (n x k) over patients drawn with replacement. One matrix product instead of a
    Python loop per replicate; the same seed draws the same patients as ``bootstrap_auc``."""
    from scipy import sparse

    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return np.zeros((replicates, values.shape[1] if values.ndim == 2 else 0))
    index, counts = _draws(clusters, replicates, seed)
    membership = sparse.csr_matrix(
        (np.ones(len(index)), (index, np.arange(len(index)))), shape=(counts.shape[1], len(index))
    )
    per_cluster = np.asarray(membership @ values)
    return np.asarray(counts @ per_cluster)


def bootstrap_ratios(
    clusters: Sequence[str],
    numerators: np.ndarray,
    denominators: np.ndarray,
    replicates: int,
    seed: int,
) -> list[tuple[float, float, float]]:
    """Ratios of sums (weighted proportions: sensitivity, PPV, ...), column by column, with
    percentile 95 % intervals from the patient cluster bootstrap: (estimate, low, high)."""
    estimates, boots = ratio_replicates(clusters, numerators, denominators, replicates, seed)
    lows, highs = percentile_columns(boots)
    return [
        (float(e) if np.isfinite(e) else math.nan, float(lo), float(hi))
        for e, lo, hi in zip(estimates, lows, highs, strict=True)
    ]


def ratio_replicates(
    clusters: Sequence[str],
    numerators: np.ndarray,
    denominators: np.ndarray,
    replicates: int,
    seed: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Ratios of column sums and their (replicates x k) patient cluster-bootstrap replicates."""
    numerators = np.asarray(numerators, dtype=float)
    denominators = np.asarray(denominators, dtype=float)
    k = numerators.shape[1]
    sums = bootstrap_sums(clusters, np.hstack([numerators, denominators]), replicates, seed)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimates = numerators.sum(axis=0) / denominators.sum(axis=0)
        boots = sums[:, :k] / sums[:, k:]
    return estimates, boots


def bootstrap_wald_p(estimate: float, replicates: np.ndarray, null: float = 0.0) -> float:
    """Two-sided p of the Wald test of ``null`` with the cluster-bootstrap standard error (the
    patients resampled, so two eyes of a patient count as one cluster); nan when it cannot be
    estimated."""
    finite = replicates[np.isfinite(replicates)]
    if not math.isfinite(estimate) or len(finite) < max(2, len(replicates) / 2):
        return math.nan
    error = float(np.std(finite, ddof=1))
    if error == 0:
        return 1.0 if estimate == null else 0.0
    from scipy.stats import norm

    return float(2 * norm.sf(abs(estimate - null) / error))


def percentile_columns(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per column, the 2.5th and 97.5th percentiles of the finite replicates (nan when fewer
    than half the replicates are finite)."""
    values = np.asarray(values, dtype=float)
    finite = np.isfinite(values)
    masked = np.where(finite, values, np.nan)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanpercentile(masked, [2.5, 97.5], axis=0)
    enough = finite.sum(axis=0) >= max(1, len(values) / 2)
    return np.where(enough, low, np.nan), np.where(enough, high, np.nan)


def weighted_auc(scores: np.ndarray, truth: np.ndarray, weights: np.ndarray | None = None) -> float:
    """The weighted Mann-Whitney AUC: each (diseased, healthy) pair counts with the product of
    their weights, ties one half (the AUC of the population the weights stand for)."""
    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth, dtype=bool)
    w = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=float)
    return float(_mann_whitney(scores, truth, w[None, :])[0])


def _mann_whitney(scores: np.ndarray, truth: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted Mann-Whitney AUC for each row of ``weights`` (rows x eyes). Eyes sorted by
    score once; C is the running weight of healthy eyes; a diseased eye whose tie group spans
    sorted positions [a, b) counts the healthy weight below it and half of its ties:
    (C[a] + C[b]) / 2."""
    order = np.argsort(scores, kind="stable")
    ordered = scores[order]
    first = np.r_[True, ordered[1:] != ordered[:-1]]
    starts = np.flatnonzero(first)
    ends = np.r_[starts[1:], len(scores)]
    group = np.cumsum(first) - 1
    w = np.asarray(weights, dtype=float)[:, order]
    sick = truth[order]
    running = np.zeros((w.shape[0], len(scores) + 1))
    np.cumsum(w * ~sick, axis=1, out=running[:, 1:])
    diseased = np.flatnonzero(sick)
    low, high = starts[group[diseased]], ends[group[diseased]]
    w_sick = w[:, diseased]
    numerator = (w_sick * (running[:, low] + running[:, high])).sum(axis=1) / 2
    pairs = w_sick.sum(axis=1) * running[:, -1]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(numerator / pairs)


def bootstrap_auc(
    scores: np.ndarray,
    truth: np.ndarray,
    clusters: Sequence[str],
    replicates: int,
    seed: int,
    weights: np.ndarray | None = None,
) -> tuple[float, float]:
    """Percentile 95 % interval of the (weighted) AUC under the patient-cluster bootstrap: each
    replicate multiplies every eye's weight by its patient's draw count; the weighted
    Mann-Whitney statistic is computed for all replicates at once."""
    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth, dtype=bool)
    base = np.ones(len(scores)) if weights is None else np.asarray(weights, dtype=float)
    keep = base > 0  # eyes outside the analysis: their patients are drawn all the same
    replicate_weights = _replicate_weights(tuple(clusters), replicates, seed, base.tobytes())
    auc = _mann_whitney(scores[keep], truth[keep], replicate_weights)
    finite = auc[np.isfinite(auc)]
    if len(finite) < replicates / 2:
        return math.nan, math.nan
    return float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))


@functools.lru_cache(maxsize=2)
def _replicate_weights(
    clusters: tuple[str, ...], replicates: int, seed: int, base: bytes
) -> np.ndarray:
    """Each replicate's weight of every eye with a weight (draw count x its own weight); the
    classes of one analysis share it, so it is made once."""
    index, counts = _draws(clusters, replicates, seed)
    weights = np.frombuffer(base, dtype=float)
    keep = weights > 0
    made = np.asarray(counts[:, index[keep]] * weights[None, keep])
    made.setflags(write=False)
    return made


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) < len(values) / 2 or len(finite) == 0:
        return math.nan, math.nan
    return float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))
