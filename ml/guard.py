"""A guard against the unfamiliar: how far a photograph's backbone features lie from the
photographs the model was trained on.

Distance: one minus the mean cosine similarity of the photograph's backbone features to its
``k`` nearest training photographs (a reference sample of them kept in the checkpoint). On
the shared data this separated anterior photos sent as fundus far better than a Mahalanobis
distance in the top principal components (all of them beyond the threshold against about
three quarters, at the same firing rate on fundus cameras never seen). The threshold is
chosen on *held-out sources*: each source's photographs are scored against a reference drawn
from the other sources only (of the size kept in the checkpoint: a k-NN distance depends on
how dense the reference is), and the threshold is a high quantile of those scores, so that a
fundus camera the model never saw mostly passes and only the truly unlike is stopped. A
photograph beyond it is "not assessable by this model" (ungradable, referred).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_NEIGHBOURS = 5
DEFAULT_QUANTILE = 0.99
DEFAULT_REFERENCE = 1024  # photographs kept in the checkpoint (fp16: 2.6 MB at 1,280 dims)


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float32)
    return np.asarray(x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12))


@dataclass(frozen=True)
class Guard:
    reference: np.ndarray  # (m, d) unit-length features of training photographs
    neighbours: int = DEFAULT_NEIGHBOURS
    threshold: float = np.inf

    def distance(self, features: np.ndarray) -> np.ndarray:
        """Per row of (n, d) features: 1 - mean cosine similarity to the k nearest."""
        sims = _unit(features) @ self.reference.T
        k = min(self.neighbours, sims.shape[1])
        nearest = np.partition(sims, sims.shape[1] - k, axis=1)[:, -k:]
        return np.asarray(1.0 - nearest.mean(axis=1), np.float64)

    def unfamiliar(self, features: np.ndarray) -> np.ndarray:
        return np.asarray(self.distance(features) > self.threshold)

    def with_threshold(self, threshold: float) -> Guard:
        return Guard(self.reference, self.neighbours, threshold)

    def to_meta(self, **facts: Any) -> dict[str, Any]:
        import torch

        return {
            "kind": "knn-cosine",
            "reference": torch.from_numpy(self.reference.astype(np.float16)),
            "neighbours": self.neighbours,
            "threshold": float(self.threshold),
            **facts,
        }

    @classmethod
    def from_meta(cls, meta: dict[str, Any]) -> Guard:
        reference = meta["reference"]
        array = reference.float().numpy() if hasattr(reference, "numpy") else reference
        return cls(_unit(np.asarray(array)), int(meta["neighbours"]), float(meta["threshold"]))


def _sample(n: int, size: int, seed: int) -> np.ndarray:
    rows = np.arange(n)
    if n <= size:
        return rows
    return np.sort(np.random.default_rng(seed).choice(rows, size, replace=False))


def fit_guard(
    features: np.ndarray,
    neighbours: int = DEFAULT_NEIGHBOURS,
    reference: int = DEFAULT_REFERENCE,
    seed: int = 0,
) -> Guard:
    """A reference sample of (n, d) training features; the threshold is left open (``inf``)."""
    return Guard(_unit(features[_sample(len(features), reference, seed)]), neighbours)


def held_out_source_scores(
    features: np.ndarray,
    sources: np.ndarray,
    neighbours: int = DEFAULT_NEIGHBOURS,
    reference: int = DEFAULT_REFERENCE,
) -> np.ndarray:
    """Each photograph's distance under a guard fitted without its source."""
    scores = np.zeros(len(features))
    for source in np.unique(sources):
        held = sources == source
        guard = fit_guard(features[~held], neighbours, reference)
        scores[held] = guard.distance(features[held])
    return scores


def fit_with_held_out_threshold(
    features: np.ndarray,
    sources: np.ndarray,
    quantile: float = DEFAULT_QUANTILE,
    neighbours: int = DEFAULT_NEIGHBOURS,
    reference: int = DEFAULT_REFERENCE,
) -> tuple[Guard, dict[str, Any]]:
    """The guard on every photograph, its threshold the ``quantile`` of the held-out-source
    scores; with the firing rate on each held-out source (photographs of a camera it never
    saw)."""
    scores = held_out_source_scores(features, sources, neighbours, reference)
    threshold = float(np.quantile(scores, quantile))
    guard = fit_guard(features, neighbours, reference).with_threshold(threshold)
    firing = {str(s): float((scores[sources == s] > threshold).mean()) for s in np.unique(sources)}
    facts = {"quantile": quantile, "fired_on_held_out_sources": firing}
    return guard, facts


def fit_for_checkpoint(
    checkpoint: Any,
    samples: list[Any],
    store_root: Any,
    quantile: float = DEFAULT_QUANTILE,
    neighbours: int = DEFAULT_NEIGHBOURS,
) -> dict[str, Any]:
    """``meta["guard"]`` for a checkpoint, fitted on its training photographs (``samples``,
    each with a ``source``), features by the checkpoint's own backbone and pre-processing.

    A checkpoint whose backbone was never unfrozen or fine-tuned has the ImageNet backbone
    (stored in fp16), so the ImageNet features of the per-photograph store serve, computed
    once for every run; any other gets a store of its own, keyed by its weights."""
    from pathlib import Path

    import torch

    from ml.backbones import Backbone, build_backbone
    from ml.checkpoint import backbone_tuned, load_checkpoint
    from ml.feature_store import FeatureStore
    from ml.preprocess import Preprocessing
    from services.kernel.storage import file_sha256

    meta, model = load_checkpoint(Path(checkpoint))
    spec = Preprocessing.from_dict(meta["preprocessing"])
    if backbone_tuned(meta):
        own = Backbone(
            f"{meta['backbone']}-{file_sha256(Path(checkpoint))[:12]}",
            model.backbone,
            int(model.heads.branches[0][1].in_features),  # type: ignore[index]
            spec.size,
            [],
        )
        backbone = own
    else:
        backbone = build_backbone(str(meta["backbone"]), "imagenet")
    store = FeatureStore(Path(store_root), backbone, spec, flips=False)
    features = store.features([s.path for s in samples], torch.device("cpu"))[0]
    sources = np.array([s.source or "unknown" for s in samples])
    guard, facts = fit_with_held_out_threshold(features, sources, quantile, neighbours)
    names = sorted({str(s) for s in sources})
    return guard.to_meta(**facts, photographs=len(samples), sources=names)
