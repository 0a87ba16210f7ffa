"""The full fine-tuning recipe, for a GPU: the backbone's top groups unfrozen and trained with
the heads on the photographs themselves, each batch given new camera variations
(``ml.camera_augment.vary_batch``).

The same schedule as the CPU's bounded recipe (``ml.last_block``): heads first on frozen
features, then the unfrozen groups join at lower learning rates, the deeper the lower
(discriminative rates), decaying to zero; BatchNorm keeps its ImageNet statistics. Every
photograph sits on the device as 8-bit pixels, so an epoch reads no file.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ml.backbones import Backbone, build_backbone
from ml.camera_augment import vary_batch
from ml.generalisation import HeadsOnFeatures, read_views, train_heads_on
from ml.network import HierarchicalHeads
from ml.preprocess import Preprocessing
from ml.train import TrainConfig, autocast_for, hierarchical_loss
from services.taxonomy.tree import Taxonomy

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageTuning:
    epochs: int = 10
    groups: int = 2  # backbone groups unfrozen, last first (``Backbone.unfreeze_groups``)
    top_lr: float = 1e-4  # the last group; each deeper group a third of the one above
    group_decay: float = 1 / 3
    heads_lr: float = 3e-4
    batch_size: int = 32


def backbone_features(
    module: nn.Module, images: torch.Tensor, spec: Preprocessing, batch_size: int = 64
) -> np.ndarray:
    """(2, n, dim) pooled features of 8-bit (n, 3, S, S) images: as is and mirrored, in
    fp32 as the served model reads them."""
    module.eval()
    out: list[list[np.ndarray]] = [[], []]
    with torch.inference_mode():
        for start in range(0, len(images), batch_size):
            batch = normalised(images[start : start + batch_size], spec)
            out[0].append(module(batch).float().cpu().numpy())
            out[1].append(module(batch.flip(-1)).float().cpu().numpy())
    return np.stack([np.concatenate(view) for view in out])


def normalised(images: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """8-bit or [0, 1] float images -> the network's input (ImageNet normalisation)."""
    x = images.float() / 255.0 if images.dtype == torch.uint8 else images
    mean = torch.tensor(spec.mean, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(spec.std, device=x.device).view(1, 3, 1, 1)
    return ((x - mean) / std).contiguous(memory_format=torch.channels_last)


def _keep_statistics(module: nn.Module) -> None:
    for layer in module.modules():
        if isinstance(layer, nn.BatchNorm2d):
            layer.eval()


def fine_tune_images(
    backbone: Backbone,
    heads: HierarchicalHeads,
    images: torch.Tensor,
    level_targets: list[np.ndarray],
    spec: Preprocessing,
    config: TrainConfig,
    tuning: ImageTuning,
    seed: int,
) -> list[float]:
    """Train the top ``tuning.groups`` of ``backbone`` and ``heads`` on 8-bit images already
    on their device; returns the mean loss of each epoch."""
    device = images.device
    module = backbone.module.to(device).to(memory_format=torch.channels_last)
    heads.to(device)
    for p in module.parameters():
        p.requires_grad = False
    groups = []
    for depth, group in enumerate(backbone.unfreeze_groups[: tuning.groups]):
        params = [p for layer in group for p in layer.parameters()]
        for p in params:
            p.requires_grad = True
        groups.append({"params": params, "lr": tuning.top_lr * tuning.group_decay**depth})
    groups.append({"params": list(heads.parameters()), "lr": tuning.heads_lr})
    optimiser = torch.optim.Adam(groups, eps=config.adam_eps)
    n = len(images)
    steps = tuning.epochs * math.ceil(n / tuning.batch_size)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda step: 0.5 * (1 + math.cos(math.pi * min(step, steps) / steps))
    )
    generator = torch.Generator().manual_seed(seed)
    weights = config.level_weights(len(level_targets))
    ys = [torch.from_numpy(t).to(device) for t in level_targets]
    history = []
    for epoch in range(tuning.epochs):
        module.train()
        _keep_statistics(module)
        heads.train()
        order = torch.randperm(n, generator=generator).to(device)
        total = 0.0
        for start in range(0, n, tuning.batch_size):
            idx = order[start : start + tuning.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm in the heads needs two samples
            batch = normalised(vary_batch(images[idx].float() / 255.0, generator), spec)
            with autocast_for(device):
                logits = heads(module(batch))
            loss = hierarchical_loss(logits, [y[idx] for y in ys], weights, config.gamma)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / n)
        log.info("image fine-tuning epoch %d/%d: loss %.4f", epoch + 1, tuning.epochs, history[-1])
    module.eval()
    return history


class ImageFineTuneRecipe:
    """A cross-validation recipe (``ml.generalisation.Recipe``) on 8-bit images held on the
    training device; ``weights`` initialises the backbone ("imagenet" or a state_dict file)."""

    def __init__(
        self,
        taxonomy: Taxonomy,
        config: TrainConfig,
        images: torch.Tensor,
        spec: Preprocessing,
        tuning: ImageTuning,
        weights: str | Path = "imagenet",
    ) -> None:
        self.taxonomy, self.config, self.images, self.spec = taxonomy, config, images, spec
        self.tuning, self.weights = tuning, weights
        start = build_backbone(config.backbone, weights).module.to(images.device)
        self.frozen = backbone_features(start, images, spec)

    def pooled_features(self) -> np.ndarray:
        return self.frozen[0]

    def frozen_recipe(self) -> HeadsOnFeatures:
        """The shipped recipe on the same photographs and device: heads on frozen features of
        each photograph and its mirror image, read in both."""
        return HeadsOnFeatures(self.taxonomy, self.config, self.frozen)

    def fit_predict(
        self, y: list[np.ndarray], train: np.ndarray, test: np.ndarray, seed: int
    ) -> list[np.ndarray]:
        targets = [t[train] for t in y]
        heads = train_heads_on(self.taxonomy, self.config, self.frozen[:, train], targets, seed)
        torch.manual_seed(seed)
        backbone = build_backbone(self.config.backbone, self.weights)
        rows = torch.from_numpy(np.flatnonzero(train)).to(self.images.device)
        fine_tune_images(
            backbone,
            heads,
            self.images[rows],
            targets,
            self.spec,
            self.config,
            self.tuning,
            seed,
        )
        test_rows = torch.from_numpy(np.flatnonzero(test)).to(self.images.device)
        read = backbone_features(backbone.module, self.images[test_rows], self.spec)
        return read_views(heads, read, self.taxonomy, self.config)
