"""From class probabilities to a screening decision: hierarchy, thresholds, top-3, referral.

The hierarchy is guaranteed here, whatever the network produced: a parent's probability is the
maximum of its own and its children's (the max-constraint of C-HMCNN), and a parent's threshold
is never above a child's, so a positive child always has a positive parent.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from services.taxonomy import Taxonomy

DEFAULT_THRESHOLD = 0.5


def enforce_hierarchy(taxonomy: Taxonomy, probabilities: Mapping[str, float]) -> dict[str, float]:
    """Raise every ancestor to at least the probability of each of its descendants."""
    result = {code: float(probabilities[code]) for code in taxonomy.codes}
    for level in range(taxonomy.depth, 1, -1):
        for node in taxonomy.level(level):
            assert node.parent is not None
            result[node.parent] = max(result[node.parent], result[node.code])
    return result


def consistent_thresholds(
    taxonomy: Taxonomy, thresholds: Mapping[str, float] | None = None
) -> dict[str, float]:
    """Per-class thresholds (default 0.5) lowered so no parent's exceeds any child's."""
    given = thresholds or {}
    result = {code: float(given.get(code, DEFAULT_THRESHOLD)) for code in taxonomy.codes}
    for level in range(taxonomy.depth, 1, -1):
        for node in taxonomy.level(level):
            assert node.parent is not None
            result[node.parent] = min(result[node.parent], result[node.code])
    return result


class ScoredFinding(Protocol):
    """A finding as decided now or as stored (``PredictionFinding``)."""

    @property
    def code(self) -> str: ...
    @property
    def level(self) -> int: ...
    @property
    def probability(self) -> float: ...
    @property
    def positive(self) -> bool: ...


def heatmap_targets(taxonomy: Taxonomy, findings: Sequence[ScoredFinding]) -> list[str]:
    """Abnormal positive codes, most specific (deepest) and most probable first: what a heatmap
    should explain."""
    positives = [f for f in findings if f.positive and not taxonomy.node(f.code).normal]
    return [f.code for f in sorted(positives, key=lambda f: (-f.level, -f.probability))]


@dataclass(frozen=True)
class Finding:
    code: str
    name: str
    level: int
    probability: float
    threshold: float
    positive: bool


@dataclass(frozen=True)
class ScreeningDecision:
    findings: tuple[Finding, ...]
    top3: tuple[str, ...]
    referral: bool
    quality: str

    @property
    def positive_codes(self) -> list[str]:
        return [f.code for f in self.findings if f.positive]

    @property
    def probabilities(self) -> dict[str, float]:
        return {f.code: f.probability for f in self.findings}

    @property
    def thresholds(self) -> dict[str, float]:
        return {f.code: f.threshold for f in self.findings}


def decide(
    taxonomy: Taxonomy,
    raw_probabilities: Mapping[str, float],
    thresholds: Mapping[str, float] | None = None,
    quality: str = "gradable",
) -> ScreeningDecision:
    """Apply hierarchy and thresholds; refer on any abnormal finding, no finding, or bad quality."""
    probs = enforce_hierarchy(taxonomy, raw_probabilities)
    cuts = consistent_thresholds(taxonomy, thresholds)
    findings = tuple(
        Finding(
            code=node.code,
            name=node.name,
            level=node.level,
            probability=probs[node.code],
            threshold=cuts[node.code],
            positive=probs[node.code] >= cuts[node.code],
        )
        for level in range(1, taxonomy.depth + 1)
        for node in taxonomy.level(level)
    )
    deepest = [f for f in findings if f.level == taxonomy.depth]
    top3 = tuple(f.code for f in sorted(deepest, key=lambda f: -f.probability)[:3])
    abnormal = any(f.positive and not taxonomy.node(f.code).normal for f in findings)
    nothing_found = not any(f.positive for f in findings)
    referral = abnormal or nothing_found or quality != "gradable"
    return ScreeningDecision(findings=findings, top3=top3, referral=referral, quality=quality)
