"""Fine-tuning bounded for a CPU: the backbone's last block, its head convolution and the
heads trained together on cached activations of the frozen layers below.

A frozen ImageNet backbone lets a camera move the features more than a disease does (the model
card's source-held-out figures). Unfreezing the whole network needs a GPU; the last block at
320 px costs about a tenth of a forward pass, and the layers below it run once per photograph
and view (``ml.feature_store.ActivationStore``), the views being the camera variations of
``ml.camera_augment``. The schedule is the paper's in small: the heads first on frozen
features, then the last block joins at a lower learning rate (discriminative rates), decaying
to zero. A test photograph is read as the served model reads it: as is and mirrored.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ml.backbones import Backbone
from ml.efficientnet_lite import EfficientNetLite
from ml.generalisation import HeadsOnFeatures, read_views, train_heads_on
from ml.network import HierarchicalHeads
from ml.train import TrainConfig, hierarchical_loss
from services.taxonomy.tree import Taxonomy

log = logging.getLogger(__name__)

READ_VIEWS = 2  # as is and mirrored: the served flip TTA


@dataclass(frozen=True)
class FineTuning:
    epochs: int = 6
    top_lr: float = 1e-4  # the backbone's last block and head convolution
    heads_lr: float = 3e-4  # heads already trained on frozen features
    batch_size: int = 32


def top_features(top: nn.Module, lower: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """(views, n, dim) pooled features of (views, n, C, H, W) activations through ``top``."""
    top.eval()
    views, n = lower.shape[:2]
    out: list[np.ndarray] = []
    with torch.inference_mode():
        for v in range(views):
            parts = [
                top(torch.from_numpy(lower[v, s : s + batch_size].astype(np.float32))).numpy()
                for s in range(0, n, batch_size)
            ]
            out.append(np.concatenate(parts))
    return np.stack(out)


def _train_mode(top: nn.Module, heads: HierarchicalHeads) -> None:
    """The heads train; the block's BatchNorm keeps its ImageNet statistics (batches of 32
    photographs of one fold would drift them), its scale and shift still learn."""
    heads.train()
    top.train()
    for module in top.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.eval()


def fine_tune(
    top: nn.Module,
    heads: HierarchicalHeads,
    lower: np.ndarray,
    level_targets: list[np.ndarray],
    config: TrainConfig,
    tuning: FineTuning,
    seed: int,
) -> list[float]:
    """Train ``top`` and ``heads`` on (views, n, C, H, W) activations, one random view per
    photograph per epoch; returns the mean loss of each epoch."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(
        [
            {"params": list(top.parameters()), "lr": tuning.top_lr},
            {"params": list(heads.parameters()), "lr": tuning.heads_lr},
        ],
        eps=config.adam_eps,
    )
    views, n = lower.shape[:2]
    steps = tuning.epochs * math.ceil(n / tuning.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
    weights = config.level_weights(len(level_targets))
    ys = [torch.from_numpy(t) for t in level_targets]
    history = []
    for epoch in range(tuning.epochs):
        _train_mode(top, heads)
        order = torch.randperm(n, generator=generator)
        view = torch.randint(views, (n,), generator=generator).numpy()
        total = 0.0
        for start in range(0, n, tuning.batch_size):
            idx = order[start : start + tuning.batch_size].numpy()
            if len(idx) < 2:
                continue  # BatchNorm in the heads needs two samples
            batch = torch.from_numpy(lower[view[idx], idx].astype(np.float32))
            loss = hierarchical_loss(heads(top(batch)), [y[idx] for y in ys], weights, config.gamma)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / n)
        log.info("last block epoch %d/%d: loss %.4f", epoch + 1, tuning.epochs, history[-1])
    return history


def imagenet_top(backbone: Backbone) -> nn.Module:
    """The last block and head convolution of an EfficientNet-Lite backbone."""
    if not isinstance(backbone.module, EfficientNetLite):
        raise ValueError(f"{backbone.name}: a last-block fine-tuning needs an EfficientNet-Lite")
    return backbone.module.top()


class LastBlockRecipe:
    """A cross-validation recipe (``ml.generalisation.Recipe``) on cached activations."""

    def __init__(
        self,
        taxonomy: Taxonomy,
        config: TrainConfig,
        lower: np.ndarray,
        top: nn.Module,
        tuning: FineTuning,
    ) -> None:
        self.taxonomy, self.config, self.lower, self.tuning = taxonomy, config, lower, tuning
        self.imagenet_top = top
        self.frozen = top_features(top, lower)  # every view through the ImageNet top

    def pooled_features(self) -> np.ndarray:
        return self.frozen[0]

    def frozen_recipe(self, train_views: int) -> HeadsOnFeatures:
        """The shipped recipe on the same photographs: heads on the ImageNet features of the
        first ``train_views`` views, read as served (as is and mirrored)."""
        return HeadsOnFeatures(
            self.taxonomy, self.config, self.frozen[:train_views], read=READ_VIEWS
        )

    def fit_predict(
        self, y: list[np.ndarray], train: np.ndarray, test: np.ndarray, seed: int
    ) -> list[np.ndarray]:
        targets = [t[train] for t in y]
        heads = train_heads_on(self.taxonomy, self.config, self.frozen[:, train], targets, seed)
        top = copy.deepcopy(self.imagenet_top)
        torch.manual_seed(seed)
        fine_tune(top, heads, self.lower[:, train], targets, self.config, self.tuning, seed)
        read = top_features(top, self.lower[:READ_VIEWS, test])
        return read_views(heads, read, self.taxonomy, self.config)
