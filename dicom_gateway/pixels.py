"""Decoding a stored image to an RGB uint8 array for the model."""

from __future__ import annotations

from io import BytesIO

import numpy as np
from pydicom import dcmread
from pydicom.pixels import apply_color_lut


class UndecodableImage(ValueError):
    """The pixel data cannot be turned into an RGB photograph."""


def decode_rgb(encoded: bytes) -> np.ndarray:
    try:
        ds = dcmread(BytesIO(encoded), force=True)
        pixels = ds.pixel_array
    except Exception as exc:  # decoders raise many types for corrupt streams
        raise UndecodableImage(f"cannot decode pixel data: {type(exc).__name__}: {exc}") from exc
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        pixels = pixels[0]  # the first frame of a multi-frame capture
    photometric = str(ds.get("PhotometricInterpretation", "RGB"))
    if photometric == "PALETTE COLOR":
        pixels = apply_color_lut(pixels, ds)
    # YBR photometrics need nothing here: pydicom's pixel_array returns RGB for them (as_rgb).
    if pixels.ndim == 2 or (pixels.ndim == 3 and pixels.shape[2] == 1):
        pixels = np.repeat(pixels.reshape(pixels.shape[0], pixels.shape[1], 1), 3, axis=2)
    if pixels.ndim != 3 or pixels.shape[2] != 3:
        raise UndecodableImage(f"unexpected pixel array shape {pixels.shape}")
    if pixels.dtype != np.uint8:
        top = float(pixels.max()) or 1.0
        pixels = (pixels.astype(np.float32) * (255.0 / top)).clip(0, 255).astype(np.uint8)
    return np.ascontiguousarray(pixels)
