"""Training, evaluation and cross-validation as whole jobs, with their written results."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ml import report
from ml.checkpoint import make_meta, save_checkpoint
from ml.data import Sample, read_manifest, targets
from ml.metrics import (
    expected_calibration_error,
    hierarchy_violation_rate,
    level_metrics,
    top_k_accuracy,
)
from ml.network import ScreeningNet
from ml.predictor import pick_device
from ml.preprocess import Preprocessing
from ml.train import (
    TrainConfig,
    extract_features,
    load_resume,
    make_model,
    save_resume,
    summarise_training,
    train_heads,
    train_unfreezing,
)
from services.taxonomy.tree import Taxonomy

log = logging.getLogger(__name__)


def constrained(
    levels: list[np.ndarray], taxonomy: Taxonomy, not_assessed: frozenset[str] = frozenset()
) -> list[np.ndarray]:
    """The max-constraint on arrays: each parent at least its assessed children (C-HMCNN), as
    ``services.screening.decision.enforce_hierarchy`` does for one image."""
    out = [p.copy() for p in levels]
    for level in range(taxonomy.depth, 1, -1):
        codes = taxonomy.level_codes(level)
        for child, parent in enumerate(taxonomy.parent_index(level)):
            if codes[child] in not_assessed:
                continue
            out[level - 2][:, parent] = np.maximum(
                out[level - 2][:, parent], out[level - 1][:, child]
            )
    return out


def evaluate_levels(
    taxonomy: Taxonomy,
    y: list[np.ndarray],
    raw: list[np.ndarray],
    thresholds: dict[str, float] | None = None,
    not_assessed: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """All measures for one model's predictions (raw = before the hierarchy constraint);
    weighted averages leave out the classes the model does not assess."""
    probs = constrained(raw, taxonomy, not_assessed)
    names = {n.code: n.name for n in taxonomy.nodes}
    result: dict[str, Any] = {"levels": {}, "not_assessed": sorted(not_assessed)}
    for level in range(1, taxonomy.depth + 1):
        codes = taxonomy.level_codes(level)
        rows, average = level_metrics(
            codes, y[level - 1], probs[level - 1], thresholds, not_assessed
        )
        result["levels"][level] = {
            "classes": rows,
            "weighted": average,
            "top3_accuracy": top_k_accuracy(y[level - 1], probs[level - 1]),
            "ece": expected_calibration_error(y[level - 1], probs[level - 1]),
        }
    violations = {}
    for level in range(2, taxonomy.depth + 1):
        parent_of = taxonomy.parent_index(level)
        # Only assessed children: the constraint (and the served decision) leaves the others
        # out, and they are never reported.
        assessed = [i for i, c in enumerate(taxonomy.level_codes(level)) if c not in not_assessed]
        violations[level] = {
            "before_constraint": hierarchy_violation_rate(
                raw[level - 2], raw[level - 1], parent_of, children=assessed
            ),
            "after_constraint": hierarchy_violation_rate(
                probs[level - 2], probs[level - 1], parent_of, children=assessed
            ),
        }
    result["hierarchy_violations"] = violations
    result["names"] = names
    return result


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
        f"# {summary['split'].capitalize()} ({summary['folds']} fold(s))",
        "",
        f"{summary['samples']} eyes of {summary['patients']} patients.",
        "",
    ]
    lines += _referral_lines(summary)
    for model, result in summary["results"].items():
        not_assessed = frozenset(result.get("not_assessed", ()))
        for level, data in result["levels"].items():
            title = f"{model}, level {level}"
            lines.append(
                report.markdown_table(title, data["classes"], names, data["weighted"], not_assessed)
            )
            lines.append(f"Top-3 accuracy {data['top3_accuracy']:.3f}; ECE {data['ece']:.3f}\n")
            report.write_csv(csv_path, model, level, data["classes"], data["weighted"])
        for level, v in result["hierarchy_violations"].items():
            lines.append(
                f"Hierarchy violations (level {level}): before constraint "
                f"{v['before_constraint']:.4f}, after {v['after_constraint']:.4f}\n"
            )
    (out_dir / "metrics.md").write_text("\n".join(lines))
    report.write_json(out_dir / "metrics.json", summary)
    probs = {m: constrained(p, taxonomy) for m, p in oof.items()}
    if any("referral" in result for result in summary["results"].values()):
        report.plot_referral(out_dir / "referral.png", summary["results"])
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


def operating_meta(cv: dict[str, Any], flip_tta: bool = False) -> dict[str, Any]:
    """Checkpoint metadata from a cross-validation's metrics.json: the operating point of the
    model trained the same way (with or without flip TTA), its calibration and the classes
    it does not assess."""
    points = cv.get("operating_points", {})
    point = (
        points.get("hierarchical_flip_tta" if flip_tta else "hierarchical") or cv["operating_point"]
    )
    return {
        "thresholds": point["thresholds"],
        "calibration": {"temperatures": point["temperatures"], "ece": point.get("ece")},
        "assessment": cv["assessment"],
        "operating_point": {k: point[k] for k in ("target_sensitivity", "scale", "cross_validated")}
        | {"source_sensitivity_floor": point.get("source_sensitivity_floor")},
        "metrics": {"cross_validation": cv},
    }


def _referral_lines(summary: dict[str, Any]) -> list[str]:
    """The referral (refer this patient or not) first: it is what the screening is judged by."""
    lines = ["## Referral (any assessed disease, or no normal finding, or ungradable)", ""]
    assessment = summary.get("assessment")
    if assessment:
        lines.append(
            f"Not assessed (fewer than {assessment['min_positive']} positive eyes; no threshold, "
            "no decision, left out of the weighted averages): "
            + (", ".join(assessment["not_assessed"]) or "none")
            + "\n"
        )
    point = summary.get("operating_point")
    if point:
        lines.append(
            f"Operating point: target referral sensitivity {point['target_sensitivity']:.2f}, "
            f"thresholds on the {point['scale']} scale. Figures below are nested: each fold "
            "referred with thresholds chosen on the other folds.\n"
        )
    lines += [
        "| model | unit | sensitivity (95% CI) | specificity (95% CI) | PPV | NPV |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for model, result in summary["results"].items():
        for unit, fig in result.get("referral", {}).items():
            cells = [_proportion(fig[m]) for m in ("sensitivity", "specificity", "ppv", "npv")]
            lines.append(f"| {model} | {unit} | " + " | ".join(cells) + " |")
    for model, result in summary["results"].items():
        guard = result.get("guard")
        if guard and guard["present"]:
            lines.append(
                f"\n{model}: the guard called {guard['fired']} of {summary['samples']} "
                "photographs not assessable by this model (referred, as the service does)."
            )
    by_source = (point or {}).get("cross_validated_by_source", {})
    if len(by_source) > 1:
        lines += ["", "Hierarchical model, per source (eyes):", ""]
        lines += ["| source | sensitivity (95% CI) | specificity (95% CI) |", "| --- | --- | --- |"]
        for source, fig in by_source.items():
            cells = [_proportion(fig[m]) for m in ("sensitivity", "specificity")]
            lines.append(f"| {source} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _proportion(value: dict[str, Any]) -> str:
    if not value["n"]:
        return "–"
    return (
        f"{value['estimate']:.3f} ({value['low']:.3f}–{value['high']:.3f}; "
        f"{value['successes']}/{value['n']})"
    )


def model_meta(
    taxonomy: Taxonomy,
    config: TrainConfig,
    preprocessing: Preprocessing,
    version: str,
    route: str | None = None,
) -> dict[str, Any]:
    """A checkpoint's metadata for heads of ``config``'s shape on its backbone."""
    route = route or taxonomy.name
    return make_meta(
        name=f"eyescreen-{route}",
        version=version,
        route=route,
        backbone=config.backbone,
        taxonomy=taxonomy,
        preprocessing=preprocessing,
        hidden=config.hidden,
        dropout=config.dropout,
        flat=config.flat,
    )


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
    meta = model_meta(taxonomy, config, spec, version, route)
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
    """A checkpoint on photographs it never saw: per-class tables and the referral it makes
    (through ``services.screening.decision.decide``, as the service decides), per eye and
    patient."""
    from ml.operating_point import diseased_eyes, referral_figures
    from ml.paired_referral import write_referrals
    from ml.predictor import Predictor
    from ml.preprocess import load_rgb
    from services.screening.decision import decide
    from services.screening.quality import GRADABLE, Quality

    out_dir.mkdir(parents=True, exist_ok=True)
    predictor = Predictor.load(path, device)
    taxonomy = predictor.taxonomy
    point = predictor.operating_point
    y = targets(samples, taxonomy)
    raw = [np.zeros_like(t) for t in y]
    referred = np.zeros(len(samples), dtype=bool)
    unfamiliar = np.zeros(len(samples), dtype=bool)
    for start in tqdm(range(0, len(samples), 16), desc="evaluate", unit="batch"):
        chunk = samples[start : start + 16]
        reads = predictor.read([load_rgb(str(s.path)) for s in chunk])
        rows = [read.probabilities for read in reads]
        for i, read in enumerate(reads):
            # As the service decides: a photograph beyond the guard is not assessable by
            # this model, hence ungradable and referred.
            quality = Quality.UNFAMILIAR if read.unfamiliar else GRADABLE
            referred[start + i] = decide(taxonomy, read.probabilities, point, quality).referral
            unfamiliar[start + i] = read.unfamiliar
        for lvl in range(1, taxonomy.depth + 1):
            codes = taxonomy.level_codes(lvl)
            raw[lvl - 1][start : start + len(chunk)] = [[r[c] for c in codes] for r in rows]
    diseased = diseased_eyes(taxonomy, np.concatenate(y, axis=1))
    result = evaluate_levels(
        taxonomy, y, raw, dict(point.thresholds), not_assessed=point.not_assessed
    )
    result["referral"] = referral_figures(referred, diseased, [s.patient_id for s in samples])
    sources = np.array([s.source for s in samples])
    result["referral_by_source"] = {  # a pooled figure hides a camera it fails on
        str(source): referral_figures(
            referred[sources == source],
            diseased[sources == source],
            [s.patient_id for s in samples if s.source == source],
        )
        for source in np.unique(sources)
    }
    result["guard"] = {  # how often the guard called a photograph not assessable
        "present": predictor.guard is not None,
        "fired": int(unfamiliar.sum()),
        "fired_by_source": {
            str(source): int(unfamiliar[sources == source].sum()) for source in np.unique(sources)
        },
        "photographs_by_source": {
            str(source): int((sources == source).sum()) for source in np.unique(sources)
        },
    }
    summary = {
        "checkpoint": str(path),
        "sha256": predictor.sha256,
        "samples": len(samples),
        "patients": len({s.patient_id for s in samples}),
        "folds": 1,
        "split": "external evaluation",
        "probability_scale": point.scale.value,
        "not_assessed": sorted(point.not_assessed),
        "results": {"checkpoint": result},
    }
    write_results(out_dir, taxonomy, summary, y, {"hierarchical": raw})
    write_referrals(out_dir / "referrals.csv", samples, diseased, referred, unfamiliar)
    if figures:
        from ml.figures import gradcam_grid, tsne_map

        shuffled = [samples[i] for i in np.random.default_rng(0).permutation(len(samples))]
        gradcam_grid(predictor, shuffled, out_dir / "gradcam.png")
        tsne_map(predictor, shuffled[:1500], out_dir / "tsne.png")
    return summary


def load_samples(
    manifests: Path | list[Path],
    images: Path | None,
    taxonomy: Taxonomy,
    label_map: Path | None = None,
) -> list[Sample]:
    """Samples of one or more manifests (each relative to its own folder unless ``images``)."""
    paths = manifests if isinstance(manifests, list) else [manifests]
    return [
        sample
        for path in paths
        for sample in read_manifest(path, images or path.parent, taxonomy, label_map)
    ]
