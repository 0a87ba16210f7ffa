"""The model's AUC for any disease (the referral) and per class, weighted (a weighted
Mann-Whitney statistic over the verified eyes) and naive, with patient-bootstrap intervals;
DeLong's interval (eyes as independent) beside the naive one."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from services.statistics.bootstrap import bootstrap_auc, weighted_auc
from services.statistics.roc import delong
from services.study.records import EyeRecord
from services.study.tables.common import (
    ANALYSES,
    NAIVE,
    Options,
    Row,
    Verification,
    assessed_classes,
    bootstrap_label,
    disease_risk,
    num,
    verification,
)

Score = Callable[[EyeRecord], float]


def auc_targets(records: Sequence[EyeRecord]) -> list[tuple[str, str, str, str, Score]]:
    """(level, route, code, name, score) for any disease and each assessed class."""
    found: list[tuple[str, str, str, str, Score]] = [
        ("referral", "", "", "any disease (referral)", disease_risk)
    ]
    for level, route, code, name in assessed_classes(records):
        found.append((str(level), route, code, name, _probability(code)))
    return found


def _probability(code: str) -> Score:
    return lambda record: record.probabilities.get(code, math.nan)


def scored_eyes(
    records: Sequence[EyeRecord], route: str, code: str, score: Score, v: Verification
) -> tuple[list[EyeRecord], np.ndarray, np.ndarray, np.ndarray]:
    """The eyes with a score and a part in the analysis: (eyes, scores, truth, weights)."""
    used, scores, truth, weights = scored_all(records, route, code, score, v)
    return (
        [r for r, u in zip(records, used, strict=True) if u],
        scores[used],
        truth[used],
        weights[used],
    )


def scored_all(
    records: Sequence[EyeRecord], route: str, code: str, score: Score, v: Verification
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Over every record: (part of the analysis, score, truth, weight), 0 where not part, so
    that every table of an export resamples the same patients."""
    scores = np.fromiter((score(r) for r in records), float, len(records))
    eligible = np.fromiter(
        (r.model_gradable and (not route or r.route == route) for r in records), bool, len(records)
    )
    used = eligible & (v.weight > 0) & np.isfinite(scores)
    if code:
        truth = np.fromiter((code in ref for ref in v.reference), bool, len(records))
    else:
        truth = np.fromiter((bool(ref) for ref in v.reference), bool, len(records))
    return (
        used,
        np.where(used, scores, 0.0),
        truth & used,
        np.where(used, v.weight, 0.0),
    )


def auc(records: Sequence[EyeRecord], options: Options) -> list[Row]:
    """Per target and analysis (weighted first): the AUC, its patient cluster-bootstrap
    interval and, for the naive analysis, DeLong's interval."""
    rows = []
    clusters = [r.patient_key for r in records]
    analyses = {a: verification(records, a) for a in ANALYSES}
    for level, route, code, name, score in auc_targets(records):
        for analysis in ANALYSES:
            used, scores, truth, weights = scored_all(
                records, route, code, score, analyses[analysis]
            )
            positives, negatives = int((truth & used).sum()), int((~truth & used).sum())
            if not positives or not negatives:
                continue
            value = weighted_auc(scores[used], truth[used], weights[used])
            low, high = bootstrap_auc(
                scores, truth, clusters, options.replicates, options.seed, weights=weights
            )
            result = delong(scores[used], truth[used]) if analysis == NAIVE else None
            rows.append(
                {
                    "level": level,
                    "code": code,
                    "class": name,
                    "analysis": analysis,
                    "eyes": int(used.sum()),
                    "patients": len(
                        {r.patient_key for r, u in zip(records, used, strict=True) if u}
                    ),
                    "positives": positives,
                    "negatives": negatives,
                    "auc": num(value),
                    "auc_low": num(low),
                    "auc_high": num(high),
                    "interval": bootstrap_label(options),
                    # DeLong's interval takes the eyes as independent (naive rows only)
                    "delong_low_eyes_independent": num(result.low) if result else "",
                    "delong_high_eyes_independent": num(result.high) if result else "",
                }
            )
    return rows
