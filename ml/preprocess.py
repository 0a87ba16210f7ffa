"""Pre-processing shared by training and inference: crop to the eye, square, resize, normalise.

Two ways to the same input: ``prepare`` on an RGB array (PIL's resampling on the CPU) and
``prepare_tensor`` on a decoded image tensor on its own device (the GPU's JPEG path), with the
same crop, padding, antialiased bilinear resampling, 8-bit rounding and normalisation."""

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


def tensor_content_bounds(image: torch.Tensor, threshold: int = DARK) -> tuple[int, int, int, int]:
    """``content_bounds`` of a (3, H, W) uint8 tensor, worked out on its device: six numbers
    come back, not the image."""
    _, height, width = image.shape
    mask = image.amax(dim=0) > threshold
    ends = []
    for lit in (mask.any(dim=1), mask.any(dim=0)):  # rows, then columns, with any lit pixel
        as_int = lit.to(torch.int32)
        ends += [as_int.sum(), as_int.argmax(), lit.numel() - 1 - as_int.flip(0).argmax()]
    rows, top, last_row, cols, left, last_col = (int(n) for n in torch.stack(ends).tolist())
    if rows < height // 4 or cols < width // 4:
        return 0, height, 0, width
    return top, last_row + 1, left, last_col + 1


PIL_PRECISION_BITS = 22  # PIL's fixed point for 8-bit resampling (32 - 8 - 2)


def pil_bilinear_weights(in_size: int, out_size: int, device: torch.device) -> torch.Tensor:
    """PIL's bilinear resampling coefficients along one axis, (out_size, in_size), as the
    integers of its fixed point (float64 holds them, and every sum of them times 8-bit pixels,
    exactly). The same arithmetic as Pillow's ``precompute_coeffs`` and
    ``normalize_coeffs_8bpc``: a triangle filter widened by the scale when shrinking."""
    scale = in_size / out_size
    filterscale = max(scale, 1.0)
    support = 1.0 * filterscale  # the bilinear filter's support is 1
    f64 = torch.float64
    centers = ((torch.arange(out_size, dtype=f64, device=device) + 0.5) * scale)[:, None]
    first = torch.trunc(centers - support + 0.5).clamp(min=0)
    last = torch.trunc(centers + support + 0.5).clamp(max=in_size)
    taps = torch.arange(in_size, dtype=f64, device=device)[None, :]
    weights = (1.0 - ((taps - centers + 0.5) * (1.0 / filterscale)).abs()).clamp(min=0)
    weights = torch.where((taps >= first) & (taps < last), weights, 0.0)
    weights = weights / weights.sum(dim=1, keepdim=True)
    return torch.trunc(0.5 + weights * (1 << PIL_PRECISION_BITS))


def _to_8_bits(fixed: torch.Tensor) -> torch.Tensor:
    """PIL's rounding of a fixed-point sum back to an 8-bit level (halves up, then clipped)."""
    half = 1 << (PIL_PRECISION_BITS - 1)
    return torch.floor((fixed + half) / (1 << PIL_PRECISION_BITS)).clamp(0, 255)


def prepare_tensor(image: torch.Tensor, spec: Preprocessing) -> torch.Tensor:
    """``prepare`` for a decoded (3, H, W) uint8 RGB tensor, on the tensor's device, to the
    last bit: the same crop and black padding, then PIL's two resampling passes (width, then
    height, 8-bit levels after each) as matrix products with its fixed-point coefficients. The
    padding is black, so only the coefficients' columns that meet the photograph are used."""
    if image.ndim != 3 or image.shape[0] != 3 or image.dtype != torch.uint8:
        raise ValueError(
            f"expected a (3, H, W) uint8 image, got {tuple(image.shape)} {image.dtype}"
        )
    if spec.crop_dark_border:
        top, bottom, left, right = tensor_content_bounds(image)
        image = image[:, top:bottom, left:right]
    _, h, w = image.shape
    side = max(h, w)
    top, left = (side - h) // 2, (side - w) // 2
    across = pil_bilinear_weights(side, spec.size, image.device)
    down = across  # a square: the same coefficients for both axes
    wide = _to_8_bits(image.to(torch.float64) @ across[:, left : left + w].T)  # (3, h, size)
    square = _to_8_bits(down[:, top : top + h] @ wide)  # (3, size, size)
    pixels = square.float() / 255.0
    mean = torch.tensor(spec.mean, device=image.device).view(3, 1, 1)
    std = torch.tensor(spec.std, device=image.device).view(3, 1, 1)
    return (pixels - mean) / std


def load_rgb(path: str) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))
