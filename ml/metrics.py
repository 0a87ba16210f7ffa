"""Evaluation measures, per class and weighted by prevalence, per taxonomy level.

Weighted averages weight each class by its number of positives (scikit-learn's "weighted"), as
in the paper's Tables 2-5. Specificity is added; calibration is the expected calibration error.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.metrics import roc_auc_score


@dataclass(frozen=True)
class ClassMetrics:
    code: str
    support: int
    auc: float
    accuracy: float
    precision: float
    recall: float
    specificity: float


def _safe_div(a: float, b: float) -> float:
    return float(a / b) if b else float("nan")


def class_metrics(code: str, y: np.ndarray, p: np.ndarray, threshold: float = 0.5) -> ClassMetrics:
    pred = p >= threshold
    tp = float(np.sum(pred & (y == 1)))
    tn = float(np.sum(~pred & (y == 0)))
    fp = float(np.sum(pred & (y == 0)))
    fn = float(np.sum(~pred & (y == 1)))
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
    return ClassMetrics(
        code=code,
        support=int(y.sum()),
        auc=auc,
        accuracy=(tp + tn) / len(y),
        precision=_safe_div(tp, tp + fp),
        recall=_safe_div(tp, tp + fn),
        specificity=_safe_div(tn, tn + fp),
    )


def weighted(rows: list[ClassMetrics]) -> dict[str, float]:
    """Support-weighted mean of each measure over classes with a defined value (callers leave
    out the classes the model does not assess)."""
    out = {}
    for field in ("auc", "accuracy", "precision", "recall", "specificity"):
        values = np.array([getattr(r, field) for r in rows], dtype=float)
        weights = np.array([r.support for r in rows], dtype=float)
        ok = ~np.isnan(values) & (weights > 0)
        out[field] = (
            float(np.average(values[ok], weights=weights[ok])) if ok.any() else float("nan")
        )
    return out


def level_metrics(
    codes: list[str],
    y: np.ndarray,
    p: np.ndarray,
    thresholds: dict[str, float] | None = None,
    not_assessed: frozenset[str] = frozenset(),
) -> tuple[list[ClassMetrics], dict[str, float]]:
    """Every class's row; the weighted average over the assessed classes only."""
    cuts = thresholds or {}
    rows = [class_metrics(c, y[:, i], p[:, i], cuts.get(c, 0.5)) for i, c in enumerate(codes)]
    return rows, weighted([r for r in rows if r.code not in not_assessed])


def top_k_accuracy(y: np.ndarray, p: np.ndarray, k: int = 3) -> float:
    """Share of samples with at least one true class among the k most probable."""
    top = np.argsort(-p, axis=1)[:, :k]
    hits = np.take_along_axis(y, top, axis=1).max(axis=1)
    return float(hits.mean())


def hierarchy_violation_rate(
    parent_p: np.ndarray,
    child_p: np.ndarray,
    parent_of: list[int],
    threshold: float = 0.5,
    children: list[int] | None = None,
) -> float:
    """Share of samples with a positive child whose parent is negative; ``children``: only
    these child columns count (the assessed ones: a class the model does not assess is never
    reported, so it cannot contradict its parent in a report)."""
    columns = list(range(child_p.shape[1])) if children is None else children
    child_pos = child_p[:, columns] >= threshold
    parent_pos = parent_p[:, [parent_of[c] for c in columns]] >= threshold
    return float(np.any(child_pos & ~parent_pos, axis=1).mean()) if columns else 0.0


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE over all (sample, class) pairs with equal-width probability bins."""
    y, p = y.ravel(), p.ravel()
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        mask = idx == b
        if mask.any():
            ece += mask.mean() * abs(p[mask].mean() - y[mask].mean())
    return float(ece)


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def apply_temperature(p: np.ndarray, temperature: float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-_logit(p) / temperature))


def fit_temperature(y: np.ndarray, p: np.ndarray) -> float:
    """The temperature T minimising the log loss of sigmoid(logit(p) / T) on (y, p)."""
    if y.min() == y.max():
        return 1.0  # one class only: nothing to calibrate against
    best, best_loss = 1.0, float("inf")
    for temperature in np.geomspace(0.25, 4.0, 81):
        q = np.clip(apply_temperature(p, float(temperature)), 1e-7, 1 - 1e-7)
        loss = float(-np.mean(y * np.log(q) + (1 - y) * np.log(1 - q)))
        if loss < best_loss:
            best, best_loss = float(temperature), loss
    return best


def apply_temperatures(p: np.ndarray, temperatures: list[float] | np.ndarray) -> np.ndarray:
    """Per-column temperature scaling of an (n, classes) probability matrix."""
    return np.stack(
        [apply_temperature(p[:, j], float(t)) for j, t in enumerate(temperatures)], axis=1
    )


def cross_fitted_temperatures(
    y: np.ndarray, p: np.ndarray, folds: np.ndarray
) -> tuple[np.ndarray, list[float]]:
    """Per-class temperature scaling of out-of-fold probabilities, each fold calibrated with
    temperatures fitted on the other folds (an honest estimate); also the temperatures fitted
    on all folds, for the final model."""
    calibrated = np.empty_like(p)
    for fold in np.unique(folds):
        test = folds == fold
        for j in range(p.shape[1]):
            t = fit_temperature(y[~test, j], p[~test, j])
            calibrated[test, j] = apply_temperature(p[test, j], t)
    return calibrated, [fit_temperature(y[:, j], p[:, j]) for j in range(p.shape[1])]
