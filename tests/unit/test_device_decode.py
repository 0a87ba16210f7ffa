"""The JPEG path meant for a GPU (decode with torchvision, resize as tensors), run here on the
CPU against the PIL path, and on CUDA where there is one."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.encaps import encapsulate
from pydicom.uid import UID, JPEG2000Lossless

from dicom_gateway.photos import photo_to_dataset
from dicom_gateway.pixels import UndecodableImage, decode_rgb, jpeg_stream
from ml.predictor import Predictor
from ml.preprocess import Preprocessing, prepare, prepare_tensor
from services.screening.decision import decide
from services.screening.inference import Photo
from services.screening.quality import QualitySample, assess, image_statistics
from tests import dicom_corpus as corpus
from tests.conftest import FUNDUS, REPO, needs_shared_data
from worker.decoding import photo_decoder, tensor_sample

# The precision table (bench/README.md, "On a GPU"): fp16 moved no probability by more than
# 0.0036 and changed no finding and no referral of 160 photographs. A decoding path may move
# them no more than that.
TOLERANCE = 0.0036
CPU = torch.device("cpu")


def encoded(photo: Path) -> bytes:
    """The photograph as a camera sends it: Ophthalmic Photography, its JPEG as it came."""
    buffer = BytesIO()
    photo_to_dataset(photo, patient_id="P1").save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def with_stream(photo: Path, stream: bytes, **attributes: object) -> bytes:
    ds = photo_to_dataset(photo, patient_id="P1")
    ds.PixelData = encapsulate([stream])
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def in_syntax(photo: Path, syntax: UID, tmp_path: Path) -> bytes:
    path = corpus.write_in_syntax(corpus.native_dataset(photo), syntax, tmp_path / "x.dcm")
    return path.read_bytes()


def test_the_jpeg_stream_is_handed_over_as_stored_without_decoding(fundus_photo: Path) -> None:
    stored = fundus_photo.read_bytes()
    stream = jpeg_stream(encoded(fundus_photo))
    assert stream is not None and stream.rstrip(b"\0") == stored.rstrip(b"\0")
    # Not decoded on the way: a stream no decoder reads is still handed over as it is.
    broken = stored[:200] + bytes(range(256)) * 4
    assert jpeg_stream(with_stream(fundus_photo, broken)) == broken


def test_other_encodings_are_left_to_the_cpu_decoder(fundus_photo: Path, tmp_path: Path) -> None:
    native = BytesIO()
    corpus.native_dataset(fundus_photo).save_as(native, enforce_file_format=True)
    assert jpeg_stream(native.getvalue()) is None
    assert jpeg_stream(in_syntax(fundus_photo, JPEG2000Lossless, tmp_path)) is None
    # A JPEG labelled RGB: whether it was colour-transformed is pydicom's call, not libjpeg's.
    rgb = with_stream(fundus_photo, fundus_photo.read_bytes(), PhotometricInterpretation="RGB")
    assert jpeg_stream(rgb) is None
    assert jpeg_stream(b"not a DICOM file") is None


def test_the_cpu_decoder_reads_a_jpeg_as_training_read_it(fundus_photo: Path) -> None:
    # Training and every evaluation read the camera's JPEG with Pillow (libjpeg-turbo); the
    # served CPU path must see the same pixels, not pydicom's own decoder's rounding.
    as_trained = np.asarray(Image.open(fundus_photo).convert("RGB"))
    assert np.array_equal(decode_rgb(encoded(fundus_photo)), as_trained)
    grey = BytesIO()
    Image.open(fundus_photo).convert("L").save(grey, "JPEG", quality=90)
    as_trained_grey = np.asarray(Image.open(BytesIO(grey.getvalue())).convert("RGB"))
    monochrome = with_stream(
        fundus_photo, grey.getvalue(), PhotometricInterpretation="MONOCHROME2", SamplesPerPixel=1
    )
    assert np.array_equal(decode_rgb(monochrome), as_trained_grey)


def test_a_stream_pillow_cannot_read_is_refused_or_left_to_pydicom(fundus_photo: Path) -> None:
    junk = with_stream(fundus_photo, b"\xff\xd8\xff\xdb" + bytes(300))
    with pytest.raises(UndecodableImage):
        decode_rgb(junk)


@pytest.mark.parametrize("crop", [True, False])
@pytest.mark.parametrize("shape", [(150, 200), (320, 320), (321, 999), (1536, 2048), (37, 5)])
def test_the_tensor_resize_is_pils_to_the_last_bit(shape: tuple[int, int], crop: bool) -> None:
    rng = np.random.default_rng(sum(shape))
    rgb = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    rgb[: shape[0] // 7] = 0  # a black frame, for the crop to cut
    rgb[:, : shape[1] // 9] = 5
    spec = Preprocessing(size=320, crop_dark_border=crop)
    tensor = torch.from_numpy(rgb).permute(2, 0, 1).contiguous()
    assert torch.equal(prepare_tensor(tensor, spec), prepare(rgb, spec))


def test_the_quality_gate_reads_a_tensor_as_it_reads_the_array(fundus_photo: Path) -> None:
    rgb = np.array(Image.open(fundus_photo).convert("RGB"))
    from_tensor = tensor_sample(torch.from_numpy(rgb).permute(2, 0, 1).contiguous())
    from_array = QualitySample.of(rgb)
    assert np.array_equal(from_tensor.small, from_array.small)
    assert from_tensor.corners == from_array.corners
    assert image_statistics(from_tensor) == image_statistics(rgb)
    assert assess(from_tensor, "fundus") == assess(rgb, "fundus")


def test_one_bad_image_never_fails_the_batch(fundus_photo: Path, tmp_path: Path) -> None:
    jpeg = encoded(fundus_photo)
    j2k = in_syntax(fundus_photo, JPEG2000Lossless, tmp_path)
    junk = with_stream(fundus_photo, b"\xff\xd8\xff\xdb" + bytes(300))
    photos = photo_decoder(CPU)([jpeg, j2k, junk, b"not a DICOM file", jpeg])
    assert [type(p) for p in photos[:2]] == [Photo, Photo]
    assert isinstance(photos[0].pixels, torch.Tensor)  # type: ignore[union-attr]
    assert isinstance(photos[1].pixels, np.ndarray)  # type: ignore[union-attr]
    assert isinstance(photos[2], Exception) and isinstance(photos[3], Exception)
    assert isinstance(photos[4], Photo) and torch.equal(photos[4].pixels, photos[0].pixels)  # type: ignore[union-attr]


def real_photographs(count: int = 8) -> list[Path]:
    needs_shared_data()
    found = sorted((FUNDUS / "images").rglob("*.jpg"))
    return found[:: len(found) // count][:count]


def agreement(
    model: Predictor, ours: list[dict[str, float]], theirs: list[dict[str, float]]
) -> tuple[float, int, int]:
    """Largest probability difference, assessed findings changed, referrals changed."""
    largest = max(abs(a[c] - b[c]) for a, b in zip(ours, theirs, strict=True) for c in a)
    mine = [decide(model.taxonomy, row, model.operating_point) for row in ours]
    other = [decide(model.taxonomy, row, model.operating_point) for row in theirs]
    findings = sum(
        f.positive != g.positive
        for a, b in zip(mine, other, strict=True)
        for f, g in zip(a.findings, b.findings, strict=True)
        if f.assessed
    )
    referrals = sum(a.referral != b.referral for a, b in zip(mine, other, strict=True))
    return largest, findings, referrals


@pytest.fixture(scope="module")
def shipped_model() -> Predictor:
    return Predictor.load(REPO / "ml" / "models" / "fundus.pt", "cpu", "fp32")


def test_the_tensor_path_reads_real_photographs_as_the_pil_path(
    shipped_model: Predictor,
) -> None:
    """The PIL path is how the model was trained and benchmarked: PIL decodes, PIL resizes."""
    paths = real_photographs()
    pil = shipped_model.predict([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    photos = photo_decoder(CPU)([encoded(p) for p in paths])
    assert all(isinstance(p, Photo) and isinstance(p.pixels, torch.Tensor) for p in photos)
    tensors = shipped_model.predict([p.pixels for p in photos])  # type: ignore[union-attr]
    largest, findings, referrals = agreement(shipped_model, tensors, pil)
    assert largest <= TOLERANCE and findings == 0 and referrals == 0


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_on_cuda_the_gpu_path_reads_as_the_pil_path() -> None:
    """nvJPEG and the resize on the GPU against PIL on the CPU, both read by one model on the
    GPU, so that only the decoding and resizing differ."""
    paths = real_photographs(32)
    model = Predictor.load(REPO / "ml" / "models" / "fundus.pt", "cuda", "fp32")
    pil = model.predict([np.asarray(Image.open(p).convert("RGB")) for p in paths])
    photos = photo_decoder(torch.device("cuda"))([encoded(p) for p in paths])
    assert all(isinstance(p, Photo) and p.pixels.device.type == "cuda" for p in photos)  # type: ignore[union-attr]
    on_gpu = model.predict([p.pixels for p in photos])  # type: ignore[union-attr]
    largest, findings, referrals = agreement(model, on_gpu, pil)
    assert largest <= TOLERANCE and findings == 0 and referrals == 0, (largest, findings, referrals)
