"""Patient-grouped cross-validation: the hierarchical model, its baselines, calibration, which
classes can be assessed, and the referral operating point with its honest (nested) figures."""

from __future__ import annotations

import itertools
import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ml.data import Sample, near_duplicate_groups, patient_folds, targets
from ml.metrics import (
    apply_temperatures,
    cross_fitted_temperatures,
    expected_calibration_error,
    fit_temperature,
)
from ml.operating_point import (
    ReferralProblem,
    cuts_to_thresholds,
    nested_referral,
    refer,
    referral_figures,
    referral_problem,
    search_cuts,
)
from ml.pipeline import constrained, evaluate_levels, write_results
from ml.predictor import pick_device
from ml.train import (
    TrainConfig,
    build_heads,
    extract_features,
    make_model,
    predict_heads,
    train_heads,
)
from services.screening.decision import ProbabilityScale
from services.taxonomy.tree import Taxonomy

log = logging.getLogger(__name__)

DEFAULT_MIN_POSITIVE = 30
DEFAULT_TARGET_SENSITIVITY = 0.95


def assessment(samples: list[Sample], taxonomy: Taxonomy, min_positive: int) -> dict[str, Any]:
    """Positive eyes per class; a class with fewer than ``min_positive`` is not assessed."""
    y = np.concatenate(targets(samples, taxonomy), axis=1)
    positives = {code: int(y[:, i].sum()) for i, code in enumerate(taxonomy.codes)}
    return {
        "min_positive": min_positive,
        "positives": positives,
        "not_assessed": sorted(c for c, n in positives.items() if n < min_positive),
    }


def flat_levels(levels: list[np.ndarray]) -> np.ndarray:
    """Per-level (n, classes) arrays as one (n, codes) matrix in ``taxonomy.codes`` order."""
    return np.concatenate(levels, axis=1)


def split_levels(matrix: np.ndarray, taxonomy: Taxonomy) -> list[np.ndarray]:
    edges = np.cumsum([0, *taxonomy.level_sizes()])
    return [matrix[:, a:b] for a, b in itertools.pairwise(edges)]


def _oof_predictions(
    samples: list[Sample],
    taxonomy: Taxonomy,
    config: TrainConfig,
    features: np.ndarray,
    y: list[np.ndarray],
    folds: np.ndarray,
) -> dict[str, list[np.ndarray]]:
    """Out-of-fold raw probabilities of every model on the same folds."""
    from sklearn.ensemble import ExtraTreesClassifier

    device = pick_device(config.device)
    models = ("hierarchical", "hierarchical_flip_tta", "flat", "extra_trees")
    oof = {m: [np.zeros_like(t) for t in y] for m in models}
    backbone, _ = make_model(taxonomy, config)
    for fold in tqdm(sorted(np.unique(folds)), desc="folds"):
        train, test = folds != fold, folds == fold
        for name, flat in (("hierarchical", False), ("flat", True)):
            fold_config = replace(config, flat=flat, seed=config.seed + int(fold))
            torch.manual_seed(fold_config.seed)
            heads = build_heads(backbone, taxonomy, fold_config)
            train_heads(
                heads,
                features[:, train],
                [t[train] for t in y],
                fold_config,
                device,
                progress=False,
            )
            plain = predict_heads(heads, features[0, test], taxonomy, device)
            for lvl, p in enumerate(plain):
                oof[name][lvl][test] = p
            if name == "hierarchical" and features.shape[0] > 1:
                mirrored = predict_heads(heads, features[1, test], taxonomy, device)
                for lvl, (a, b) in enumerate(zip(plain, mirrored, strict=True)):
                    oof["hierarchical_flip_tta"][lvl][test] = (a + b) / 2
        trees = ExtraTreesClassifier(
            n_estimators=300, min_samples_leaf=2, n_jobs=-1, random_state=config.seed
        )
        trees.fit(features[0, train], y[-1][train])
        deepest = _positive_probabilities(trees, features[0, test])
        parents = constrained(
            [np.zeros((deepest.shape[0], len(taxonomy.level(1)))), deepest], taxonomy
        )
        oof["extra_trees"][0][test], oof["extra_trees"][1][test] = parents[0], deepest
    if features.shape[0] == 1:
        del oof["hierarchical_flip_tta"]
    return oof


def _positive_probabilities(trees: Any, features: np.ndarray) -> np.ndarray:
    """P(class present) per class; a class never positive in training gets 0."""
    columns = []
    for classes, proba in zip(trees.classes_, trees.predict_proba(features), strict=True):
        positive = np.flatnonzero(classes == 1)
        columns.append(proba[:, positive[0]] if positive.size else np.zeros(len(features)))
    return np.stack(columns, axis=1)


def operating_point(
    taxonomy: Taxonomy,
    samples: list[Sample],
    raw: list[np.ndarray],
    folds: np.ndarray,
    not_assessed: frozenset[str],
    target: float,
    floor: float | None = None,
) -> dict[str, Any]:
    """Temperatures, thresholds (calibrated scale) and referral figures of one model's OOF.

    The thresholds shipped are chosen on all out-of-fold predictions calibrated with the
    temperatures fitted on all folds; the figures reported are nested: each fold referred with
    temperatures and thresholds chosen on the other folds. With a ``floor``, every source's
    sensitivity must reach it as well (``ml.operating_point``); the nested figures of the
    pooled target alone are kept beside, to show what the floor costs."""
    return point_from_predictions(
        taxonomy,
        flat_levels(targets(samples, taxonomy)),
        flat_levels(raw),
        folds,
        [s.patient_id for s in samples],
        [s.source for s in samples],
        not_assessed,
        target,
        floor,
    )


