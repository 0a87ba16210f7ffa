"""Pre-processing shared by training and inference: crop to the eye, square, resize, normalise."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image

from ml.geometry import DARK, content_bounds

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    size: int = 224
    crop_dark_border: bool = True
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocessing:
        return cls(
            size=int(data["size"]),
            crop_dark_border=bool(data.get("crop_dark_border", True)),
            mean=tuple(data.get("mean", IMAGENET_MEAN)),  # type: ignore[arg-type]
            std=tuple(data.get("std", IMAGENET_STD)),  # type: ignore[arg-type]
        )


def crop_to_content(rgb: np.ndarray, threshold: int = DARK) -> np.ndarray:
    """Cut the black frame around a fundus disc (a no-op for photos without one)."""
    top, bottom, left, right = content_bounds(rgb, threshold)
    return rgb[top:bottom, left:right]


def to_square_image(rgb: np.ndarray, spec: Preprocessing) -> Image.Image:
    """uint8 HxWx3 -> PIL square of ``spec.size``, aspect kept by padding with black."""
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"expected an RGB uint8 image, got shape {rgb.shape} {rgb.dtype}")
    if spec.crop_dark_border:
        rgb = crop_to_content(rgb)
    h, w = rgb.shape[:2]
    side = max(h, w)
    canvas = np.zeros((side, side, 3), dtype=np.uint8)
    top, left = (side - h) // 2, (side - w) // 2
    canvas[top : top + h, left : left + w] = rgb
    return Image.fromarray(canvas).resize((spec.size, spec.size), Image.Resampling.BILINEAR)


def normalise(image: Image.Image, spec: Preprocessing) -> torch.Tensor:
    array = np.asarray(image, dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1)
    mean = torch.tensor(spec.mean).view(3, 1, 1)
    std = torch.tensor(spec.std).view(3, 1, 1)
    return (tensor - mean) / std


def prepare(rgb: np.ndarray, spec: Preprocessing) -> torch.Tensor:
    return normalise(to_square_image(rgb, spec), spec)


def load_rgb(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
