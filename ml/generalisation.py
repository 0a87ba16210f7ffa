"""Figures that show generalisation, not memory: the referral per source and with each source
held out, per eye and per patient, with Wilson intervals and AUCs.

Three readings of one recipe (``Recipe``: how a fold's model is trained and read; the
frozen one here, fine-tunings in ``ml.last_block`` and ``ml.image_finetune``), every recipe on
the same folds:

- **pooled**: patient-grouped k-fold CV over every source, nested (each fold referred with
  temperatures and thresholds chosen on the other folds' out-of-fold predictions);
- **per source**: the pooled nested referral, counted within each source;
- **source held out**: for each source, a model trained on the other sources only, and the
  temperatures and thresholds chosen on the other sources' out-of-fold predictions (their
  eyes only), then the held-out source referred. This is what a hospital whose camera the
  model never saw gets.

Folds group photographs that look like one eye (``near_duplicate_groups``) as well as one
patient id: the same eye filed under two ids in two folds lets a fold's model remember the
answer, and flatters the figures (the overstatement the held-out patients showed).
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import partial
from typing import Any, Protocol

import numpy as np
import torch

from ml.crossval import flat_levels, split_levels
from ml.data import Sample, patient_folds, targets
from ml.metrics import apply_temperatures, fit_temperature
from ml.network import HierarchicalHeads
from ml.operating_point import (
    ReferralProblem,
    nested_referral,
    refer,
    referral_figures,
    referral_problem,
    search_cuts,
)
from ml.pipeline import constrained
from ml.train import TrainConfig, build_heads, predict_heads, train_heads
from services.taxonomy.tree import Taxonomy

log = logging.getLogger(__name__)


class Recipe(Protocol):
    """How a model is trained and read in every fold: heads on cached features (the shipped,
    frozen recipe) or a fine-tuned last block (``ml.last_block``)."""

    config: TrainConfig

    def fit_predict(
        self, y: list[np.ndarray], train: np.ndarray, test: np.ndarray, seed: int
    ) -> list[np.ndarray]:
        """Train on the ``train`` rows; raw per-level probabilities of the ``test`` rows."""
        ...

    def pooled_features(self) -> np.ndarray:
        """(n, dim) features of view 0, for grouping near-duplicates."""
        ...


class HeadsOnFeatures:
    """The frozen recipe: heads trained on every view of cached backbone features; a test
    photograph is read in each view and the probabilities averaged (flip TTA when the
    features hold a mirrored view)."""

    def __init__(
        self,
        taxonomy: Taxonomy,
        config: TrainConfig,
        features: np.ndarray,
        read: int | None = None,
    ) -> None:
        """``read``: the first views a test photograph is read in (default: all of them;
        views after those are training augmentations only)."""
        self.taxonomy, self.config, self.features = taxonomy, config, features
        self.read = read or len(features)

    def pooled_features(self) -> np.ndarray:
        return self.features[0]

    def fit_predict(
        self, y: list[np.ndarray], train: np.ndarray, test: np.ndarray, seed: int
    ) -> list[np.ndarray]:
        targets = [t[train] for t in y]
        heads = train_heads_on(self.taxonomy, self.config, self.features[:, train], targets, seed)
        return read_views(heads, self.features[: self.read, test], self.taxonomy, self.config)


def _device(config: TrainConfig) -> torch.device:
    return torch.device("cpu") if config.device == "auto" else torch.device(config.device)


def train_heads_on(
    taxonomy: Taxonomy,
    config: TrainConfig,
    features: np.ndarray,
    y: list[np.ndarray],
    seed: int,
) -> HierarchicalHeads:
    """Heads trained on (views, n, dim) features, seeded."""
    from ml.backbones import Backbone

    dim = features.shape[-1]
    torch.manual_seed(seed)
    stub = Backbone("features", torch.nn.Identity(), dim, 0, [])
    heads = build_heads(stub, taxonomy, replace(config, seed=seed))
    train_heads(heads, features, y, replace(config, seed=seed), _device(config), progress=False)
    return heads


def read_views(
    heads: HierarchicalHeads, features: np.ndarray, taxonomy: Taxonomy, config: TrainConfig
) -> list[np.ndarray]:
    """Raw per-level probabilities, averaged over the views of (views, n, dim) features."""
    device = _device(config)
    views = [predict_heads(heads, features[v], taxonomy, device) for v in range(len(features))]
    return [np.mean([v[lvl] for v in views], axis=0) for lvl in range(taxonomy.depth)]


def out_of_fold(
    recipe: Recipe,
    y: list[np.ndarray],
    folds: np.ndarray,
    rows: np.ndarray | None = None,
) -> list[np.ndarray]:
    """Out-of-fold raw probabilities of ``rows`` (all rows by default; zeros elsewhere), each
    fold's model trained on the other folds' rows only."""
    rows = np.ones(len(folds), dtype=bool) if rows is None else rows
    oof = [np.zeros_like(t) for t in y]
    for fold in np.unique(folds[rows]):
        test = rows & (folds == fold)
        raw = recipe.fit_predict(y, rows & ~test, test, recipe.config.seed + int(fold))
        for lvl, p in enumerate(raw):
            oof[lvl][test] = p
    return oof


class _Referral:
    """Calibration and referral problem of one set of raw probabilities."""

    def __init__(self, taxonomy: Taxonomy, labels: np.ndarray, not_assessed: frozenset[str]):
        self.taxonomy, self.labels, self.not_assessed = taxonomy, labels, not_assessed

    def temperatures(self, raw: np.ndarray, rows: np.ndarray) -> list[float]:
        return [fit_temperature(self.labels[rows, j], raw[rows, j]) for j in range(raw.shape[1])]

    def problem(self, raw: np.ndarray, temperatures: list[float]) -> ReferralProblem:
        calibrated = apply_temperatures(raw, temperatures)
        levels = constrained(
            split_levels(calibrated, self.taxonomy), self.taxonomy, self.not_assessed
        )
        return referral_problem(self.taxonomy, flat_levels(levels), self.labels, self.not_assessed)


def referral_auc(problem: ReferralProblem) -> float | None:
    """AUC of one referral score per eye: the highest assessed disease probability or one
    minus the normal probability, whichever is higher (None without both kinds of eye)."""
    from sklearn.metrics import roc_auc_score

    scores = problem.scores.copy()
    if problem.rules and problem.rules[-1] == "normal":
        scores[:, -1] = 1.0 + scores[:, -1]
    score = scores.max(axis=1)
    if problem.diseased.all() or not problem.diseased.any():
        return None
    return float(roc_auc_score(problem.diseased, score))


def level_auc(labels: np.ndarray, probs: np.ndarray, columns: list[int]) -> float | None:
    """Support-weighted AUC over the given classes that have both kinds of eye here."""
    from sklearn.metrics import roc_auc_score

    aucs, weights = [], []
    for j in columns:
        positives = labels[:, j].sum()
        if 0 < positives < len(labels):
            aucs.append(roc_auc_score(labels[:, j], probs[:, j]))
            weights.append(positives)
    return float(np.average(aucs, weights=weights)) if aucs else None


def _block(
    referred: np.ndarray,
    problem: ReferralProblem,
    patients: list[str],
    level2: float | None,
) -> dict[str, Any]:
    figures = referral_figures(referred, problem.diseased, patients)
    return figures | {"referral_auc": referral_auc(problem), "level2_weighted_auc": level2}


def source_report(
    samples: list[Sample],
    taxonomy: Taxonomy,
    recipe: Recipe,
    not_assessed: frozenset[str],
    target: float,
    k: int = 5,
    groups: list[str] | None = None,
    inner_cv: bool = True,
) -> dict[str, Any]:
    """Pooled nested, per-source and source-held-out referral figures of one recipe.

    With ``inner_cv`` the held-out source's temperatures and thresholds come from a
    cross-validation over the other sources alone (models that never saw it); without it,
    from the pooled out-of-fold predictions of the other sources' eyes (cheaper: those
    models saw four fifths of the held-out source, though none of its eyes chose a cut)."""
    y = targets(samples, taxonomy)
    labels = flat_levels(y)
    folds = patient_folds(samples, taxonomy, k, recipe.config.seed, groups)
    patients = [s.patient_id for s in samples]
    sources = np.array([s.source for s in samples])
    ref = _Referral(taxonomy, labels, not_assessed)
    deep = [
        taxonomy.codes.index(c)
        for c in taxonomy.level_codes(taxonomy.depth)
        if c not in not_assessed
    ]

    log.info("pooled %d-fold cross-validation", k)
    oof = flat_levels(out_of_fold(recipe, y, folds))
    nested = nested_referral(
        lambda train: ref.problem(oof, ref.temperatures(oof, train)), folds, target
    )
    pooled_problem = ref.problem(oof, ref.temperatures(oof, np.ones(len(samples), bool)))
    report: dict[str, Any] = {
        "samples": len(samples),
        "patients": len(set(patients)),
        "groups": len(set(groups or patients)),
        "folds": k,
        "target_sensitivity": target,
        "thresholds_for_held_out_source": "inner cross-validation over the other sources"
        if inner_cv
        else "pooled out-of-fold predictions of the other sources' eyes",
        "pooled": _block(nested, pooled_problem, patients, level_auc(labels, oof, deep)),
        "per_source": {},
        "source_held_out": {},
        "site_recalibrated": {},
    }
    for source in sorted(set(sources)):
        rows = sources == source
        sub = pooled_problem.rows(rows)
        report["per_source"][source] = _block(
            nested[rows],
            sub,
            [p for p, r in zip(patients, rows, strict=True) if r],
            level_auc(labels[rows], oof[rows], deep),
        ) | {"samples": int(rows.sum())}
    for source in sorted(set(sources)):
        log.info("source %s held out", source)
        held, others = sources == source, sources != source
        raw = flat_levels(recipe.fit_predict(y, others, held, recipe.config.seed + 100))
        basis = oof
        if inner_cv:
            basis = flat_levels(out_of_fold(recipe, y, folds, others))
        temperatures = ref.temperatures(basis, others)
        chosen = ref.problem(basis, temperatures)
        cuts = search_cuts(chosen.rows(others), target)
        full = np.zeros_like(oof)
        full[held] = raw
        problem = ref.problem(full, temperatures)
        sub = problem.rows(held)
        report["source_held_out"][source] = _block(
            refer(sub.scores, cuts),
            sub,
            [p for p, r in zip(patients, held, strict=True) if r],
            level_auc(labels[held], raw, deep),
        ) | {"samples": int(held.sum())}
        if problem.diseased[held].any() and not problem.diseased[held].all():
            report["site_recalibrated"][source] = site_recalibrated(
                taxonomy,
                labels[held],
                raw,
                folds[held],
                not_assessed,
                target,
                [p for p, r in zip(patients, held, strict=True) if r],
            ) | {"samples": int(held.sum())}
    report["worst_source"] = _worst(report)
    return report


def site_recalibrated(
    taxonomy: Taxonomy,
    labels: np.ndarray,
    raw: np.ndarray,
    folds: np.ndarray,
    not_assessed: frozenset[str],
    target: float,
    patients: list[str],
) -> dict[str, Any]:
    """A held-out source after ``eyescreen model recalibrate``: the same model (it never saw
    the source), temperatures and thresholds refitted on the site's own verified eyes. Each
    fold of the site is referred with them fitted on its other folds' eyes."""
    site = _Referral(taxonomy, labels, not_assessed)
    referred = nested_referral(partial(_fitted_problem, site, raw), folds, target)
    whole = _fitted_problem(site, raw, np.ones(len(raw), dtype=bool))
    calibration = [int((folds != f).sum()) for f in np.unique(folds)]
    return _block(referred, whole, patients, None) | {
        "calibration_eyes": int(np.mean(calibration)),
        "calibration_eyes_per_fold": calibration,
    }


