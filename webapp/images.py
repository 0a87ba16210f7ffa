"""Photographs as the browser shows them: decoded from the stored DICOM, PNG, unenhanced; the
red-free view is the green channel (vessels and haemorrhages stand out on it)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from dicom_gateway.pixels import decode_rgb

MAX_SIDE = 2048  # larger captures are scaled down for the screen; 1:1 up to this size


def to_png(encoded: bytes, view: str) -> bytes:
    rgb = decode_rgb(encoded)
    if view == "redfree":
        picture = Image.fromarray(np.ascontiguousarray(rgb[..., 1]), mode="L")
    else:
        picture = Image.fromarray(np.ascontiguousarray(rgb), mode="RGB")
    if max(picture.size) > MAX_SIDE:
        picture.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    picture.save(out, format="PNG", compress_level=1)
    return out.getvalue()


def heatmap_png(path: str) -> bytes:
    """A stored Grad-CAM overlay, whatever image format it was written in, as PNG."""
    with Image.open(Path(path)) as picture:
        out = io.BytesIO()
        picture.convert("RGB").save(out, format="PNG", compress_level=1)
        return out.getvalue()
