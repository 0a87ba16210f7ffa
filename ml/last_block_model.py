"""A servable checkpoint of the last-block recipe (``ml.last_block``): the recipe the model
card's five-source comparison favoured, trained on every photograph given.

The steps are the shipped frozen recipe's, with the backbone's last block fine-tuned:

1. out-of-fold predictions of patient-grouped folds, each fold's model (heads, then the last
   block) trained on the other folds, read as served (as is and mirrored);
2. temperatures and the referral operating point chosen on those predictions
   (``ml.crossval.operating_point``; its nested figures are what new patients should get);
3. the final model trained the same way on every photograph;
4. the guard against the unfamiliar fitted on the final model's own features, its threshold
   on each source held out (``ml.guard``);
5. one checkpoint: the ImageNet backbone with the tuned last block and head convolution,
   the heads, the operating point and the guard; the service loads it like any other.
"""

from __future__ import annotations

import copy
import json
import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ml.backbones import Backbone
from ml.checkpoint import LAST_BLOCK_RECIPE as RECIPE
from ml.crossval import assessment, flat_levels, operating_point
from ml.data import Sample, near_duplicate_groups, patient_folds, targets
from ml.efficientnet_lite import EfficientNetLite
from ml.generalisation import out_of_fold, site_recalibrated, train_heads_on
from ml.guard import fit_with_held_out_threshold
from ml.last_block import (
    READ_VIEWS,
    FineTuning,
    LastBlockRecipe,
    fine_tune,
    imagenet_top,
    top_features,
)
from ml.network import HierarchicalHeads, ScreeningNet
from ml.oof_file import save_out_of_fold
from ml.operating_point import diseased_eyes
from ml.pipeline import evaluate_levels, model_meta, operating_meta
from ml.preprocess import Preprocessing
from ml.report import json_text
from ml.train import TrainConfig, config_dict, summarise_training
from services.taxonomy.tree import Taxonomy

log = logging.getLogger(__name__)


def cross_validated_meta(
    samples: list[Sample],
    taxonomy: Taxonomy,
    recipe: LastBlockRecipe,
    folds: int,
    target: float,
    min_positive: int,
    floor: float | None = None,
    oof_out: Path | None = None,
    group_near_duplicates: bool = True,
) -> dict[str, Any]:
    """A cross-validation summary of the recipe in the shape ``cross-validate`` writes, so
    that ``ml.pipeline.operating_meta`` reads its operating point. ``oof_out`` keeps the
    out-of-fold predictions (``ml.oof_file``), so that operating points can be compared
    again without training. With ``group_near_duplicates``, photographs that look like one
    eye keep to one fold whatever their patient ids (their thresholds would otherwise be
    chosen on an eye the fold's model remembers)."""
    y = targets(samples, taxonomy)
    patients = [s.patient_id for s in samples]
    groups = (
        near_duplicate_groups(recipe.pooled_features(), patients) if group_near_duplicates else None
    )
    fold_of = patient_folds(samples, taxonomy, folds, recipe.config.seed, groups)
    assessed = assessment(samples, taxonomy, min_positive)
    not_assessed = frozenset(assessed["not_assessed"])
    log.info("%d-fold out-of-fold predictions of the last-block recipe", folds)
    oof = out_of_fold(recipe, y, fold_of)
    if oof_out is not None:
        save_out_of_fold(oof_out, samples, taxonomy, oof, fold_of, not_assessed)
    point = operating_point(taxonomy, samples, oof, fold_of, not_assessed, target, floor)
    result = evaluate_levels(taxonomy, y, oof, not_assessed=not_assessed)
    result["referral"] = point["cross_validated"]
    site_points = own_operating_points(samples, taxonomy, oof, fold_of, not_assessed, target)
    summary = {
        "folds": folds,
        "split": "cross-validation by patient, multi-label stratified",
        "recipe": RECIPE,
        "samples": len(samples),
        "patients": len(set(patients)),
        "near_duplicates_grouped": group_near_duplicates,
        "fold_groups": len(set(groups or patients)),
        "assessment": assessed,
        # Read as served (as is and mirrored): the flip-TTA operating point.
        "operating_point": point,
        "operating_points": {"hierarchical_flip_tta": point},
        "results": {"hierarchical_flip_tta": result},
        "site_operating_points": site_points,
    }
    # As a cross-validation's metrics.json reads back: plain values a checkpoint may hold.
    return dict(json.loads(json_text(summary)))


