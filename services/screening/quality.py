"""Image-quality gate: photographs too dark, overexposed, blurred or empty are "ungradable".

Cheap statistics on a downscaled grey image; an ungradable image is referred, never passed.
The same statistics feed the drift watch (``services.screening.drift``).
"""

from __future__ import annotations

from enum import StrEnum

import numpy as np


class Quality(StrEnum):
    """Image-quality verdicts: the stored value, and the SR code each has (``reports/sr.py``)."""

    GRADABLE = "gradable"
    EMPTY = "ungradable:empty"
    DARK = "ungradable:dark"
    OVEREXPOSED = "ungradable:overexposed"
    BLURRED = "ungradable:blurred"
    NOT_FUNDUS = "ungradable:not_fundus"
    NO_TRAINED_MODEL = "ungradable:no_trained_model"  # an untrained stand-in read it
    # beyond the model's guard: unlike every photograph it was trained on (ml/guard.py)
    UNFAMILIAR = "ungradable:unfamiliar"


GRADABLE = Quality.GRADABLE


def _grey(rgb: np.ndarray) -> np.ndarray:
    grey: np.ndarray = rgb.astype(np.float32).mean(axis=2)
    step = max(1, min(grey.shape) // 256)
    return grey[::step, ::step]


def _laplacian(grey: np.ndarray) -> np.ndarray:
    result: np.ndarray = (
        -4 * grey[1:-1, 1:-1] + grey[:-2, 1:-1] + grey[2:, 1:-1] + grey[1:-1, :-2] + grey[1:-1, 2:]
    )
    return result


def image_statistics(rgb: np.ndarray) -> dict[str, float]:
    """Brightness, contrast, sharpness and colour balance of the lit part of the photograph."""
    grey = _grey(rgb)
    content = grey > 12
    if content.mean() < 0.05:
        return {"brightness": 0.0, "contrast": 0.0, "sharpness": 0.0, "red_green": 0.0}
    step = max(1, min(rgb.shape[:2]) // 256)
    small = rgb[::step, ::step].astype(np.float32)[: content.shape[0], : content.shape[1]]
    red, green = small[..., 0][content].mean(), small[..., 1][content].mean()
    return {
        "brightness": float(grey[content].mean()),
        "contrast": float(grey[content].std()),
        "sharpness": float(_laplacian(grey)[content[1:-1, 1:-1]].var()),
        "red_green": float(red / max(green, 1.0)),
    }


def _looks_like_fundus(rgb: np.ndarray) -> bool:
    """Fundus cameras image a lit disc on black: at least two dark corners. (Measured on the
    shared photographs: 0.4 % of fundus photos and 85 % of slit-lamp/cornea photos fail.)"""
    h, w = rgb.shape[:2]
    k = max(4, min(h, w) // 12)
    corners = sorted(
        float(patch.mean()) for patch in (rgb[:k, :k], rgb[:k, -k:], rgb[-k:, :k], rgb[-k:, -k:])
    )
    return corners[1] <= 40


def assess(rgb: np.ndarray, route: str | None = None) -> Quality:
    """ "gradable", or "ungradable:<why>" (empty, dark, overexposed, blurred, or not a photo of
    the routed kind)."""
    grey = _grey(rgb)
    content = grey > 12
    if content.mean() < 0.05:
        return Quality.EMPTY
    level = float(grey[content].mean())
    if level < 25:
        return Quality.DARK
    if level > 240:
        return Quality.OVEREXPOSED
    if float(_laplacian(grey)[content[1:-1, 1:-1]].var()) < 2.0:
        return Quality.BLURRED
    if route == "fundus" and not _looks_like_fundus(rgb):
        return Quality.NOT_FUNDUS
    return GRADABLE
