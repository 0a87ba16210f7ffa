"""Verification bias. Only some cases get the reference standard (the panel): every discordant
case, and a random share of concordant ones. Taking the grader's read as the truth for the
unverified concordant cases ("discrepant analysis") makes the model look better than it is.
The Begg-Greenes correction, in its inverse-probability-weighting form, uses only the verified
cases, each weighted by 1 / (its probability of being verified), which the triage stored."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Case:
    """One unit of analysis: the index test, the reference if verified, and the chance of
    verification; ``fallback`` is the grader's read, the naive analysis' truth when unverified."""

    test: bool
    truth: bool | None  # the panel's reference; None when not verified
    probability: float  # of verification, from the triage (1 for discordant cases)
    fallback: bool  # the grader's read
    cluster: str  # the patient, for the cluster bootstrap


def naive(cases: Sequence[Case]) -> tuple[float, float]:
    """Sensitivity and specificity with the grader's read standing in where unverified."""
    pairs = [(c.test, c.truth if c.truth is not None else c.fallback) for c in cases]
    return _rates([(t, d, 1.0) for t, d in pairs])


def weighted(cases: Sequence[Case]) -> tuple[float, float]:
    """Sensitivity and specificity from the verified cases, inverse-probability weighted."""
    return _rates([(c.test, c.truth, 1 / c.probability) for c in cases if c.truth is not None])


def _rates(rows: Sequence[tuple[bool, bool | None, float]]) -> tuple[float, float]:
    diseased = sum(w for _, d, w in rows if d)
    healthy = sum(w for _, d, w in rows if d is False)
    found = sum(w for t, d, w in rows if d and t)
    cleared = sum(w for t, d, w in rows if d is False and not t)
    sensitivity = found / diseased if diseased else math.nan
    specificity = cleared / healthy if healthy else math.nan
    return sensitivity, specificity
