"""Test data sets built at test time from a real photograph: one per transfer syntax (encoded by
DCMTK's own tools where it has them, by pydicom's encoders otherwise) and a corpus of malformed
files, each written byte for byte as a broken sender would."""

from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate, generate_frames
from pydicom.filewriter import dcmwrite
from pydicom.pixels import convert_color_space
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)

from dicom_gateway.photos import photo_to_dataset


def small_rgb(photo: Path, size: int = 384) -> np.ndarray:
    with Image.open(photo) as image:
        return np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR))


def native_dataset(photo: Path, size: int = 384, **kwargs: object) -> Dataset:
    """An uncompressed RGB Ophthalmic Photography data set of a downsized real photograph."""
    ds = photo_to_dataset(photo, **kwargs)  # type: ignore[arg-type]
    rgb = small_rgb(photo, size)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.PhotometricInterpretation = "RGB"
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.LossyImageCompression = "00"
    for keyword in ("LossyImageCompressionRatio", "LossyImageCompressionMethod"):
        if keyword in ds:
            delattr(ds, keyword)
    ds.PixelData = rgb.tobytes()
    ds["PixelData"].VR = "OB"
    return ds


def _dcmtk(tool: str, *args: str) -> None:
    subprocess.run([f"/usr/bin/{tool}", *args], check=True, capture_output=True, timeout=60)


def write_in_syntax(ds: Dataset, syntax: UID, target: Path) -> Path:
    """Write ``ds`` (uncompressed RGB) encoded in ``syntax``."""
    source = target.with_suffix(".native.dcm")
    ds.save_as(source, enforce_file_format=True)
    dcmtk = {
        JPEGBaseline8Bit: ("dcmcjpeg", "+eb"),
        JPEGExtended12Bit: ("dcmcjpeg", "+ee"),
        JPEGLossless: ("dcmcjpeg", "+el"),
        JPEGLosslessSV1: ("dcmcjpeg", "+e1"),
        JPEGLSLossless: ("dcmcjpls", "+el"),
        JPEGLSNearLossless: ("dcmcjpls", "+en"),
        RLELossless: ("dcmcrle",),
    }
    if syntax in dcmtk:
        tool, *options = dcmtk[syntax]
        _dcmtk(tool, *options, str(source), str(target))
    elif syntax in (ExplicitVRLittleEndian, ImplicitVRLittleEndian, DeflatedExplicitVRLittleEndian):
        copy = dcmread(source)
        copy.file_meta.TransferSyntaxUID = syntax
        dcmwrite(target, copy, enforce_file_format=True)
    elif syntax == JPEG2000Lossless:
        copy = dcmread(source)
        copy.compress(JPEG2000Lossless, encoding_plugin="pylibjpeg")
        copy.save_as(target, enforce_file_format=True)
    elif syntax == JPEG2000:
        copy = dcmread(source)
        copy.compress(JPEG2000, j2k_cr=[15], encoding_plugin="pylibjpeg")
        copy.save_as(target, enforce_file_format=True)
    else:
        raise ValueError(f"no encoder for {syntax.name}")
    source.unlink()
    return target


def ybr_full(ds: Dataset) -> Dataset:
    rgb = ds.pixel_array
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").astype(np.uint8).tobytes()
    ds.PhotometricInterpretation = "YBR_FULL"
    return ds