def point_from_predictions(
    taxonomy: Taxonomy,
    labels: np.ndarray,
    raw_flat: np.ndarray,
    folds: np.ndarray,
    patients: list[str],
    eye_sources: list[str],
    not_assessed: frozenset[str],
    target: float,
    floor: float | None = None,
) -> dict[str, Any]:
    """``operating_point`` on flat labels and out-of-fold predictions (codes in taxonomy
    order) with each eye's patient and source: what a saved out-of-fold file holds."""
    crossfit, temperatures = cross_fitted_temperatures(labels, raw_flat, folds)
    sources = np.asarray(eye_sources)

    def problem(matrix: np.ndarray) -> ReferralProblem:
        probs = flat_levels(constrained(split_levels(matrix, taxonomy), taxonomy, not_assessed))
        return referral_problem(taxonomy, probs, labels, not_assessed).with_sources(sources)

    def problem_fitted_on(train: np.ndarray) -> ReferralProblem:
        fitted = [
            fit_temperature(labels[train, j], raw_flat[train, j]) for j in range(len(labels[0]))
        ]
        return problem(apply_temperatures(raw_flat, fitted))

    selection = problem(apply_temperatures(raw_flat, temperatures))
    cuts = search_cuts(selection, target, floor)
    nested = nested_referral(problem_fitted_on, folds, target, floor)
    diseased = selection.diseased

    def by_source(referred: np.ndarray) -> dict[str, Any]:
        return {
            str(source): referral_figures(referred[sources == source], diseased[sources == source])[
                "eye"
            ]
            for source in np.unique(sources)
        }

    without_floor = {}
    if floor is not None:
        pooled_only = nested_referral(problem_fitted_on, folds, target)
        without_floor = {
            "cross_validated_without_the_floor": referral_figures(pooled_only, diseased, patients),
            "cross_validated_by_source_without_the_floor": by_source(pooled_only),
        }
    return {
        "target_sensitivity": target,
        "source_sensitivity_floor": floor,
        "scale": ProbabilityScale.CALIBRATED.value,
        "temperatures": dict(zip(taxonomy.codes, temperatures, strict=True)),
        "thresholds": cuts_to_thresholds(taxonomy, selection, cuts, not_assessed),
        "cross_validated": referral_figures(nested, diseased, patients),
        "cross_validated_by_source": by_source(nested),
        **without_floor,
        "on_selection_set": referral_figures(
            refer(selection.scores, cuts), selection.diseased, patients
        ),
        "ece": {
            "before": expected_calibration_error(labels, raw_flat),
            "after_cross_fitted": expected_calibration_error(labels, crossfit),
        },
    }


def cross_validate(
    samples: list[Sample],
    taxonomy: Taxonomy,
    config: TrainConfig,
    out_dir: Path,
    k: int = 5,
    target_sensitivity: float = DEFAULT_TARGET_SENSITIVITY,
    min_positive: int = DEFAULT_MIN_POSITIVE,
    folds: np.ndarray | None = None,
    split: str | None = None,
    group_near_duplicates: bool = True,
) -> dict[str, Any]:
    """Patient-grouped k-fold CV of the hierarchical model and the flat baselines, same folds
    (or the folds given, e.g. one per source). With ``group_near_duplicates``, photographs
    that look like one eye keep to one fold whatever their patient ids."""
    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    backbone, _ = make_model(taxonomy, config)
    spec = config.preprocessing(backbone, taxonomy.name)
    features = extract_features(backbone, samples, spec, device, cache_dir=out_dir / "cache")
    y = targets(samples, taxonomy)
    patients = [s.patient_id for s in samples]
    groups = None
    if folds is None:
        groups = near_duplicate_groups(features[0], patients) if group_near_duplicates else None
        folds = patient_folds(samples, taxonomy, k, config.seed, groups)
    assessed = assessment(samples, taxonomy, min_positive)
    not_assessed = frozenset(assessed["not_assessed"])
    oof = _oof_predictions(samples, taxonomy, config, features, y, folds)
    results: dict[str, Any] = {}
    points: dict[str, Any] = {}
    for name, raw in tqdm(oof.items(), desc="operating points"):
        points[name] = operating_point(
            taxonomy, samples, raw, folds, not_assessed, target_sensitivity
        )
        results[name] = evaluate_levels(taxonomy, y, raw, not_assessed=not_assessed)
        results[name]["referral"] = points[name]["cross_validated"]
    summary = {
        "folds": len(np.unique(folds)),
        "split": split or "cross-validation by patient, multi-label stratified",
        "samples": len(samples),
        "patients": len(set(patients)),
        "near_duplicates_grouped": groups is not None,
        "fold_groups": len(set(groups or patients)),
        "config": {kk: v for kk, v in vars(config).items() if kk != "extra"},
        "assessment": assessed,
        "operating_point": points["hierarchical"],
        "operating_points": points,
        "results": results,
    }
    write_results(out_dir, taxonomy, summary, y, oof)
    arrays: dict[str, Any] = {f"{m}_l{i + 1}": p for m in oof for i, p in enumerate(oof[m])}
    np.savez(out_dir / "oof.npz", folds=folds, **arrays)
    return summary
