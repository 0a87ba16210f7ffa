"""Training: heads on cached backbone features (the frozen phase), then gradual unfreezing.

The frozen phase of the paper trains only the heads, so the backbone's features are computed
once per image (and once for its horizontal flip) and cached: on a 2-core CPU this turns hours
into minutes. Unfreezing then trains backbone groups, last layers first, on augmented images
with a decaying learning rate. ``TrainConfig.paper()`` is the paper's full schedule (GPU).
"""

from __future__ import annotations

import hashlib
import logging
import math
import random
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.ops import sigmoid_focal_loss
from torchvision.transforms import v2
from tqdm import tqdm

from ml.backbones import Backbone, build_backbone
from ml.data import Sample, targets
from ml.network import HierarchicalHeads, ScreeningNet
from ml.preprocess import Preprocessing, load_rgb, normalise, to_square_image
from services.taxonomy.tree import Taxonomy

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = "imagenet"
    hidden: int = 256
    dropout: float = 0.3
    flat: bool = False
    alpha: float = 0.3
    gamma: float = 2.0
    batch_size: int = 32
    head_epochs: int = 60
    head_lr: float = 1e-3
    adam_eps: float = 1e-3
    unfreeze_steps: int = 0
    step_epochs: int = 1
    unfreeze_lr: float = 1e-4
    min_lr: float = 1e-6
    seed: int = 0
    device: str = "auto"
    image_size: int = 0  # 0: the backbone's own input size
    extra: dict[str, Any] = field(default_factory=dict)

    def preprocessing(self, backbone: Backbone, route: str) -> Preprocessing:
        """Fundus photographs lose their black frame; the same in CV and final training."""
        return Preprocessing(
            size=self.image_size or backbone.input_size, crop_dark_border=route == "fundus"
        )

    @classmethod
    def paper(cls, **overrides: Any) -> TrainConfig:
        """The paper's schedule: Adam lr 1e-4 eps 0.1, 5 frozen epochs, 20 epochs a step."""
        base = dict(head_epochs=5, head_lr=1e-4, adam_eps=0.1, unfreeze_steps=4, step_epochs=20)
        return cls(**(base | overrides))

    def level_weights(self, depth: int) -> list[float]:
        if self.flat:
            return [0.0] * (depth - 1) + [1.0]
        if depth == 1:
            return [1.0]
        return [self.alpha] + [(1 - self.alpha) / (depth - 1)] * (depth - 1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def hierarchical_loss(
    logits: list[torch.Tensor],
    level_targets: list[torch.Tensor],
    weights: list[float],
    gamma: float,
) -> torch.Tensor:
    """Focal loss per level, weighted (alpha * l1 + (1 - alpha) * l2 for two levels).

    A flat head yields only the deepest level's logits; they pair with the last target.
    """
    pairs = list(zip(logits, level_targets[-len(logits) :], weights[-len(logits) :], strict=True))
    total = logits[0].new_zeros(())
    for out, target, weight in pairs:
        if weight:
            loss = sigmoid_focal_loss(out.float(), target, alpha=-1, gamma=gamma, reduction="mean")
            total = total + weight * loss
    return total


def autocast_for(device: torch.device) -> Any:
    """bf16 on a GPU and on a CPU with native bf16; fp32 master weights either way. A CPU
    without it would emulate bf16 about ten times slower than fp32 (seen on AMD EPYC)."""
    from ml.predictor import cpu_has_bf16

    fast = device.type == "cuda" or cpu_has_bf16()
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast)


