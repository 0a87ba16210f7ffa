"""What another fundus camera changes in a photograph, as a seeded augmentation.

Cameras differ in exposure, colour balance, sharpness, how the disc is framed and how the eye
is turned; disease does not. Views drawn from these let a model learn that none of them is
the answer. Each view is fixed by its photograph and view number, so a cached view is the
same on every run and every machine.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter


@dataclass(frozen=True)
class CameraVariation:
    """The ranges one view is drawn from (uniform within each)."""

    exposure: float = 0.35  # gain on the linear image: exp(±exposure)
    gamma: float = 0.25  # exponent exp(±gamma): mid-tones darker or brighter
    colour_balance: float = 0.15  # per-channel gain exp(±colour_balance)
    blur: float = 1.2  # Gaussian radius in pixels at the model's input size, 0..blur
    rotation: float = 15.0  # degrees
    zoom: float = 0.10  # scale 1 ± zoom about the centre


def view_rng(key: str, view: int) -> np.random.Generator:
    digest = hashlib.sha256(f"{key}|{view}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "little"))


def vary(image: Image.Image, rng: np.random.Generator, spec: CameraVariation) -> Image.Image:
    """One camera's rendering of a square RGB photograph (same size, black stays black)."""
    side = image.size[0]
    angle = np.deg2rad(rng.uniform(-spec.rotation, spec.rotation))
    scale = 1.0 + rng.uniform(-spec.zoom, spec.zoom)
    # PIL's affine maps each output pixel to the input: centre + R(-angle) (out - centre) / scale
    cos, sin, centre = np.cos(angle) / scale, np.sin(angle) / scale, side / 2
    matrix = (cos, sin, centre - cos * centre - sin * centre,
              -sin, cos, centre + sin * centre - cos * centre)  # fmt: skip
    image = image.transform(
        image.size, Image.Transform.AFFINE, matrix, Image.Resampling.BILINEAR, fillcolor=(0, 0, 0)
    )
    radius = rng.uniform(0.0, spec.blur)
    if radius > 0.2:
        image = image.filter(ImageFilter.GaussianBlur(radius))
    array = np.asarray(image, dtype=np.float32) / 255.0
    gain = np.exp(rng.uniform(-spec.exposure, spec.exposure))
    balance = np.exp(rng.uniform(-spec.colour_balance, spec.colour_balance, size=3))
    gamma = np.exp(rng.uniform(-spec.gamma, spec.gamma))
    array = np.clip(array * gain * balance, 0.0, 1.0) ** gamma
    return Image.fromarray(np.round(array * 255.0).astype(np.uint8))


def views_of(
    image: Image.Image, key: str, count: int, spec: CameraVariation | None = None
) -> list[Image.Image]:
    """View 0 as is, view 1 mirrored (the served flip TTA), views 2.. camera variations
    (each mirrored at random)."""
    spec = spec or CameraVariation()
    mirrored = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    out = [image, mirrored][:count]
    for view in range(2, count):
        rng = view_rng(key, view)
        base = mirrored if rng.random() < 0.5 else image
        out.append(vary(base, rng, spec))
    return out