def own_operating_points(
    samples: list[Sample],
    taxonomy: Taxonomy,
    oof: list[np.ndarray],
    folds: np.ndarray,
    not_assessed: frozenset[str],
    target: float,
) -> dict[str, Any]:
    """Per source with diseased and normal eyes: the nested referral with temperatures and
    thresholds of its own (each fold referred with them fitted on the source's other folds),
    what ``eyescreen model recalibrate`` gives a site whose verified reads look like these."""
    labels = flat_levels(targets(samples, taxonomy))
    raw = flat_levels(oof)
    sources = np.array([s.source for s in samples])
    points = {}
    for source in sorted(set(sources)):
        rows = sources == source
        diseased = diseased_eyes(taxonomy, labels[rows])
        if diseased.all() or not diseased.any():
            continue  # no operating point without both kinds of eye
        patients = [s.patient_id for s, r in zip(samples, rows, strict=True) if r]
        points[source] = site_recalibrated(
            taxonomy, labels[rows], raw[rows], folds[rows], not_assessed, target, patients
        ) | {"samples": int(rows.sum())}
    return points


def fit_final(
    taxonomy: Taxonomy, recipe: LastBlockRecipe, y: list[np.ndarray], seed: int
) -> tuple[nn.Module, HierarchicalHeads, list[float]]:
    """Heads on frozen features of every photograph, then the last block joins."""
    heads = train_heads_on(taxonomy, recipe.config, recipe.frozen, y, seed)
    top = copy.deepcopy(recipe.imagenet_top)
    torch.manual_seed(seed)
    history = fine_tune(top, heads, recipe.lower, y, recipe.config, recipe.tuning, seed)
    return top, heads.eval(), history


def with_tuned_top(backbone: Backbone, top: nn.Module) -> nn.Module:
    """The backbone with its last block, head convolution and its BatchNorm replaced by the
    tuned ones (``EfficientNetLite.top`` holds the same three modules)."""
    net = copy.deepcopy(backbone.module)
    if not isinstance(net, EfficientNetLite):
        raise ValueError(f"{backbone.name}: a last-block model needs an EfficientNet-Lite")
    net._blocks[-1] = top.block  # type: ignore[assignment]
    net._conv_head = top.conv_head  # type: ignore[assignment]
    net._bn1 = top.bn  # type: ignore[assignment]
    return net.eval()


def train_last_block_model(
    samples: list[Sample],
    taxonomy: Taxonomy,
    config: TrainConfig,
    tuning: FineTuning,
    backbone: Backbone,
    preprocessing: Preprocessing,
    lower: np.ndarray,
    *,
    version: str,
    folds: int = 5,
    target: float = 0.95,
    min_positive: int = 30,
    floor: float | None = None,
    oof_out: Path | None = None,
    group_near_duplicates: bool = True,
) -> tuple[dict[str, Any], ScreeningNet]:
    """Checkpoint metadata and model of the recipe trained on ``samples`` whose cached
    activations below the last block are ``lower`` (views, n, C, H, W); ``floor``: the
    referral sensitivity every source must reach at the operating point, beside the pooled
    ``target``."""
    recipe = LastBlockRecipe(taxonomy, config, lower, imagenet_top(backbone), tuning)
    cv = cross_validated_meta(
        samples,
        taxonomy,
        recipe,
        folds,
        target,
        min_positive,
        floor,
        oof_out,
        group_near_duplicates,
    )
    log.info("final last-block model on %d photographs", len(samples))
    y = targets(samples, taxonomy)
    top, heads, history = fit_final(taxonomy, recipe, y, config.seed)
    model = ScreeningNet(with_tuned_top(backbone, top), heads).eval()
    features = top_features(top, lower[:1])[0]  # as served: the photograph as it is
    sources = np.array([s.source or "unknown" for s in samples])
    guard, facts = fit_with_held_out_threshold(features, sources)
    names = sorted({str(s) for s in sources})
    meta = model_meta(taxonomy, config, preprocessing, version)
    meta |= operating_meta(cv, flip_tta=True)
    meta["inference"] = {"flip_tta": READ_VIEWS == 2}
    meta["training"] = summarise_training(samples, taxonomy) | {
        "recipe": RECIPE,
        "config": config_dict(config),
        "fine_tuning": asdict(tuning) | {"views": int(lower.shape[0])},
        "sources": names,
        "loss": history,
    }
    meta["guard"] = guard.to_meta(**facts, photographs=len(samples), sources=names)
    return meta, model
