"""Checking a received data set before it is accepted: readable, sane, and its pixels decodable.

Runs inside a guarded process (``dicom_gateway.guard``): a hostile or broken data set may make a
parser or decoder loop, recurse or allocate without bound, and that must not touch the gateway.
Everything the gateway needs afterwards is returned as plain data, so the gateway itself never
parses what the sender sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

from PIL import Image
from pydicom import dcmread
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.encaps import generate_frames
from pydicom.pixels import pixel_array
from pydicom.uid import UID, JPEGBaseline8Bit, JPEGExtended12Bit

from dicom_gateway.reading import laterality, routing_codes, text
from services.kernel.errors import InstanceRejected

UNDEFINED_LENGTH = 0xFFFFFFFF
_REQUIRED_UIDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")
# Baseline and extended JPEG are checked by a reduced-size decode: every entropy-coded segment
# is still read (corruption is found) but the inverse DCT runs on 1/64 of the pixels.
_DRAFT_DECODE = {JPEGBaseline8Bit, JPEGExtended12Bit}


class Unreadable(InstanceRejected):
    """Not a parseable data set, or a required attribute missing or invalid."""


class TooDeep(Unreadable):
    """Sequences nested deeper than allowed."""


class DatasetMismatch(InstanceRejected):
    """The data set does not match its SOP class or the C-STORE request (e.g. no Pixel Data)."""


class BadPixels(InstanceRejected):
    """Pixel data absent, inconsistent with the image attributes, or undecodable."""


class TooLarge(InstanceRejected):
    """The data set, or its decoded pixels, exceed the configured size."""


@dataclass(frozen=True)
class Limits:
    max_sequence_depth: int = 12
    max_decoded_bytes: int = 1 << 30


@dataclass(frozen=True)
class Inspected:
    """What the gateway needs from a data set that passed every check."""

    sop_class_uid: str
    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    patient_id: str
    issuer: str
    patient_name: str
    birth_date: str
    sex: str
    study_date: str
    accession_number: str
    laterality: str
    station_name: str
    device_type: tuple[tuple[str, str], ...]
    anatomic_region: tuple[tuple[str, str], ...]
    rows: int
    columns: int
    frames: int
    photometric: str


def inspect(encoded: bytes, limits: Limits) -> Inspected:
    try:
        ds = dcmread(BytesIO(encoded))
    except Exception as exc:  # truncated, wrong lengths, bad VRs: the parser raises many types
        raise Unreadable(f"unreadable data set: {type(exc).__name__}") from exc
    try:
        _check_lengths(ds)
        _check_depth(ds, limits.max_sequence_depth)
        _check_uids(ds)
        summary = _read_fields(ds)
    except InstanceRejected:
        raise
    except (RecursionError, MemoryError):
        raise TooDeep("sequences nested too deeply to read") from None
    except Exception as exc:
        raise Unreadable(f"unreadable attribute: {type(exc).__name__}") from exc
    _check_pixels(ds, summary, limits)
    return summary


def _check_lengths(ds: Dataset) -> None:
    """pydicom reads a value cut short by the end of the data silently; we refuse it."""
    for tag in list(ds.keys()):
        raw = ds.get_item(tag)
        if not isinstance(raw, RawDataElement) or raw.length == UNDEFINED_LENGTH:
            continue
        if raw.value is not None and len(raw.value) < raw.length:
            raise Unreadable(
                f"element {tag} declares {raw.length} bytes; "
                f"the data set ends after {len(raw.value)}"
            )


def _check_depth(ds: Dataset, limit: int, depth: int = 0) -> None:
    for element in ds:
        if element.VR != "SQ":
            continue
        if depth + 1 > limit:
            raise TooDeep(f"sequences nested deeper than {limit} levels")
        for item in element.value:
            _check_depth(item, limit, depth + 1)


def _check_uids(ds: Dataset) -> None:
    for keyword in _REQUIRED_UIDS:
        value = text(ds, keyword)
        if not value or not UID(value).is_valid:
            raise Unreadable(f"{keyword} is missing or not a valid UID")


def _int(ds: Dataset, keyword: str, default: int | None = None) -> int:
    value = ds.get(keyword, default)
    if value is None or value == "":
        if default is None:
            raise BadPixels(f"{keyword} is missing")
        return default
    return int(value)


def _read_fields(ds: Dataset) -> Inspected:
    if "PixelData" not in ds:
        raise DatasetMismatch("an image storage data set without Pixel Data")
    device_type, anatomic_region = routing_codes(ds)
    return Inspected(
        sop_class_uid=text(ds, "SOPClassUID"),
        sop_instance_uid=text(ds, "SOPInstanceUID"),
        study_instance_uid=text(ds, "StudyInstanceUID"),
        series_instance_uid=text(ds, "SeriesInstanceUID"),
        patient_id=text(ds, "PatientID"),
        issuer=text(ds, "IssuerOfPatientID"),
        patient_name=text(ds, "PatientName", 324),
        birth_date=text(ds, "PatientBirthDate", 8),
        sex=text(ds, "PatientSex", 16),
        study_date=text(ds, "StudyDate", 8),
        accession_number=text(ds, "AccessionNumber", 16),
        laterality=laterality(ds),
        station_name=text(ds, "StationName", 16),
        device_type=device_type,
        anatomic_region=anatomic_region,
        rows=_int(ds, "Rows"),
        columns=_int(ds, "Columns"),
        frames=_int(ds, "NumberOfFrames", 1),
        photometric=text(ds, "PhotometricInterpretation"),
    )


def _check_pixels(ds: Dataset, image: Inspected, limits: Limits) -> None:
    samples = _int(ds, "SamplesPerPixel")
    bits = _int(ds, "BitsAllocated")
    if image.rows < 1 or image.columns < 1 or image.frames < 1:
        raise BadPixels("Rows, Columns and Number of Frames must be positive")
    if samples not in (1, 3) or bits not in (1, 8, 16):
        raise BadPixels(f"unsupported image: {samples} samples of {bits} bits")
    decoded = image.rows * image.columns * samples * max(bits // 8, 1) * image.frames
    if decoded > limits.max_decoded_bytes:
        raise TooLarge(f"decoded image would need {decoded >> 20} MiB")
    syntax = _transfer_syntax(ds)
    if not syntax.is_compressed:
        expected = image.rows * image.columns * samples * image.frames * bits // 8
        if len(ds.PixelData) < expected:
            raise BadPixels(
                f"Pixel Data holds {len(ds.PixelData)} bytes, the image needs {expected}"
            )
    try:
        _decode_first_frame(ds, syntax, image.frames)
    except InstanceRejected:
        raise
    except Exception as exc:  # decoders raise many types for corrupt streams
        raise BadPixels(f"pixel data cannot be decoded: {type(exc).__name__}") from exc


def _transfer_syntax(ds: Dataset) -> UID:
    """The file meta's Transfer Syntax UID; a file meta without a known one cannot be decoded."""
    syntax = ds.file_meta.get("TransferSyntaxUID")
    if not syntax:
        raise Unreadable("the file meta information has no Transfer Syntax UID")
    syntax = UID(syntax)
    if not syntax.is_transfer_syntax:
        raise Unreadable(f"{syntax} is not a known transfer syntax")
    return syntax


def _decode_first_frame(ds: Dataset, syntax: UID, frames: int) -> None:
    if syntax in _DRAFT_DECODE and ds.get("BitsAllocated") == 8:
        frame = next(generate_frames(ds.PixelData, number_of_frames=frames))
        with Image.open(BytesIO(frame)) as picture:
            if picture.size != (ds.Columns, ds.Rows):
                raise BadPixels(f"JPEG is {picture.size}, Rows/Columns say {ds.Columns}x{ds.Rows}")
            picture.draft(picture.mode, (picture.width // 8, picture.height // 8))
            picture.load()
        return
    pixel_array(ds, index=0 if frames > 1 else None)