def extract_features(
    backbone: Backbone,
    samples: list[Sample],
    spec: Preprocessing,
    device: torch.device,
    batch_size: int = 32,
    flips: bool = True,
    cache_dir: Path | None = None,
) -> np.ndarray:
    """(views, n, dim) pooled features; view 0 as is, view 1 flipped left-right. In fp32: the
    heads, their calibration and the operating point are fitted on these, and the deployed
    model computes fp32 (bf16 moved a probability across a threshold; see ml/predictor.py)."""
    key = hashlib.sha256(
        f"{backbone.name}|{spec}|{flips}|fp32|".encode()
        + "\n".join(str(s.path) for s in samples).encode()
    ).hexdigest()[:20]
    cached = cache_dir / f"features-{key}.npy" if cache_dir else None
    if cached is not None and cached.exists():
        return np.load(cached)
    module = backbone.module.to(device).eval().to(memory_format=torch.channels_last)
    views = 2 if flips else 1
    out = np.zeros((views, len(samples), backbone.feature_dim), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(samples), batch_size), desc="features", unit="batch"):
            chunk = samples[start : start + batch_size]
            batch = (
                torch.stack(
                    [normalise(to_square_image(load_rgb(str(s.path)), spec), spec) for s in chunk]
                )
                .to(device)
                .to(memory_format=torch.channels_last)
            )
            out[0, start : start + len(chunk)] = module(batch).float().cpu().numpy()
            if flips:
                out[1, start : start + len(chunk)] = module(batch.flip(-1)).float().cpu().numpy()
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        np.save(cached, out)
    return out


def train_heads(
    heads: HierarchicalHeads,
    features: np.ndarray,
    level_targets: list[np.ndarray],
    config: TrainConfig,
    device: torch.device,
    progress: bool = True,
) -> list[float]:
    """The frozen phase on cached features; returns the mean loss of each epoch."""
    heads.to(device).train()
    optimiser = torch.optim.Adam(heads.parameters(), lr=config.head_lr, eps=config.adam_eps)
    weights = config.level_weights(len(level_targets))
    views, n, _ = features.shape
    feats = torch.from_numpy(features).to(device)
    ys = [torch.from_numpy(t).to(device) for t in level_targets]
    generator = torch.Generator().manual_seed(config.seed)
    history = []
    epochs = tqdm(range(config.head_epochs), desc="heads", disable=not progress)
    for _ in epochs:
        order = torch.randperm(n, generator=generator)
        view = torch.randint(views, (n,), generator=generator)
        total = 0.0
        for start in range(0, n, config.batch_size):
            idx = order[start : start + config.batch_size]
            if len(idx) < 2:
                continue  # BatchNorm needs two samples
            batch = feats[view[idx], idx]
            loss = hierarchical_loss(heads(batch), [y[idx] for y in ys], weights, config.gamma)
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += float(loss.detach()) * len(idx)
        history.append(total / n)
        epochs.set_postfix(loss=f"{history[-1]:.4f}")
    return history


def train_augmentation() -> v2.Compose:
    return v2.Compose(
        [
            v2.RandomHorizontalFlip(),
            v2.RandomRotation(15),
            v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.1, hue=0.02),
        ]
    )


def save_resume(path: Path, model: torch.nn.Module, history: list[float], **extra: Any) -> None:
    """Where training stands, written atomically: a killed run continues from here."""
    state = {
        "model": model.state_dict(),
        "history": history,
        "torch_rng": torch.get_rng_state(),
        "numpy_rng": np.random.get_state(),
        **extra,
    }
    partial = path.with_suffix(".partial")
    torch.save(state, partial)
    partial.replace(path)


def load_resume(path: Path | None) -> dict[str, Any] | None:
    if path is None or not path.exists():
        return None
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=False)
    torch.set_rng_state(state["torch_rng"])
    np.random.set_state(state["numpy_rng"])
    return state


def train_unfreezing(
    model: ScreeningNet,
    backbone: Backbone,
    samples: list[Sample],
    level_targets: list[np.ndarray],
    spec: Preprocessing,
    config: TrainConfig,
    device: torch.device,
    history: list[float] | None = None,
    resume_path: Path | None = None,
    resume: dict[str, Any] | None = None,
) -> list[float]:
    """Gradual unfreezing: step s trains the last s+1 backbone groups, lr decaying per step.
    With ``resume_path`` the state is saved after every epoch; ``resume`` (a saved state)
    skips the epochs already done."""
    history = list(history or [])
    done = tuple((resume or {}).get("done", (-1, -1)))
    augment = train_augmentation()
    weights = config.level_weights(len(level_targets))
    model.to(device).to(memory_format=torch.channels_last)
    for step in range(config.unfreeze_steps):
        for p in model.backbone.parameters():
            p.requires_grad = False
        for group in backbone.unfreeze_groups[: step + 1]:
            for module in group:
                for p in module.parameters():
                    p.requires_grad = True
        lr = max(
            config.min_lr,
            config.unfreeze_lr * 10 ** (-step * 2 / max(1, config.unfreeze_steps - 1)),
        )
        trainable = [p for p in model.parameters() if p.requires_grad]
        optimiser = torch.optim.Adam(trainable, lr=lr, eps=config.adam_eps)
        if resume is not None and done[0] == step:
            optimiser.load_state_dict(resume["optimiser"])
        for epoch in range(config.step_epochs):
            if (step, epoch) <= done:
                continue
            history.append(
                _image_epoch(
                    model,
                    samples,
                    level_targets,
                    spec,
                    augment,
                    optimiser,
                    weights,
                    config,
                    device,
                    f"unfreeze {step + 1}.{epoch + 1}",
                )
            )
            if resume_path is not None:
                save_resume(
                    resume_path,
                    model,
                    history,
                    done=(step, epoch),
                    optimiser=optimiser.state_dict(),
                )
    return history


