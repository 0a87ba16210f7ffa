"""Decoding a stored image to an RGB uint8 array for the model, or handing its JPEG stream, as
stored, to a decoder on the model's device.

An 8-bit JPEG (YCbCr or grey) is decoded by Pillow's libjpeg-turbo, the decoder every training
and evaluation run read the photographs with, so that the served model sees the pixels its
figures were measured on; pydicom's own JPEG decoder rounds differently (probabilities moved by
up to 0.145 on 160 photographs, decision record 0006). Every other encoding goes through
pydicom."""

from __future__ import annotations

from io import BytesIO

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import get_frame
from pydicom.pixels import apply_color_lut
from pydicom.uid import JPEGBaseline8Bit, JPEGExtended12Bit

# JPEG processes a libjpeg-style decoder (torchvision's, nvJPEG) reads when the samples are 8-bit.
DEVICE_JPEG_SYNTAXES = frozenset({JPEGBaseline8Bit, JPEGExtended12Bit})
# Photometrics for which such a decoder's own colour handling gives what ``decode_rgb`` gives:
# YCbCr converted to RGB, grey repeated into three channels. A JPEG labelled RGB may or may not
# have been colour-transformed before compression (pydicom reads the label, libjpeg guesses
# from markers): left to ``decode_rgb``.
DEVICE_JPEG_PHOTOMETRICS = frozenset({"YBR_FULL_422", "YBR_FULL", "MONOCHROME2"})


class UndecodableImage(ValueError):
    """The pixel data cannot be turned into an RGB photograph."""


def decode_rgb(encoded: bytes) -> np.ndarray:
    try:
        ds = dcmread(BytesIO(encoded), force=True)
        as_trained = _libjpeg_turbo_rgb(_jpeg_frame(ds))
        if as_trained is not None:
            return as_trained
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


def jpeg_stream(encoded: bytes) -> bytes | None:
    """The first frame's JPEG stream exactly as stored (nothing decoded), when a device decoder
    would read it as ``decode_rgb`` does: 8-bit JPEG baseline or extended, YCbCr or grey. None
    otherwise, or when the data set cannot be parsed: ``decode_rgb`` then decides."""
    try:
        return _jpeg_frame(dcmread(BytesIO(encoded), force=True))
    except Exception:  # a malformed data set: decode_rgb reports it
        return None


def _jpeg_frame(ds: Dataset) -> bytes | None:
    """The first frame's JPEG stream when libjpeg's colour handling gives what pydicom's does."""
    if (
        ds.file_meta.get("TransferSyntaxUID") not in DEVICE_JPEG_SYNTAXES
        or str(ds.get("PhotometricInterpretation", "")) not in DEVICE_JPEG_PHOTOMETRICS
        or ds.get("BitsAllocated") != 8
        or ds.get("BitsStored") != 8
    ):
        return None
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return get_frame(ds.PixelData, 0, number_of_frames=frames)


def _libjpeg_turbo_rgb(stream: bytes | None) -> np.ndarray | None:
    """The stream decoded as ``ml.preprocess.load_rgb`` decodes a JPEG file; None when there is
    no stream or Pillow cannot read it (pydicom then decides)."""
    if stream is None:
        return None
    try:
        with Image.open(BytesIO(stream)) as picture:
            if picture.format != "JPEG":
                return None
            return np.ascontiguousarray(np.asarray(picture.convert("RGB")))
    except (OSError, ValueError, SyntaxError):  # not a JPEG Pillow reads: pydicom's turn
        return None
