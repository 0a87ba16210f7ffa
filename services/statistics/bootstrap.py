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