def held_out_severity(block: dict[str, Any]) -> tuple[float, float]:
    """Sort key, worst first, of a reading: its lower of per-eye sensitivity and specificity
    (a source whose normals are all referred is as bad as one whose diseased eyes are missed;
    a source with eyes of one kind only is judged on that one), ties to the interval that lies
    lower (0/19 is surer to be bad than 0/6)."""
    eye = block["eye"]
    measured = [eye[m] for m in ("sensitivity", "specificity") if eye[m]["n"]]
    if not measured:
        return (float("inf"), float("inf"))
    lowest = min(measured, key=lambda v: (v["estimate"], v["high"]))
    return (float(lowest["estimate"]), float(lowest["high"]))


def _worst(report: dict[str, Any]) -> dict[str, Any]:
    """The held-out source that fares worst (``held_out_severity``)."""
    name, block = min(report["source_held_out"].items(), key=lambda i: held_out_severity(i[1]))
    return {"source": name, "eye": block["eye"], "patient": block["patient"]}


def markdown(report: dict[str, Any]) -> str:
    """The table of the issue: pooled, per source, each source held out; eye and patient."""

    def cell(value: dict[str, Any]) -> str:
        if not value["n"]:
            return "–"
        return (
            f"{value['estimate']:.3f} ({value['low']:.3f}–{value['high']:.3f}; "
            f"{value['successes']}/{value['n']})"
        )

    def auc(value: float | None) -> str:
        return "–" if value is None else f"{value:.3f}"

    lines = [f"**Warning: {w}**\n" for w in report.get("warnings", [])]
    lines += [
        f"{report['samples']} eyes, {report['patients']} patient ids, {report['groups']} fold "
        f"groups; {report['folds']}-fold nested CV; target referral sensitivity "
        f"{report['target_sensitivity']:.2f}.",
        "",
        _settings_line(report),
        "",
        _LEGEND,
        "",
        "| reading | source | unit | sensitivity (95 % Wilson) | specificity (95 % Wilson) "
        "| referral AUC | level-2 AUC |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    worst = report["worst_source"]
    rows = [
        ("worst source held out", worst["source"], report["source_held_out"][worst["source"]]),
        ("pooled nested", "all", report["pooled"]),
    ]
    rows += [("per source (pooled nested)", s, b) for s, b in report["per_source"].items()]
    rows += [("source held out", s, b) for s, b in report["source_held_out"].items()]
    rows += [
        (f"held out, recalibrated at the site (cross-fitted, ~{b['calibration_eyes']} eyes)", s, b)
        for s, b in report.get("site_recalibrated", {}).items()
    ]
    for reading, source, block in rows:
        for unit in ("eye", "patient"):
            fig = block[unit]
            aucs = (
                f"{auc(block['referral_auc'])} | {auc(block['level2_weighted_auc'])}"
                if unit == "eye"
                else " | "
            )
            lines.append(
                f"| {reading} | {source} | {unit} | {cell(fig['sensitivity'])} | "
                f"{cell(fig['specificity'])} | {aucs} |"
            )
    return "\n".join(lines) + "\n"


_LEGEND = (
    "*Worst source held out*: the held-out source whose lower of per-eye sensitivity and "
    "specificity is lowest. *Per source*: the pooled nested CV's referrals of that source's "
    "eyes. *Held out*: heads trained on the other sources, temperatures and thresholds chosen "
    "without the source. *Recalibrated at the site*: that held-out model with temperatures and "
    "thresholds refitted on the site's own eyes, cross-fitted (each fold of the site referred "
    "with them fitted on its other folds; the eyes per fit in `calibration_eyes_per_fold`). "
    "Per-patient rows: a patient is referred when either eye is. *Referral AUC*: of one score "
    "per eye (the highest assessed disease probability or one minus the normal one). *Level-2 "
    "AUC*: support-weighted mean over the assessed level-2 classes with both kinds of eye in the "
    "row. AUCs are per eye only."
)


def _settings_line(report: dict[str, Any]) -> str:
    """What produced the figures, so that a table read alone says what it measures."""
    parts = [
        f"recipe {report.get('recipe', 'frozen')}",
        f"{report.get('backbone', '?')} at {report.get('image_size', '?')} px",
        f"about {report['photographs_per_source']} photographs per source"
        if report.get("photographs_per_source")
        else "every photograph",
        f"thresholds for a held-out source from {report['thresholds_for_held_out_source']}",
    ]
    if report.get("not_assessed"):
        parts.append("not assessed: " + ", ".join(report["not_assessed"]))
    return "Settings: " + "; ".join(parts) + "."


def _fitted_problem(ref: _Referral, raw: np.ndarray, train: np.ndarray) -> ReferralProblem:
    return ref.problem(raw, ref.temperatures(raw, train))


def procedure_check(
    samples: list[Sample],
    taxonomy: Taxonomy,
    recipe: Recipe,
    not_assessed: frozenset[str],
    target: float,
    k: int = 5,
    groups: list[str] | None = None,
) -> dict[str, Any]:
    """What the cross-validation promises against what new patients get from the shipped
    procedure. For each outer fold of patients: on the rest, the nested k-fold referral (the
    promise) and the shipped procedure (heads on all of the rest, temperatures and thresholds
    from its out-of-fold predictions), which then refers the outer fold's new patients."""
    y = targets(samples, taxonomy)
    labels = flat_levels(y)
    keys = groups or [s.patient_id for s in samples]
    outer = patient_folds(samples, taxonomy, k, recipe.config.seed + 7, keys)
    patients = [s.patient_id for s in samples]
    ref = _Referral(taxonomy, labels, not_assessed)
    delivered = np.zeros(len(samples), dtype=bool)
    promises = []
    for fold in np.unique(outer):
        log.info("procedure check: outer fold %d", fold)
        new, rest = outer == fold, outer != fold
        inner_samples = [s for s, r in zip(samples, rest, strict=True) if r]
        inner_keys = [key for key, r in zip(keys, rest, strict=True) if r]
        inner = np.zeros(len(samples), dtype=int)
        inner[rest] = patient_folds(inner_samples, taxonomy, k, recipe.config.seed, inner_keys)
        oof = flat_levels(out_of_fold(recipe, y, inner, rest))[rest]
        sub = _Referral(taxonomy, labels[rest], not_assessed)
        nested = nested_referral(partial(_fitted_problem, sub, oof), inner[rest], target)
        temps = sub.temperatures(oof, np.ones(len(oof), dtype=bool))
        chosen = sub.problem(oof, temps)
        promises.append(
            referral_figures(
                nested, chosen.diseased, [p for p, r in zip(patients, rest, strict=True) if r]
            )
        )
        cuts = search_cuts(chosen, target)
        raw = flat_levels(recipe.fit_predict(y, rest, new, recipe.config.seed + 50))
        fresh = _Referral(taxonomy, labels[new], not_assessed).problem(raw, temps)
        delivered[new] = refer(fresh.scores, cuts)
    diseased = ref.problem(np.full_like(labels, 0.5), [1.0] * labels.shape[1]).diseased

    def mean_of(unit: str, measure: str) -> float:
        return float(np.mean([p[unit][measure]["estimate"] for p in promises]))

    return {
        "promised_by_nested_cv": {
            unit: {m: mean_of(unit, m) for m in ("sensitivity", "specificity")}
            for unit in ("eye", "patient")
        },
        "delivered_to_new_patients": referral_figures(delivered, diseased, patients),
        "outer_folds": k,
    }


def comparison_markdown(reports: dict[str, dict[str, Any]]) -> str:
    """Recipes side by side on the same folds: pooled per eye and per patient, each source
    held out per eye (sensitivity / specificity at the operating point, referral AUC)."""

    def pair(block: dict[str, Any], unit: str = "eye") -> str:
        sens, spec = block[unit]["sensitivity"], block[unit]["specificity"]
        text = f"{sens['estimate']:.3f}" if sens["n"] else "–"
        text += " / " + (f"{spec['estimate']:.3f}" if spec["n"] else "–")
        auc = block.get("referral_auc")
        return text + ("" if auc is None or unit != "eye" else f" ({auc:.3f})")

    first = next(iter(reports.values()))
    sources = sorted(first["source_held_out"])
    header = ["recipe", "pooled eye", "pooled patient", "worst held out"]
    header += [f"{s} held out" for s in sources]
    recalibrated = sorted(first.get("site_recalibrated", {}))
    header += [f"{s} recalibrated" for s in recalibrated]
    lines = [
        "Referral sensitivity / specificity (referral AUC) at the operating point, per eye, "
        "same folds; *recalibrated*: the held-out model with temperatures and thresholds "
        "refitted on the site's own eyes (nested).",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    for name, report in reports.items():
        worst = report["worst_source"]
        cells = [
            name,
            pair(report["pooled"]),
            pair(report["pooled"], "patient"),
            f"{worst['source']}: {pair(report['source_held_out'][worst['source']])}",
        ]
        cells += [pair(report["source_held_out"][s]) for s in sources]
        cells += [pair(report["site_recalibrated"][s]) for s in recalibrated]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
