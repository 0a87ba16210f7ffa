"""Generated photographs for pipeline tests: a fresh clone tests itself without ../shared.

They look enough like the real thing for every rule that does not judge the model: a fundus
photograph is a lit, textured disc with an optic disc and vessels on a black frame (it passes
the quality gate, dark corners included); a slit-lamp photograph fills the frame (an eye with
sclera, iris and pupil on skin), so the fundus gate calls it "not_fundus". Seeded: the same
arguments give the same pixels.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
from PIL import Image


def fundus_rgb(size: int = 400, seed: int = 0, frame: float = 0.05) -> np.ndarray:
    """A fundus-like photograph; ``frame`` is the black border's share of the width."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    centre = size / 2
    radius = size * (0.5 - frame)
    r = np.hypot(x - centre, y - centre) / radius
    lit = r < 1.0
    shade = np.clip(1.1 - 0.5 * r**2, 0, 1)
    image = np.zeros((size, size, 3), np.float32)
    for channel, level in enumerate((190.0, 85.0, 35.0)):
        image[..., channel] = level * shade
    image += rng.normal(0, 6, image.shape)  # texture: a real photograph is never flat
    disc_x, disc_y = centre + radius * 0.35 * (1 if seed % 2 else -1), centre
    disc = np.hypot(x - disc_x, y - disc_y) < radius * 0.12
    image[disc] = (235, 200, 120)
    vessels = np.zeros((size, size), bool)
    for k in range(6):  # vessels: darker curves leaving the optic disc
        angle = rng.uniform(0, 2 * np.pi)
        t = np.linspace(0, radius * 0.9, 400)
        bend = rng.uniform(-0.6, 0.6)
        vx = disc_x + t * np.cos(angle + bend * t / radius)
        vy = disc_y + t * np.sin(angle + bend * t / radius)
        width = 2 + k % 2
        for px, py in zip(vx.astype(int), vy.astype(int), strict=True):
            vessels[max(0, py - width) : py + width, max(0, px - width) : px + width] = True
    image[vessels & ~disc] *= 0.6
    image[~lit] = 0
    return np.clip(image, 0, 255).astype(np.uint8)


def slit_lamp_rgb(width: int = 640, height: int = 480, seed: int = 0) -> np.ndarray:
    """An external-eye / slit-lamp-like photograph filling the frame (no dark corners)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.empty((height, width, 3), np.float32)
    image[...] = (205, 150, 125)  # skin
    cx, cy = width / 2, height / 2
    sclera = ((x - cx) / (width * 0.38)) ** 2 + ((y - cy) / (height * 0.25)) ** 2 < 1
    image[sclera] = (235, 225, 220)
    iris_r = np.hypot(x - cx, y - cy)
    image[iris_r < height * 0.2] = (110, 80, 50) if seed % 2 else (70, 100, 140)
    image[iris_r < height * 0.08] = (15, 12, 12)  # pupil
    highlight = np.hypot(x - cx - height * 0.05, y - cy + height * 0.05) < height * 0.02
    image[highlight] = 255
    image += rng.normal(0, 7, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_photo(rgb: np.ndarray, path: Path) -> Path:
    """Save as a camera would: JPEG, quality 92."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written aside and renamed: a reader in another thread sees the whole file or none.
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
    Image.fromarray(rgb).save(partial, format="JPEG", quality=92)
    os.replace(partial, path)
    return path


def fundus_photos(folder: Path, count: int, size: int = 400) -> list[Path]:
    """``count`` distinct fundus-like JPEG files in ``folder``."""
    return [
        write_photo(fundus_rgb(size, seed=i), folder / f"fundus-{size}-{i}.jpg")
        for i in range(count)
    ]


def slit_lamp_photos(folder: Path, count: int) -> list[Path]:
    return [write_photo(slit_lamp_rgb(seed=i), folder / f"slit-lamp-{i}.jpg") for i in range(count)]


def generated_fundus_photos(count: int) -> list[Path]:
    """Fundus-like photographs in this process's temporary folder, made once."""
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"eyescreen-photos-{os.getpid()}"
    wanted = [folder / f"fundus-400-{i}.jpg" for i in range(count)]
    if all(path.exists() for path in wanted):
        return wanted
    return fundus_photos(folder, count)
