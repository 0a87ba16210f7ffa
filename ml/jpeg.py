"""JPEG decoding on the model's device: torchvision's ``decode_jpeg`` over a whole batch in one
call (nvJPEG on a GPU), then one image at a time if the batch is refused, so that one image
the decoder cannot read never costs the others theirs."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torchvision.io import ImageReadMode, decode_jpeg

log = logging.getLogger(__name__)

# What decode_jpeg raises for a stream it cannot read (corrupt, lossless, 12-bit, ...).
REFUSED = (RuntimeError, ValueError)


def _decode(data: torch.Tensor | list[torch.Tensor], device: torch.device) -> Any:
    # torchvision 0.29 marks its image codecs deprecated in favour of TorchCodec (>= 0.16),
    # which is not a dependency yet; the pinned torchvision's decoder is the one tested here.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "The image decoding", DeprecationWarning)
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)


def decode_jpegs(streams: Sequence[bytes], device: torch.device) -> list[torch.Tensor | Exception]:
    """Each JPEG stream as a (3, H, W) uint8 RGB tensor on ``device``, or the error that
    refused it."""
    if not streams:
        return []
    data = [torch.frombuffer(bytearray(stream), dtype=torch.uint8) for stream in streams]
    try:
        return list(_decode(data, device))
    except REFUSED as exc:
        log.info("batch of %d JPEGs refused (%s): decoding one by one", len(data), exc)
    decoded: list[torch.Tensor | Exception] = []
    for one in data:
        try:
            decoded.append(_decode(one, device))
        except REFUSED as exc:
            decoded.append(exc)
    return decoded
