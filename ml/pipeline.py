"""Training, evaluation and cross-validation as whole jobs, with their written results."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ml import report
from ml.checkpoint import make_meta, save_checkpoint
from ml.data import Sample, patient_folds, read_manifest, targets
from ml.metrics import (
    cross_fitted_temperatures,
    expected_calibration_error,
    hierarchy_violation_rate,
    level_metrics,
    threshold_for_sensitivity,
    top_k_accuracy,
)
from ml.network import ScreeningNet
from ml.predictor import pick_device
from ml.train import (
    TrainConfig,
    build_heads,
    extract_features,
    load_resume,
    make_model,
    predict_heads,
    save_resume,
    summarise_training,
    train_heads,
    train_unfreezing,
)
from services.screening import consistent_thresholds
from services.taxonomy import Taxonomy

log = logging.getLogger(__name__)


def constrained(levels: list[np.ndarray], taxonomy: Taxonomy) -> list[np.ndarray]:
    """The max-constraint on arrays: each parent at least its children (C-HMCNN)."""
    out = [p.copy() for p in levels]
    for level in range(taxonomy.depth, 1, -1):
        for child, parent in enumerate(taxonomy.parent_index(level)):
            out[level - 2][:, parent] = np.maximum(
                out[level - 2][:, parent], out[level - 1][:, child]
            )
    return out


def evaluate_levels(
    taxonomy: Taxonomy,
    y: list[np.ndarray],
    raw: list[np.ndarray],
    thresholds: dict[str, float] | None = None,
) -> dict[str, Any]:
    """All measures for one model's predictions (raw = before the hierarchy constraint)."""
    probs = constrained(raw, taxonomy)
    names = {n.code: n.name for n in taxonomy.nodes}
    result: dict[str, Any] = {"levels": {}}
    for level in range(1, taxonomy.depth + 1):
        codes = taxonomy.level_codes(level)
        rows, average = level_metrics(codes, y[level - 1], probs[level - 1], thresholds)
        result["levels"][level] = {
            "classes": rows,
            "weighted": average,
            "top3_accuracy": top_k_accuracy(y[level - 1], probs[level - 1]),
            "ece": expected_calibration_error(y[level - 1], probs[level - 1]),
        }
    violations = {}
    for level in range(2, taxonomy.depth + 1):
        parent_of = taxonomy.parent_index(level)
        violations[level] = {
            "before_constraint": hierarchy_violation_rate(
                raw[level - 2], raw[level - 1], parent_of
            ),
            "after_constraint": hierarchy_violation_rate(
                probs[level - 2], probs[level - 1], parent_of
            ),
        }
    result["hierarchy_violations"] = violations
    result["names"] = names
    return result


def sensitivity_thresholds(
    taxonomy: Taxonomy, y: list[np.ndarray], raw: list[np.ndarray], target: float
) -> dict[str, float]:
    probs = constrained(raw, taxonomy)
    cuts = {
        code: threshold_for_sensitivity(y[lvl - 1][:, i], probs[lvl - 1][:, i], target)
        for lvl in range(1, taxonomy.depth + 1)
        for i, code in enumerate(taxonomy.level_codes(lvl))
    }
    return consistent_thresholds(taxonomy, cuts)


