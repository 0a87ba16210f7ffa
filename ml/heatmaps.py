"""Grad-CAM heatmaps (the ``grad-cam`` library) of where the network looked for a finding,
overlaid on the photograph and saved as PNG for the report and the graders. The PNG is the
network's square view; its text chunk ``BOX_KEY`` says where that square lies on the
photograph, so a viewer can lay the heatmap over the photo it explains."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from pytorch_grad_cam import GradCAM
from pytorch_grad_cam.utils.image import show_cam_on_image
from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
from torch import nn

from ml.geometry import BOX_KEY, square_box
from ml.predictor import Predictor
from ml.preprocess import to_square_image


class _OneLevel(nn.Module):
    """The network as Grad-CAM wants it: one tensor of logits (those of one taxonomy level)."""

    def __init__(self, model: nn.Module, level: int) -> None:
        super().__init__()
        self.model, self.level = model, level

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)[self.level - 1]  # type: ignore[no-any-return]


def last_conv(module: nn.Module) -> nn.Module:
    convs = [m for m in module.modules() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ValueError("no convolution to explain")
    return convs[-1]


def model_view(predictor: Predictor, rgb: np.ndarray) -> np.ndarray:
    """The photograph as the network saw it: frame cropped, padded square, input size."""
    return np.asarray(to_square_image(rgb, predictor.preprocessing))


def heatmap_overlay(predictor: Predictor, rgb: np.ndarray, code: str) -> np.ndarray:
    """RGB uint8 overlay of Grad-CAM for ``code`` on the image the network saw (same crop and
    padding), so each hot spot lies on the part of the photograph it explains."""
    node = predictor.taxonomy.node(code)
    index = predictor.taxonomy.level_codes(node.level).index(code)
    network = getattr(predictor.model, "_orig_mod", predictor.model)  # unwrap torch.compile
    tensor = predictor.preprocess([rgb]).to(predictor.device)
    with (
        torch.enable_grad(),
        GradCAM(
            model=_OneLevel(network, node.level), target_layers=[last_conv(network.backbone)]
        ) as cam,
    ):
        grayscale = cam(input_tensor=tensor, targets=[ClassifierOutputTarget(index)])[0]
    base = model_view(predictor, rgb)
    return show_cam_on_image(base.astype(np.float32) / 255.0, grayscale, use_rgb=True)


class HeatmapMaker:
    """Saves one heatmap per image: for its most probable positive finding at the deepest level
    (the most specific diagnosis), or none when nothing is positive."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)

    def __call__(self, predictor: Predictor, rgb: np.ndarray, positives: list[str]) -> str | None:
        if not positives:
            return None
        overlay = heatmap_overlay(predictor, rgb, positives[0])
        digest = hashlib.sha256(rgb.tobytes() + positives[0].encode()).hexdigest()[:24]
        path = self.folder / f"{digest}-{positives[0]}.png"
        info = PngInfo()
        crop = predictor.preprocessing.crop_dark_border
        info.add_text(BOX_KEY, square_box(rgb, crop).to_text())
        Image.fromarray(overlay).save(path, pnginfo=info)
        return str(path)
