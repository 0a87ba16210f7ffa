"""What the viewer is sent: the camera's own JPEG untouched, lossless PNG otherwise, the
red-free view as the green channel, and a second request answered from the cache."""

from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

from dicom_gateway.photos import photo_to_dataset
from reports.sr import encode
from webapp.images import for_browser


def _photo(tmp_path: Path, side: int = 1024) -> Path:
    rng = np.random.default_rng(1)
    pixels = (rng.random((side * 3 // 4, side, 3)) * 255).astype("uint8")
    path = tmp_path / "camera.jpg"
    Image.fromarray(pixels).save(path, quality=92)
    return path


def test_camera_jpeg_goes_out_as_sent_and_the_rest_as_lossless_png(tmp_path: Path) -> None:
    camera = _photo(tmp_path)
    ds = photo_to_dataset(camera, patient_id="V-1")
    sent = encode(ds)
    picture, media = for_browser("a" * 64, sent, "plain")
    assert media == "image/jpeg" and picture == camera.read_bytes()  # the camera's own bytes
    shown = np.asarray(Image.open(io.BytesIO(picture)).convert("RGB"))
    decoded = dcmread(io.BytesIO(sent)).pixel_array  # the same bitstream, the same pixels
    assert shown.shape == (*decoded.shape[:2], 3)

    raw = dcmread(io.BytesIO(sent))
    raw.decompress()
    raw.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    uncompressed = encode(raw)
    png, media = for_browser("b" * 64, uncompressed, "plain")
    assert media == "image/png"
    expected = dcmread(io.BytesIO(uncompressed)).pixel_array
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png)).convert("RGB")), expected)

    redfree, media = for_browser("b" * 64, uncompressed, "redfree")
    assert media == "image/png"
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(redfree))), expected[..., 1])


def test_a_second_request_comes_from_the_cache(tmp_path: Path) -> None:
    ds = photo_to_dataset(_photo(tmp_path, side=2048), patient_id="V-2")
    sent = encode(ds)
    started = time.perf_counter()
    first = for_browser("c" * 64, sent, "redfree")
    cold = time.perf_counter() - started
    started = time.perf_counter()
    again = for_browser("c" * 64, sent, "redfree")
    warm = time.perf_counter() - started
    assert again is first and warm < cold / 10