def cross_validate(
    samples: list[Sample],
    taxonomy: Taxonomy,
    config: TrainConfig,
    out_dir: Path,
    k: int = 5,
    target_sensitivity: float = 0.9,
) -> dict[str, Any]:
    """Patient-grouped k-fold CV of the hierarchical model and the flat baselines, same folds."""
    from sklearn.ensemble import ExtraTreesClassifier

    out_dir.mkdir(parents=True, exist_ok=True)
    device = pick_device(config.device)
    backbone, _ = make_model(taxonomy, config)
    spec = config.preprocessing(backbone, taxonomy.name)
    features = extract_features(backbone, samples, spec, device, cache_dir=out_dir / "cache")
    y = targets(samples, taxonomy)
    folds = patient_folds(samples, taxonomy, k, config.seed)
    models = ("hierarchical", "flat", "extra_trees")
    oof = {m: [np.zeros_like(t) for t in y] for m in models}
    for fold in tqdm(range(k), desc="folds"):
        train, test = folds != fold, folds == fold
        for name, flat in (("hierarchical", False), ("flat", True)):
            fold_config = replace(config, flat=flat, seed=config.seed + fold)
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
            for lvl, p in enumerate(predict_heads(heads, features[0, test], taxonomy, device)):
                oof[name][lvl][test] = p
        trees = ExtraTreesClassifier(
            n_estimators=300, min_samples_leaf=2, n_jobs=-1, random_state=config.seed
        )
        trees.fit(features[0, train], y[-1][train])
        deepest = _positive_probabilities(trees, features[0, test])
        parents = constrained(
            [np.zeros((deepest.shape[0], len(taxonomy.level(1)))), deepest], taxonomy
        )
        oof["extra_trees"][0][test], oof["extra_trees"][1][test] = parents[0], deepest
    thresholds = sensitivity_thresholds(taxonomy, y, oof["hierarchical"], target_sensitivity)
    results = {m: evaluate_levels(taxonomy, y, oof[m]) for m in models}
    results["hierarchical_calibrated"] = evaluate_levels(
        taxonomy, y, oof["hierarchical"], thresholds
    )
    calibration = _temperature_calibration(taxonomy, y, oof["hierarchical"], folds)
    summary = {
        "calibration": calibration,
        "folds": k,
        "split": "by patient, multi-label stratified",
        "samples": len(samples),
        "patients": len({s.patient_id for s in samples}),
        "config": {kk: v for kk, v in vars(config).items() if kk != "extra"},
        "target_sensitivity": target_sensitivity,
        "thresholds": thresholds,
        "results": results,
    }
    write_results(out_dir, taxonomy, summary, y, oof)
    arrays: dict[str, Any] = {f"{m}_l{i + 1}": p for m in models for i, p in enumerate(oof[m])}
    np.savez(out_dir / "oof.npz", folds=folds, **arrays)
    return summary


def _temperature_calibration(
    taxonomy: Taxonomy, y: list[np.ndarray], oof: list[np.ndarray], folds: np.ndarray
) -> dict[str, Any]:
    """Per-class temperature scaling: ECE before and after (cross-fitted), and the
    temperatures fitted on all folds."""
    result: dict[str, Any] = {"temperatures": {}, "ece_before": {}, "ece_after": {}}
    for level, (truth, probs) in enumerate(zip(y, oof, strict=True), start=1):
        calibrated, temperatures = cross_fitted_temperatures(truth, probs, folds)
        result["ece_before"][level] = expected_calibration_error(truth, probs)
        result["ece_after"][level] = expected_calibration_error(truth, calibrated)
        codes = taxonomy.level_codes(level)
        result["temperatures"].update(dict(zip(codes, temperatures, strict=True)))
    return result


def _positive_probabilities(trees: Any, features: np.ndarray) -> np.ndarray:
    """P(class present) per class; a class never positive in training gets 0."""
    columns = []
    for classes, proba in zip(trees.classes_, trees.predict_proba(features), strict=True):
        positive = np.flatnonzero(classes == 1)
        columns.append(proba[:, positive[0]] if positive.size else np.zeros(len(features)))
    return np.stack(columns, axis=1)


def write_results(
    out_dir: Path,
    taxonomy: Taxonomy,
    summary: dict[str, Any],
    y: list[np.ndarray],
    oof: dict[str, list[np.ndarray]],
) -> None:
    names = {n.code: n.name for n in taxonomy.nodes}
    csv_path = out_dir / "metrics.csv"
    csv_path.unlink(missing_ok=True)
    lines = [
        f"# Cross-validation ({summary['folds']} folds, {summary['split']})",
        "",
        f"{summary['samples']} eyes of {summary['patients']} patients.",
        "",
    ]
    for model, result in summary["results"].items():
        for level, data in result["levels"].items():
            title = f"{model}, level {level}"
            lines.append(report.markdown_table(title, data["classes"], names, data["weighted"]))
            lines.append(f"Top-3 accuracy {data['top3_accuracy']:.3f}; ECE {data['ece']:.3f}\n")
            report.write_csv(csv_path, model, level, data["classes"], data["weighted"])
        for level, v in result["hierarchy_violations"].items():
            lines.append(
                f"Hierarchy violations (level {level}): before constraint "
                f"{v['before_constraint']:.4f}, after {v['after_constraint']:.4f}\n"
            )
    calibration = summary.get("calibration")
    if calibration:
        lines.append("## Calibration: per-class temperature scaling (cross-fitted)\n")
        for level, before in calibration["ece_before"].items():
            after = calibration["ece_after"][level]
            lines.append(f"Level {level}: ECE {before:.4f} before, {after:.4f} after\n")
        temps = ", ".join(f"{c} {t:.2f}" for c, t in calibration["temperatures"].items())
        lines.append(f"Temperatures (all folds): {temps}\n")
    (out_dir / "metrics.md").write_text("\n".join(lines))
    report.write_json(out_dir / "metrics.json", summary)
    probs = {m: constrained(p, taxonomy) for m, p in oof.items()}
    for level in range(1, taxonomy.depth + 1):
        codes = taxonomy.level_codes(level)
        report.plot_roc(
            out_dir / f"roc_level{level}.png",
            f"ROC, level {level} (hierarchical)",
            codes,
            names,
            y[level - 1],
            probs["hierarchical"][level - 1],
        )
        report.plot_confusion(
            out_dir / f"confusion_level{level}.png",
            f"Confusion, level {level}",
            codes,
            names,
            y[level - 1],
            probs["hierarchical"][level - 1],
        )
    report.plot_reliability(out_dir / "reliability.png", y[-1], probs["hierarchical"][-1])


