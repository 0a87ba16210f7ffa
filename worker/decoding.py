"""The worker's photo decoder. On a GPU (unless EYESCREEN_GPU_JPEG_DECODE is off), the JPEG
streams of a batch are decoded there in one call and stay there for the model; every other
encoding (JPEG 2000, JPEG-LS, lossless JPEG, RLE, uncompressed), and any JPEG the device
refuses, is decoded on the CPU by ``decode_rgb``, one image at a time. The batch never fails
as a whole: each image gets its photograph or its own error."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from dicom_gateway.pixels import decode_rgb, jpeg_stream
from ml.jpeg import decode_jpegs
from services.screening.inference import Photo, PhotoDecoder, decode_each
from services.screening.quality import QualitySample, corner_side, sample_step


def photo_decoder(jpeg_device: torch.device | None) -> PhotoDecoder:
    """Decode on the CPU alone (``jpeg_device`` None), or JPEG on ``jpeg_device`` first."""
    on_cpu = decode_each(decode_rgb)
    if jpeg_device is None:
        return on_cpu

    def decode(encoded: Sequence[bytes]) -> list[Photo | Exception]:
        streams = [(n, jpeg_stream(data)) for n, data in enumerate(encoded)]
        jpegs = [(n, stream) for n, stream in streams if stream is not None]
        images = decode_jpegs([stream for _, stream in jpegs], jpeg_device)
        photos: dict[int, Photo | Exception] = {
            n: Photo(image, tensor_sample(image))
            for (n, _), image in zip(jpegs, images, strict=True)
            if isinstance(image, torch.Tensor)
        }
        rest = [n for n in range(len(encoded)) if n not in photos]
        photos.update(zip(rest, on_cpu([encoded[n] for n in rest]), strict=True))
        return [photos[n] for n in range(len(encoded))]

    return decode


def tensor_sample(image: torch.Tensor) -> QualitySample:
    """``QualitySample.of`` for a (3, H, W) uint8 tensor: the subsample and the four corner
    means are taken on its device; only they come back to the CPU."""
    _, height, width = image.shape
    step, k = sample_step(height, width), corner_side(height, width)
    patches = (image[:, :k, :k], image[:, :k, -k:], image[:, -k:, :k], image[:, -k:, -k:])
    # float64 sums of 8-bit values are exact, so the means equal numpy's to the last bit
    means = torch.stack([patch.double().mean() for patch in patches]).tolist()
    small = image[:, ::step, ::step].permute(1, 2, 0).contiguous().cpu().numpy()
    return QualitySample(small, (means[0], means[1], means[2], means[3]))