def _image_epoch(
    model: ScreeningNet,
    samples: list[Sample],
    level_targets: list[np.ndarray],
    spec: Preprocessing,
    augment: v2.Compose,
    optimiser: torch.optim.Optimizer,
    weights: list[float],
    config: TrainConfig,
    device: torch.device,
    label: str,
) -> float:
    model.train()
    for module in model.backbone.modules():
        # Frozen layers keep their statistics: BatchNorm in train mode would drift them.
        if isinstance(module, torch.nn.BatchNorm2d) and not any(
            p.requires_grad for p in module.parameters()
        ):
            module.eval()
    order = np.random.permutation(len(samples))
    total = 0.0
    batches = range(0, len(order), config.batch_size)
    for start in tqdm(batches, desc=label, unit="batch"):
        idx = order[start : start + config.batch_size]
        if len(idx) < 2:
            continue
        images = (
            torch.stack(
                [
                    normalise(augment(to_square_image(load_rgb(str(samples[i].path)), spec)), spec)
                    for i in idx
                ]
            )
            .to(device)
            .to(memory_format=torch.channels_last)
        )
        ys = [torch.from_numpy(t[idx]).to(device) for t in level_targets]
        with autocast_for(device):
            logits = model(images)
        loss = hierarchical_loss(logits, ys, weights, config.gamma)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        total += float(loss.detach()) * len(idx)
    return total / len(order)


def build_heads(backbone: Backbone, taxonomy: Taxonomy, config: TrainConfig) -> HierarchicalHeads:
    sizes = taxonomy.level_sizes()
    return HierarchicalHeads(
        backbone.feature_dim, sizes, config.hidden, config.dropout, config.flat
    )


def predict_heads(
    heads: HierarchicalHeads, features: np.ndarray, taxonomy: Taxonomy, device: torch.device
) -> list[np.ndarray]:
    """Per-level probabilities (raw, before the hierarchy constraint) for (n, dim) features."""
    from ml.network import level_probabilities

    heads.to(device).eval()
    sizes = taxonomy.level_sizes()
    parents: list[list[int]] = [[]] + [
        taxonomy.parent_index(i) for i in range(2, taxonomy.depth + 1)
    ]
    with torch.inference_mode():
        logits = heads(torch.from_numpy(features).to(device))
        probs = level_probabilities(logits, sizes, parents)
    return [p.cpu().numpy() for p in probs]


def summarise_training(samples: list[Sample], taxonomy: Taxonomy) -> dict[str, Any]:
    ys = targets(samples, taxonomy)
    counts = {
        code: int(ys[lvl - 1][:, i].sum())
        for lvl in range(1, taxonomy.depth + 1)
        for i, code in enumerate(taxonomy.level_codes(lvl))
    }
    return {
        "images": len(samples),
        "patients": len({s.patient_id for s in samples}),
        "positives_per_class": counts,
    }


def config_dict(config: TrainConfig) -> dict[str, Any]:
    return {k: v for k, v in asdict(config).items() if not (isinstance(v, float) and math.isnan(v))}


def make_model(taxonomy: Taxonomy, config: TrainConfig) -> tuple[Backbone, HierarchicalHeads]:
    seed_everything(config.seed)
    backbone = build_backbone(config.backbone, config.backbone_weights)
    return backbone, build_heads(backbone, taxonomy, config)
