"""What another fundus camera changes in a photograph, as a seeded augmentation.

Cameras differ in exposure, colour balance, sharpness, how the disc is framed and how the eye
is turned; disease does not. Views drawn from these let a model learn that none of them is
the answer. Each view is fixed by its photograph and view number, so a cached view is the
same on every run and every machine.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageFilter
from torchvision.transforms.v2.functional import gaussian_blur


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


def vary_batch(
    images: torch.Tensor, generator: torch.Generator, spec: CameraVariation | None = None
) -> torch.Tensor:
    """``vary`` for a batch on its own device (the GPU recipe): (n, 3, H, W) in [0, 1], each
    photograph mirrored at random and given its own exposure, colour balance, gamma, rotation
    and zoom; one blur radius per batch."""
    spec = spec or CameraVariation()
    n, device = images.shape[0], images.device

    def uniform(bound: float, *shape: int) -> torch.Tensor:
        return ((torch.rand(*shape, generator=generator) * 2 - 1) * bound).to(device)

    mirror = (torch.rand(n, generator=generator) < 0.5).to(device)
    images = torch.where(mirror.view(n, 1, 1, 1), images.flip(-1), images)
    angle = torch.deg2rad(uniform(spec.rotation, n))
    scale = 1.0 + uniform(spec.zoom, n)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)
    images = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    radius = float(torch.rand(1, generator=generator)) * spec.blur
    if radius > 0.2:
        size = 2 * math.ceil(2 * radius) + 1
        images = gaussian_blur(images, [size, size], [radius, radius])
    gain = torch.exp(uniform(spec.exposure, n, 1, 1, 1))
    balance = torch.exp(uniform(spec.colour_balance, n, 3, 1, 1))
    gamma = torch.exp(uniform(spec.gamma, n, 1, 1, 1))
    return (images * gain * balance).clamp(0.0, 1.0) ** gamma
