"""Pictures of what a model learned: Grad-CAM heatmaps on example photographs, and a t-SNE map
(openTSNE) of the heads' last hidden layer coloured by top-level diagnosis."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch

from ml.data import Sample
from ml.heatmaps import heatmap_overlay, model_view
from ml.predictor import Predictor
from ml.preprocess import load_rgb
from services.screening.decision import decide, heatmap_targets


def gradcam_grid(predictor: Predictor, samples: list[Sample], out: Path, count: int = 8) -> None:
    """Photo and Grad-CAM overlay of its most specific positive finding, for ``count`` photos
    with an abnormal label (one per label where possible)."""
    taxonomy = predictor.taxonomy
    chosen: list[Sample] = []
    seen: set[frozenset[str]] = set()
    for sample in samples:
        abnormal = frozenset(c for c in sample.codes if not taxonomy.node(c).normal)
        if abnormal and abnormal not in seen:
            chosen.append(sample)
            seen.add(abnormal)
        if len(chosen) == count:
            break
    fig, axes = plt.subplots(len(chosen), 2, figsize=(6, 3 * len(chosen)), squeeze=False)
    for row, sample in zip(axes, chosen, strict=True):
        rgb = load_rgb(str(sample.path))
        [probabilities] = predictor.predict([rgb])
        decision = decide(taxonomy, probabilities, predictor.operating_point)
        targets = heatmap_targets(taxonomy, decision.findings) or [
            max(taxonomy.level_codes(taxonomy.depth), key=lambda c: probabilities[c])
        ]
        code = targets[0]
        row[0].imshow(model_view(predictor, rgb))
        deepest = [c for c in sorted(sample.codes) if taxonomy.node(c).level == taxonomy.depth]
        names = ", ".join(taxonomy.node(c).name for c in deepest)
        row[0].set_title(f"label: {names}"[:52], fontsize=8)
        row[1].imshow(heatmap_overlay(predictor, rgb, code))
        row[1].set_title(f"{taxonomy.node(code).name} p={probabilities[code]:.2f}", fontsize=8)
        for axis in row:
            axis.axis("off")
    fig.suptitle("Grad-CAM: where the model looked for its most specific finding", fontsize=10)
    fig.tight_layout(rect=(0, 0, 1, 0.985))
    fig.savefig(out, dpi=72)
    plt.close(fig)


def hidden_features(predictor: Predictor, samples: list[Sample], batch: int = 32) -> np.ndarray:
    """The heads' last hidden layer (the input of the deepest classifier) per photograph."""
    network = getattr(predictor.model, "_orig_mod", predictor.model)
    rows = []
    with torch.inference_mode():
        for start in range(0, len(samples), batch):
            images = predictor.preprocess(
                [load_rgb(str(s.path)) for s in samples[start : start + batch]]
            ).to(predictor.device)
            rows.append(network.heads.last_hidden(network.backbone(images)).float().cpu().numpy())
    return np.concatenate(rows)


def tsne_map(predictor: Predictor, samples: list[Sample], out: Path, seed: int = 0) -> None:
    from openTSNE import TSNE

    taxonomy = predictor.taxonomy
    perplexity = min(30.0, (len(samples) - 1) / 3.0)  # openTSNE needs n > 3 * perplexity
    embedding = np.asarray(
        TSNE(perplexity=perplexity, random_state=seed, n_jobs=2).fit(
            hidden_features(predictor, samples)
        )
    )
    top = taxonomy.level_codes(1)

    def label(sample: Sample) -> str:
        present = [c for c in top if c in sample.codes]
        return taxonomy.node(present[0]).name if len(present) == 1 else "several"

    labels = [label(s) for s in samples]
    fig, axis = plt.subplots(figsize=(7, 6))
    for name in sorted(set(labels)):
        mask = np.array([value == name for value in labels])
        axis.scatter(embedding[mask, 0], embedding[mask, 1], s=6, label=f"{name} ({mask.sum()})")
    axis.legend(fontsize=7, markerscale=2)
    axis.set_title("t-SNE of the last hidden layer, coloured by top-level label", fontsize=10)
    axis.set_xticks([])
    axis.set_yticks([])
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)
