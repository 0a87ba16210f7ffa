"""The optic disc on a fundus photograph, and a square crop around it at a higher resolution.

Glaucoma is read off the disc (the cup's size against the rim's), which covers about a tenth of
the fundus's width: at the network's 320-px view of the whole fundus it is some 30 px across.
A crop of the disc's neighbourhood gives the same network ten times the pixels there.

The disc is found the way a reader finds it first: the round patch brightest against its
surroundings inside the fundus. The image is shrunk; each pixel scores the mean luminance of a
disc-wide box around it less that of a box three times as wide (a bright vessel crossing or a
speck of dust is too small to win, a broad glow too even), both over lit pixels only; the
fundus's rim is left out (camera flare sits there) and the best score taken. No learning:
numpy, SciPy's filters and Pillow, wherever the model runs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image
from scipy.ndimage import distance_transform_edt, uniform_filter

from ml.geometry import DARK
from ml.preprocess import crop_to_content

WORK_WIDTH = 256  # the shrunk image the search runs on
DISC_FRACTION = 1 / 8  # the disc's diameter against the fundus's, roughly
RIM_FRACTION = 0.08  # the fundus's outer rim left out of the search (flare, vignetting)
CROP_FRACTION = 0.3  # the crop's side against the fundus's diameter: disc plus its margin


@dataclass(frozen=True)
class DiscCrop:
    """Where the disc was found (in the cropped-to-content photograph's pixels) and the crop."""

    centre_x: int
    centre_y: int
    side: int
    image: np.ndarray  # uint8 HxWx3, square, ``side`` pixels


def _lit_mean(values: np.ndarray, lit: np.ndarray, size: int) -> np.ndarray:
    """Mean of ``values`` over the lit pixels of a ``size``-square box around each pixel."""
    weight = uniform_filter(lit.astype(np.float32), size=size, mode="constant")
    total = uniform_filter(values * lit, size=size, mode="constant")
    return total / np.maximum(weight, 1e-6)


def locate_disc(rgb: np.ndarray) -> tuple[float, float]:
    """The disc's centre as fractions (x, y) of ``rgb``'s width and height."""
    h, w = rgb.shape[:2]
    scale = WORK_WIDTH / max(h, w)
    small_size = (max(1, round(w * scale)), max(1, round(h * scale)))
    small = np.asarray(
        Image.fromarray(rgb).resize(small_size, Image.Resampling.BILINEAR), dtype=np.float32
    )
    luminance = small @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    sh, sw = luminance.shape
    box = max(3, round(min(sh, sw) * DISC_FRACTION))
    # The fundus is the lit area; a rim as wide as half a disc is left out (flare sits there,
    # and the photograph's own edge where the camera cut the fundus).
    lit = small.max(axis=2) > DARK
    depth = distance_transform_edt(np.pad(lit, 1))[1:-1, 1:-1]
    usable = depth > max(2.0, RIM_FRACTION * min(sh, sw))
    if not usable.any():
        return 0.5, 0.5
    # A disc-sized patch brighter than its own surroundings: a broad glow or an evenly lit
    # side of the photograph does not stand out against its neighbourhood, the disc does.
    # Means are over lit pixels only, so the black frame does not make the fundus's edge shine.
    contrast = _lit_mean(luminance, lit, box) - _lit_mean(luminance, lit, 3 * box)
    scores = np.where(usable, contrast, -np.inf)
    y, x = np.unravel_index(int(np.argmax(scores)), scores.shape)
    return (x + 0.5) / sw, (y + 0.5) / sh


def disc_crop(rgb: np.ndarray, crop_fraction: float = CROP_FRACTION) -> DiscCrop:
    """A square around the disc, ``crop_fraction`` of the fundus's diameter wide, padded with
    black where it runs past the photograph."""
    fundus = crop_to_content(rgb)
    h, w = fundus.shape[:2]
    fx, fy = locate_disc(fundus)
    cx, cy = round(fx * w), round(fy * h)
    side = max(8, round(max(h, w) * crop_fraction))
    half = side // 2
    out = np.zeros((side, side, 3), dtype=np.uint8)
    top, left = cy - half, cx - half
    src_top, src_left = max(0, top), max(0, left)
    src_bottom, src_right = min(h, top + side), min(w, left + side)
    out[src_top - top : src_bottom - top, src_left - left : src_right - left] = fundus[
        src_top:src_bottom, src_left:src_right
    ]
    return DiscCrop(cx, cy, side, out)