def train_final(
    samples: list[Sample],
    taxonomy: Taxonomy,
    config: TrainConfig,
    route: str,
    out: Path,
    version: str,
    extra_meta: dict[str, Any] | None = None,
    cache_dir: Path | None = None,
    resume_path: Path | None = None,
) -> tuple[str, list[float]]:
    """Train on all samples (frozen phase on cached features, then unfreezing); save.

    With ``resume_path`` the state is kept after the head phase and after every unfreezing
    epoch; a run started again with the same path continues where the last one stopped."""
    device = pick_device(config.device)
    backbone, heads = make_model(taxonomy, config)
    spec = config.preprocessing(backbone, route)
    y = targets(samples, taxonomy)
    model = ScreeningNet(backbone.module, heads)
    resume = load_resume(resume_path)
    if resume is None:
        features = extract_features(backbone, samples, spec, device, cache_dir=cache_dir)
        history = train_heads(heads, features, y, config, device)
        if resume_path is not None:
            save_resume(resume_path, model, history)
    else:
        model.load_state_dict(resume["model"])
        history = list(resume["history"])
        log.info("resuming training from %s (%d epochs done)", resume_path, len(history))
    if config.unfreeze_steps:
        history = train_unfreezing(
            model, backbone, samples, y, spec, config, device, history, resume_path, resume
        )
    meta = make_meta(
        name=f"eyescreen-{route}",
        version=version,
        route=route,
        backbone=config.backbone,
        taxonomy=taxonomy,
        preprocessing=spec,
        hidden=config.hidden,
        dropout=config.dropout,
        flat=config.flat,
    )
    meta["training"] = summarise_training(samples, taxonomy) | {
        "config": {k: v for k, v in vars(config).items() if k != "extra"},
        "loss": history,
    }
    meta.update(extra_meta or {})
    sha = save_checkpoint(out, meta, model.cpu().eval().to(memory_format=torch.contiguous_format))
    if resume_path is not None:
        resume_path.unlink(missing_ok=True)  # finished: nothing to resume
    return sha, history


def evaluate_checkpoint(
    path: Path, samples: list[Sample], out_dir: Path, device: str = "auto", figures: bool = True
) -> dict[str, Any]:
    from ml.predictor import Predictor
    from ml.preprocess import load_rgb

    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.load(path, device)
    taxonomy = predictor.taxonomy
    y = targets(samples, taxonomy)
    raw = [np.zeros_like(t) for t in y]
    for start in tqdm(range(0, len(samples), 16), desc="evaluate", unit="batch"):
        chunk = samples[start : start + 16]
        rows = predictor.predict([load_rgb(str(s.path)) for s in chunk])
        for lvl in range(1, taxonomy.depth + 1):
            codes = taxonomy.level_codes(lvl)
            raw[lvl - 1][start : start + len(chunk)] = [[r[c] for c in codes] for r in rows]
    summary = {
        "checkpoint": str(path),
        "sha256": predictor.sha256,
        "samples": len(samples),
        "patients": len({s.patient_id for s in samples}),
        "folds": 1,
        "split": "external evaluation",
        "results": {"checkpoint": evaluate_levels(taxonomy, y, raw, predictor.thresholds)},
    }
    write_results(out_dir, taxonomy, summary, y, {"hierarchical": raw})
    if figures:
        from ml.figures import gradcam_grid, tsne_map

        shuffled = [samples[i] for i in np.random.default_rng(0).permutation(len(samples))]
        gradcam_grid(predictor, shuffled, out_dir / "gradcam.png")
        tsne_map(predictor, shuffled[:1500], out_dir / "tsne.png")
    return summary


def load_samples(manifest: Path, images: Path | None, taxonomy: Taxonomy) -> list[Sample]:
    return read_manifest(manifest, images or manifest.parent, taxonomy)