def palette_color(ds: Dataset) -> tuple[Dataset, np.ndarray]:
    """A palette image: 8-bit indices with a 256-entry 16-bit colour table; returns the RGB
    image the palette describes (the expected decode)."""
    indices = ds.pixel_array[..., 1].copy()  # the green channel as index
    ramp = np.arange(256, dtype=np.uint16)
    red, green, blue = ramp * 257, (255 - ramp) * 257, (ramp // 2) * 257
    ds.SamplesPerPixel = 1
    del ds.PlanarConfiguration
    ds.PhotometricInterpretation = "PALETTE COLOR"
    for colour, table in zip(("Red", "Green", "Blue"), (red, green, blue), strict=True):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", table.astype("<u2").tobytes())
    ds.PixelData = indices.tobytes()
    expected = np.stack([red[indices], green[indices], blue[indices]], axis=-1) // 257
    return ds, expected.astype(np.uint8)


# --- malformed input -------------------------------------------------------------------------


def truncated(good: Path, target: Path) -> Path:
    data = good.read_bytes()
    target.write_bytes(data[: len(data) * 3 // 5])
    return target


def undecodable_jpeg(good_jpeg: Path, target: Path) -> Path:
    """Valid DICOM whose JPEG stream stops a third of the way through the scan."""
    ds = dcmread(good_jpeg)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([frame[: len(frame) // 3]])
    ds.save_as(target, enforce_file_format=True)
    return target


def garbage_jpeg(good_jpeg: Path, target: Path) -> Path:
    ds = dcmread(good_jpeg)
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    ds.PixelData = encapsulate([b"\x00" * 64 + frame[64:]])
    ds.save_as(target, enforce_file_format=True)
    return target


def pixel_length_mismatch(native: Dataset, target: Path) -> Path:
    native.Rows = native.Rows * 2
    native.save_as(target, enforce_file_format=True)
    return target


def invalid_uid(native: Dataset, target: Path) -> Path:
    native.StudyInstanceUID = "1.2.840.not-a-uid"
    native.save_as(target, enforce_file_format=True)
    return target


def missing_uid(native: Dataset, target: Path) -> Path:
    del native.SeriesInstanceUID
    native.save_as(target, enforce_file_format=True)
    return target


def wrong_vr(native: Dataset, target: Path) -> Path:
    """Rows written as a decimal string that is not a number (the VR of Rows is US)."""
    native.save_as(target, enforce_file_format=True)
    data = target.read_bytes()
    rows = struct.pack("<HH", 0x0028, 0x0010) + b"US" + struct.pack("<HH", 2, native.Rows)
    assert data.count(rows) == 1
    target.write_bytes(data.replace(rows, struct.pack("<HH", 0x0028, 0x0010) + b"DS\x02\x00ab"))
    return target


def huge_declared_length(native: Dataset, target: Path) -> Path:
    """An LT element claiming 0xFFFFFFF0 bytes (explicit VR: a 4-byte length via UT) at the end."""
    native.save_as(target, enforce_file_format=True)
    element = struct.pack("<HH", 0x0020, 0x4000) + b"UT\x00\x00" + struct.pack("<I", 0xFFFFFFF0)
    data = target.read_bytes()
    pixel_tag = struct.pack("<HH", 0x7FE0, 0x0010)
    at = data.rindex(pixel_tag)
    target.write_bytes(data[:at] + element + b"short value")
    return target


def nested_sequences(native: Dataset, target: Path, depth: int) -> Path:
    """``depth`` sequences inside each other, undefined lengths, placed before Pixel Data."""
    sq = struct.pack("<HH", 0x0040, 0xA730) + b"SQ\x00\x00" + struct.pack("<I", 0xFFFFFFFF)
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    body = (sq + item) * depth + (item_end + seq_end) * depth
    native.save_as(target, enforce_file_format=True)
    data = target.read_bytes()
    # (0040,A730) sorts after everything but Pixel Data in these files.
    at = data.rindex(struct.pack("<HH", 0x7FE0, 0x0010))
    target.write_bytes(data[:at] + body + data[at:])
    return target


def without_pixels(native: Dataset, target: Path) -> Path:
    del native.PixelData
    native.save_as(target, enforce_file_format=True)
    return target


def sop_class_mismatch(native: Dataset, target: Path) -> Path:
    """File meta (and so the C-STORE request) says Ophthalmic Photography 8 Bit; the data set
    itself says 16 Bit (same UID length, so only the data set's value changes)."""
    native.save_as(target, enforce_file_format=True)
    data = target.read_bytes()
    op8, op16 = b"1.2.840.10008.5.1.4.1.1.77.1.5.1", b"1.2.840.10008.5.1.4.1.1.77.1.5.2"
    in_dataset = data.index(op8, data.index(op8) + 1)
    target.write_bytes(data[:in_dataset] + op16 + data[in_dataset + len(op16) :])
    return target


def structured_report(target: Path) -> Path:
    """A non-image SOP class (Basic Text SR) the gateway does not accept."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality, ds.PatientID = "SR", "X"
    ds.ensure_file_meta()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.save_as(target, enforce_file_format=True)
    return target
