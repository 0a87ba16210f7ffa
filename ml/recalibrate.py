"""Recalibration at a site: per-class temperatures and the referral operating point refitted on
the site's verified reads, so that a camera the model was not trained on stops reading normal
eyes as diseased.

Inputs are the site's stored results (calibrated, hierarchy-constrained probabilities of the
model now active) with their reference labels and weights: panel decisions weigh
1 / inclusion probability (Horvitz-Thompson: a QC draw of 1 in 10 stands for 10 concordant
cases); with the accepted concordant reads included, every triaged case is there once and
each weighs 1. Weights enter as repeated rows (rounded), which keeps the existing threshold
search. The site temperature multiplies the checkpoint's (temperature scaling composes:
sigmoid(logit(sigmoid(z / T0)) / T1) = sigmoid(z / (T0 T1))).

The figures are nested: patient-grouped folds of the site's eyes, each referred with
temperatures and thresholds refitted on the other folds, beside the active operating point
on the same eyes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ml.crossval import flat_levels, split_levels
from ml.metrics import apply_temperatures, fit_temperature
from ml.operating_point import (
    ReferralProblem,
    cuts_to_thresholds,
    refer,
    referral_figures,
    referral_problem,
    search_cuts,
)
from ml.pipeline import constrained
from services.screening.decision import OperatingPoint, refers
from services.taxonomy.tree import Taxonomy


def repeats(weights: np.ndarray) -> np.ndarray:
    """Row indices, each repeated round(weight) times (at least once)."""
    counts = np.maximum(1, np.rint(np.asarray(weights, float))).astype(int)
    return np.repeat(np.arange(len(counts)), counts)


def _fit(
    taxonomy: Taxonomy,
    probs: np.ndarray,
    labels: np.ndarray,
    rows: np.ndarray,
    not_assessed: frozenset[str],
    target: float,
) -> tuple[list[float], np.ndarray, ReferralProblem]:
    temps = [fit_temperature(labels[rows, j], probs[rows, j]) for j in range(probs.shape[1])]
    problem = _problem(taxonomy, apply_temperatures(probs, temps), labels, not_assessed)
    return temps, search_cuts(problem.rows(rows), target), problem


def _problem(
    taxonomy: Taxonomy, probs: np.ndarray, labels: np.ndarray, not_assessed: frozenset[str]
) -> ReferralProblem:
    levels = constrained(split_levels(probs, taxonomy), taxonomy, not_assessed)
    return referral_problem(taxonomy, flat_levels(levels), labels, not_assessed)


def current_referral(taxonomy: Taxonomy, probs: np.ndarray, point: OperatingPoint) -> np.ndarray:
    """The active operating point's referral of each eye (as ``decide`` refers)."""
    from services.screening.decision import decide_presence, enforce_hierarchy

    out = []
    for row in probs:
        p = enforce_hierarchy(
            taxonomy, dict(zip(taxonomy.codes, row, strict=True)), point.not_assessed
        )
        out.append(refers(taxonomy, decide_presence(taxonomy, p, point), "gradable"))
    return np.array(out, dtype=bool)


def recalibrate(
    taxonomy: Taxonomy,
    probs: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray,
    patients: list[str],
    point: OperatingPoint,
    target: float,
    k: int = 5,
    seed: int = 0,
) -> dict[str, Any]:
    """Site temperatures and thresholds on all the site's reads, and nested figures of the
    refitted point against the active one on the same eyes (per eye and patient)."""
    not_assessed = point.not_assessed
    rows = repeats(weights)
    temps, cuts, problem = _fit(taxonomy, probs, labels, rows, not_assessed, target)
    ids = sorted(set(patients))
    order = np.random.default_rng(seed).permutation(len(ids))
    fold_of = {ids[i]: n % k for n, i in enumerate(order)}
    folds = np.array([fold_of[p] for p in patients])
    nested = np.zeros(len(patients), dtype=bool)
    for fold in range(k):
        test = folds == fold
        if not test.any():
            continue
        train_rows = rows[~test[rows]]
        f_temps, f_cuts, _ = _fit(taxonomy, probs, labels, train_rows, not_assessed, target)
        f_problem = _problem(taxonomy, apply_temperatures(probs, f_temps), labels, not_assessed)
        nested[test] = refer(f_problem.scores[test], f_cuts)
    before = current_referral(taxonomy, probs, point)
    return {
        "site_temperatures": dict(zip(taxonomy.codes, temps, strict=True)),
        "thresholds": cuts_to_thresholds(taxonomy, problem, cuts, not_assessed),
        "target_sensitivity": target,
        "eyes": len(patients),
        "weighted_eyes": len(rows),
        "active": referral_figures(before, problem.diseased, patients),
        "recalibrated_nested": referral_figures(nested, problem.diseased, patients),
    }


def recalibrated_meta(meta: dict[str, Any], result: dict[str, Any], site: str) -> dict[str, Any]:
    """The checkpoint's meta with the site's temperatures composed and thresholds replaced."""
    out = dict(meta)
    old = (meta.get("calibration") or {}).get("temperatures") or {}
    temps = {c: float(old.get(c, 1.0)) * float(t) for c, t in result["site_temperatures"].items()}
    out["calibration"] = dict(meta.get("calibration") or {}, temperatures=temps)
    out["thresholds"] = result["thresholds"]
    out["operating_point"] = dict(
        meta.get("operating_point") or {},
        scale="calibrated",
        target_sensitivity=result["target_sensitivity"],
    )
    out["version"] = f"{meta['version']}+{site}"[:32]
    out["recalibration"] = {k: v for k, v in result.items() if k != "thresholds"} | {
        "site": site,
        "base_version": meta["version"],
    }
    return out
