"""What real and broken senders send: every transfer syntax decodes; every malformed file gets
its documented status; the gateway keeps serving. DCMTK storescu is the sender throughout."""

from __future__ import annotations

from collections.abc import Callable
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import UID
from sqlalchemy import select

from dicom_gateway import statuses as st
from dicom_gateway.conformance import TRANSFER_SYNTAXES
from dicom_gateway.pixels import decode_rgb
from services.db.models import Instance
from tests import dicom_corpus as corpus
from tests.dicom_files import write_photo_dicom
from tests.gateway_harness import Gateway

pytestmark = pytest.mark.integration

LOSSY = {"1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.51", "1.2.840.10008.1.2.4.91"}
NEAR_LOSSLESS = {"1.2.840.10008.1.2.4.81"}


@pytest.mark.parametrize("syntax", list(TRANSFER_SYNTAXES), ids=lambda s: UID(s).keyword)
def test_each_transfer_syntax_is_received_and_decodes(
    gateway: Gateway, fundus_photo: Path, tmp_path: Path, syntax: str
) -> None:
    original = corpus.small_rgb(fundus_photo)
    sent = corpus.write_in_syntax(
        corpus.native_dataset(fundus_photo), UID(syntax), tmp_path / "in.dcm"
    )
    assert dcmread(sent, stop_before_pixels=True).file_meta.TransferSyntaxUID == syntax
    assert gateway.storescu(sent) == [st.SUCCESS]
    with gateway.sessions() as session:
        instance = session.scalars(select(Instance)).one()
    assert instance.transfer_syntax_uid == syntax  # kept as the camera sent it
    decoded = decode_rgb(gateway.stored_bytes(instance.sha256))
    assert decoded.shape == original.shape
    error = np.abs(decoded.astype(int) - original.astype(int))
    if syntax in LOSSY:
        assert error.mean() < 6, error.mean()
    elif syntax in NEAR_LOSSLESS:
        assert error.max() <= 2
    else:
        assert error.max() == 0


def test_ybr_full_and_palette_colour_become_rgb(fundus_photo: Path) -> None:
    native = corpus.native_dataset(fundus_photo)
    original = native.pixel_array.copy()
    decoded = decode_rgb(_bytes(corpus.ybr_full(corpus.native_dataset(fundus_photo))))
    assert np.abs(decoded.astype(int) - original.astype(int)).max() <= 2
    palette, expected = corpus.palette_color(corpus.native_dataset(fundus_photo))
    assert np.array_equal(decode_rgb(_bytes(palette)), expected)


def _bytes(ds: Dataset) -> bytes:
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


Build = Callable[[Path, Path], Path]


def _native(make: Callable[[Dataset, Path], Path]) -> Build:
    return lambda photo, target: make(corpus.native_dataset(photo), target)


def _jpeg(make: Callable[[Path, Path], Path]) -> Build:
    def build(photo: Path, target: Path) -> Path:
        good = target.with_name("source.dcm")
        write_photo_dicom(photo, good)
        return make(good, target)

    return build


# case: (builder, expected status, sent by DCMTK storescu or, where DCMTK cannot read the file
# at all, streamed byte for byte by pynetdicom)
MALFORMED: dict[str, tuple[Build, int, str]] = {
    "truncated_file": (_jpeg(corpus.truncated), st.CANNOT_UNDERSTAND, "raw"),
    "undecodable_jpeg_truncated_scan": (_jpeg(corpus.undecodable_jpeg), st.BAD_PIXELS, "dcmtk"),
    "undecodable_jpeg_no_header": (_jpeg(corpus.garbage_jpeg), st.BAD_PIXELS, "dcmtk"),
    "invalid_uid": (_native(corpus.invalid_uid), st.CANNOT_UNDERSTAND, "dcmtk"),
    "missing_uid": (_native(corpus.missing_uid), st.CANNOT_UNDERSTAND, "dcmtk"),
    "wrong_vr": (_native(corpus.wrong_vr), st.CANNOT_UNDERSTAND, "dcmtk"),
    "pixel_length_mismatch": (_native(corpus.pixel_length_mismatch), st.BAD_PIXELS, "dcmtk"),
    "huge_declared_length": (_native(corpus.huge_declared_length), st.CANNOT_UNDERSTAND, "raw"),
    "nested_50_deep": (
        _native(lambda ds, p: corpus.nested_sequences(ds, p, 50)),
        st.CANNOT_UNDERSTAND,
        "dcmtk",
    ),
    "nested_5000_deep": (
        _native(lambda ds, p: corpus.nested_sequences(ds, p, 5000)),
        st.CANNOT_UNDERSTAND,
        "dcmtk",
    ),
    "without_pixels": (_native(corpus.without_pixels), st.DATASET_MISMATCH, "dcmtk"),
    "sop_class_mismatch": (_native(corpus.sop_class_mismatch), st.DATASET_MISMATCH, "raw"),
}


@pytest.mark.parametrize("case", list(MALFORMED))
def test_malformed_input_gets_its_status_and_a_good_image_still_goes_through(
    gateway: Gateway, fundus_photo: Path, tmp_path: Path, case: str
) -> None:
    build, expected, sender = MALFORMED[case]
    bad = build(fundus_photo, tmp_path / f"{case}.dcm")
    good = write_photo_dicom(fundus_photo, tmp_path / "good.dcm")
    status = gateway.send_raw(bad) if sender == "raw" else gateway.storescu(bad)[0]
    assert status == expected, f"0x{status:04X}"
    assert gateway.storescu(tmp_path / "good.dcm") == [st.SUCCESS]
    with gateway.sessions() as session:
        kept = session.scalars(select(Instance.sop_instance_uid)).all()
    assert kept == [good.SOPInstanceUID]
