"""From class probabilities to a screening decision: hierarchy, operating point, top-3, referral.

The hierarchy is guaranteed here, whatever the network produced:

- probabilities: a parent's is the maximum of its own and its *assessed* children's (the
  max-constraint of C-HMCNN); a class the model cannot assess says nothing about its parent;
- decisions: a parent is present when its own probability reaches its own threshold *or* any
  child is present. Parents keep their own thresholds (they are not dragged down to the weakest
  child's), and a positive child still always has a positive parent.

A class the model was not trained well enough to assess has no threshold and no decision
(``positive is None``) and takes no part in the referral. The referral is "refer unless the
photograph is gradable, no assessed disease is present and a normal class is present".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from services.taxonomy.tree import Taxonomy

DEFAULT_THRESHOLD = 0.5


class ProbabilityScale(StrEnum):
    """What the stored and reported probabilities (and thresholds) are."""

    RAW = "raw"  # the network's sigmoid outputs
    CALIBRATED = "calibrated"  # per-class temperature scaling fitted on out-of-fold predictions


@dataclass(frozen=True)
class OperatingPoint:
    """The decision rule of one model: per-class thresholds of the assessed classes.

    ``thresholds`` and the probabilities they are compared with are on ``scale``; a class in
    ``not_assessed`` has no threshold and no decision; an assessed class without a threshold
    uses 0.5."""

    thresholds: Mapping[str, float] = field(default_factory=dict)
    not_assessed: frozenset[str] = frozenset()
    scale: ProbabilityScale = ProbabilityScale.RAW

    def threshold(self, code: str) -> float | None:
        """The class's threshold; None when the model does not assess it."""
        if code in self.not_assessed:
            return None
        return float(self.thresholds.get(code, DEFAULT_THRESHOLD))

    def with_overrides(self, overrides: Mapping[str, float]) -> OperatingPoint:
        """A site's thresholds on top of these; a not-assessed class cannot be given one."""
        refused = sorted(set(overrides) & self.not_assessed)
        if refused:
            raise ValueError(f"thresholds given for classes the model does not assess: {refused}")
        return OperatingPoint({**self.thresholds, **overrides}, self.not_assessed, self.scale)

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any]) -> OperatingPoint:
        """From a checkpoint's metadata (older checkpoints: raw scale, every class assessed)."""
        assessment = meta.get("assessment") or {}
        point = meta.get("operating_point") or {}
        return cls(
            thresholds={k: float(v) for k, v in (meta.get("thresholds") or {}).items()},
            not_assessed=frozenset(assessment.get("not_assessed", ())),
            scale=ProbabilityScale(point.get("scale", ProbabilityScale.RAW)),
        )


def enforce_hierarchy(
    taxonomy: Taxonomy,
    probabilities: Mapping[str, float],
    not_assessed: frozenset[str] = frozenset(),
) -> dict[str, float]:
    """Raise every ancestor to at least the probability of each of its assessed descendants."""
    result = {code: float(probabilities[code]) for code in taxonomy.codes}
    for level in range(taxonomy.depth, 1, -1):
        for node in taxonomy.level(level):
            assert node.parent is not None
            if node.code not in not_assessed:
                result[node.parent] = max(result[node.parent], result[node.code])
    return result


def decide_presence(
    taxonomy: Taxonomy, probabilities: Mapping[str, float], point: OperatingPoint
) -> dict[str, bool | None]:
    """Per class: present, absent, or None (not assessed); a present child makes its parent
    present."""
    present: dict[str, bool | None] = {}
    for level in range(taxonomy.depth, 0, -1):
        for node in taxonomy.level(level):
            cut = point.threshold(node.code)
            if cut is None:
                present[node.code] = None
                continue
            children = (present[c.code] for c in taxonomy.children(node.code))
            present[node.code] = probabilities[node.code] >= cut or any(children)
    return present


def refers(taxonomy: Taxonomy, present: Mapping[str, bool | None], quality: str) -> bool:
    """Refer on bad quality, any assessed disease, or when no normal class is present."""
    if quality != "gradable":
        return True
    disease = any(v for code, v in present.items() if not taxonomy.node(code).normal)
    normal = any(v for code, v in present.items() if taxonomy.node(code).normal)
    return disease or not normal


class ScoredFinding(Protocol):
    """A finding as decided now or as stored (``PredictionFinding``)."""

    @property
    def code(self) -> str: ...
    @property
    def level(self) -> int: ...
    @property
    def probability(self) -> float: ...
    @property
    def positive(self) -> bool | None: ...


def heatmap_targets(taxonomy: Taxonomy, findings: Sequence[ScoredFinding]) -> list[str]:
    """Abnormal positive codes, most specific (deepest) and most probable first: what a heatmap
    should explain."""
    positives = [f for f in findings if f.positive and not taxonomy.node(f.code).normal]
    return [f.code for f in sorted(positives, key=lambda f: (-f.level, -f.probability))]


@dataclass(frozen=True)
class Finding:
    """One class of one image; ``threshold`` and ``positive`` are None when not assessed."""

    code: str
    name: str
    level: int
    probability: float
    threshold: float | None
    positive: bool | None

    @property
    def assessed(self) -> bool:
        """Whether the model made a decision for this class."""
        return self.positive is not None


@dataclass(frozen=True)
class ModelRead:
    """What a model says of one photograph: class probabilities, and whether the photograph
    lies beyond its guard (unlike anything it was trained on), with the distance measured."""

    probabilities: dict[str, float]
    unfamiliar: bool = False
    distance: float | None = None
    # another route whose model knows this photograph (a fundus photograph sent as anterior)
    looks_like: str | None = None


@dataclass(frozen=True)
class ScreeningDecision:
    """Findings, top-3 and referral of one image under one operating point."""

    findings: tuple[Finding, ...]
    top3: tuple[str, ...]
    referral: bool
    quality: str
    scale: ProbabilityScale = ProbabilityScale.RAW

    @property
    def positive_codes(self) -> list[str]:
        """Codes decided present."""
        return [f.code for f in self.findings if f.positive]

    @property
    def not_assessed_codes(self) -> list[str]:
        """Codes the model does not assess."""
        return [f.code for f in self.findings if not f.assessed]

    @property
    def probabilities(self) -> dict[str, float]:
        """Every class's probability, after the hierarchy constraint."""
        return {f.code: f.probability for f in self.findings}

    @property
    def thresholds(self) -> dict[str, float]:
        """Thresholds of the assessed classes."""
        return {f.code: f.threshold for f in self.findings if f.threshold is not None}


def decide(
    taxonomy: Taxonomy,
    probabilities: Mapping[str, float],
    point: OperatingPoint | None = None,
    quality: str = "gradable",
) -> ScreeningDecision:
    """Apply hierarchy and operating point; top-3 among the assessed deepest classes."""
    point = point or OperatingPoint()
    probs = enforce_hierarchy(taxonomy, probabilities, point.not_assessed)
    present = decide_presence(taxonomy, probs, point)
    findings = tuple(
        Finding(
            code=node.code,
            name=node.name,
            level=node.level,
            probability=probs[node.code],
            threshold=point.threshold(node.code),
            positive=present[node.code],
        )
        for level in range(1, taxonomy.depth + 1)
        for node in taxonomy.level(level)
    )
    deepest = [f for f in findings if f.level == taxonomy.depth and f.assessed]
    top3 = tuple(f.code for f in sorted(deepest, key=lambda f: -f.probability)[:3])
    return ScreeningDecision(
        findings=findings,
        top3=top3,
        referral=refers(taxonomy, present, quality),
        quality=quality,
        scale=point.scale,
    )
