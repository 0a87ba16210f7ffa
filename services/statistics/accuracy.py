"""2x2 tables and what the study reports from them: sensitivity, specificity, predictive
values, accuracy (each with an interval whose method is named, never a library default) and
likelihood ratios with log-scale intervals."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from scipy.stats import beta

from services.statistics.proportions import Z95, wilson


class Interval(StrEnum):
    """How a proportion's 95 % interval is computed."""

    WILSON = "wilson"  # score interval: the study's primary method
    CLOPPER_PEARSON = "clopper-pearson"  # exact: the supplementary sheet


@dataclass(frozen=True)
class Estimate:
    estimate: float
    low: float
    high: float
    numerator: int | float
    denominator: int | float


def proportion(successes: int, n: int, method: Interval) -> Estimate:
    """A proportion with the named interval (nan when n is 0)."""
    if method == Interval.WILSON:
        p = wilson(successes, n)
        return Estimate(p.estimate, p.low, p.high, successes, n)
    if n == 0:
        return Estimate(math.nan, math.nan, math.nan, successes, n)
    low = 0.0 if successes == 0 else float(beta.ppf(0.025, successes, n - successes + 1))
    high = 1.0 if successes == n else float(beta.ppf(0.975, successes + 1, n - successes))
    return Estimate(successes / n, low, high, successes, n)


@dataclass(frozen=True)
class TwoByTwo:
    """Index test against the reference: true/false positives and negatives."""

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn

    @classmethod
    def of(cls, test: list[bool], truth: list[bool]) -> TwoByTwo:
        pairs = list(zip(test, truth, strict=True))
        return cls(
            tp=sum(t and d for t, d in pairs),
            fp=sum(t and not d for t, d in pairs),
            fn=sum(not t and d for t, d in pairs),
            tn=sum(not t and not d for t, d in pairs),
        )

    def measures(self, method: Interval) -> dict[str, Estimate]:
        return {
            "sensitivity": proportion(self.tp, self.tp + self.fn, method),
            "specificity": proportion(self.tn, self.tn + self.fp, method),
            "ppv": proportion(self.tp, self.tp + self.fp, method),
            "npv": proportion(self.tn, self.tn + self.fn, method),
            "accuracy": proportion(self.tp + self.tn, self.n, method),
            "lr_positive": self.likelihood_ratio(positive=True),
            "lr_negative": self.likelihood_ratio(positive=False),
        }

    def likelihood_ratio(self, positive: bool) -> Estimate:
        """LR+ = sens / (1 - spec), LR- = (1 - sens) / spec, with the log-method interval
        (Simel, Samsa and Matchar 1991); nan when a margin is empty or a cell is zero."""
        diseased, healthy = self.tp + self.fn, self.tn + self.fp
        a, b = (self.tp, self.fp) if positive else (self.fn, self.tn)
        if not diseased or not healthy or not a or not b:
            return Estimate(math.nan, math.nan, math.nan, a, b)
        ratio = (a / diseased) / (b / healthy)
        se = math.sqrt(1 / a - 1 / diseased + 1 / b - 1 / healthy)
        return Estimate(ratio, ratio * math.exp(-Z95 * se), ratio * math.exp(Z95 * se), a, b)
