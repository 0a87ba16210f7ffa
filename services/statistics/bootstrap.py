"""The patient-level cluster bootstrap: patients are drawn with replacement and bring all their
eyes and images, so correlated eyes do not narrow the intervals. Seeded: the same seed gives
the same interval."""

from __future__ import annotations

import math
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
    """Each item's patient index, and how often each patient is drawn in each replicate."""
    keys, index = np.unique(np.asarray(clusters, dtype=str), return_inverse=True)
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(keys), np.full(len(keys), 1 / len(keys)), size=replicates)
    return index, counts


def bootstrap_sums(
    clusters: Sequence[str], values: np.ndarray, replicates: int, seed: int
) -> np.ndarray:
    """The cluster bootstrap for statistics made of sums: (replicates x k) sums of the items'
    ``values`` (n x k) over patients drawn with replacement. One matrix product instead of a
    Python loop per replicate; the same seed draws the same patients as ``bootstrap_auc``."""
    values = np.asarray(values, dtype=float)
    if len(values) == 0:
        return np.zeros((replicates, values.shape[1] if values.ndim == 2 else 0))
    index, counts = _draws(clusters, replicates, seed)
    per_cluster = np.zeros((counts.shape[1], values.shape[1]))
    np.add.at(per_cluster, index, values)
    return counts @ per_cluster


def bootstrap_auc(
    scores: np.ndarray, truth: np.ndarray, clusters: Sequence[str], replicates: int, seed: int
) -> tuple[float, float]:
    """Percentile 95 % interval of the AUC under the patient-cluster bootstrap: each replicate
    weights every eye by its patient's draw count; the weighted Mann-Whitney statistic (ties
    count one half) is computed for all replicates at once on the sorted distinct scores."""
    from scipy import sparse

    scores, truth = np.asarray(scores, dtype=float), np.asarray(truth, dtype=bool)
    index, counts = _draws(clusters, replicates, seed)
    weights = counts[:, index].astype(float)  # replicates x eyes
    distinct, position = np.unique(scores, return_inverse=True)
    onehot = sparse.csr_matrix(
        (np.ones(len(scores)), (np.arange(len(scores)), position)),
        shape=(len(scores), len(distinct)),
    )
    positive = np.asarray((sparse.csr_matrix(weights * truth) @ onehot).todense())
    negative = np.asarray((sparse.csr_matrix(weights * ~truth) @ onehot).todense())
    below = np.cumsum(negative, axis=1) - negative
    pairs = positive.sum(axis=1) * negative.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = (positive * (below + 0.5 * negative)).sum(axis=1) / pairs
    finite = auc[np.isfinite(auc)]
    if len(finite) < replicates / 2:
        return math.nan, math.nan
    return float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))


def percentile_interval(values: np.ndarray) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if len(finite) < len(values) / 2 or len(finite) == 0:
        return math.nan, math.nan
    return float(np.percentile(finite, 2.5)), float(np.percentile(finite, 97.5))
