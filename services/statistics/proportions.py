"""Proportions with confidence intervals (Wilson score), for referral figures and statistics."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

Z95 = 1.959963984540054  # two-sided 95 %


@dataclass(frozen=True)
class Proportion:
    """``successes`` of ``n`` with a Wilson score interval (nan when n is 0)."""

    successes: int
    n: int
    estimate: float
    low: float
    high: float

    def to_dict(self) -> dict[str, Any]:
        """The proportion as a JSON-ready dict."""
        return asdict(self)

    def __str__(self) -> str:
        if not self.n:
            return "– (0 cases)"
        return f"{self.estimate:.3f} ({self.low:.3f}–{self.high:.3f}; {self.successes}/{self.n})"


def wilson(successes: int, n: int, z: float = Z95) -> Proportion:
    """Wilson score interval: well behaved near 0 and 1, unlike the Wald interval."""
    if successes < 0 or successes > n:
        raise ValueError(f"{successes} successes of {n} trials")
    if n == 0:
        nan = float("nan")
        return Proportion(0, 0, nan, nan, nan)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return Proportion(successes, n, p, max(0.0, centre - half), min(1.0, centre + half))
