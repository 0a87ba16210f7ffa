"""Inputs the fuzzer (``fuzz.inspection``) found, kept as cases: each must end in a refusal that
the gateway turns into a DICOM failure status, never in another exception."""

from __future__ import annotations

from io import BytesIO

import pytest
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import dcmwrite, write_file_meta_info
from pydicom.uid import UID

from dicom_gateway.inspection import Limits, inspect
from dicom_gateway.photos import photo_to_dataset
from services.kernel.errors import InstanceRejected
from tests.synthetic_photos import generated_fundus_photos

LIMITS = Limits(max_sequence_depth=12, max_decoded_bytes=64 << 20)


def _with_file_meta(transfer_syntax: str | None) -> bytes:
    """A generated photograph, uncompressed, whose file meta names ``transfer_syntax`` (or none)."""
    ds = photo_to_dataset(generated_fundus_photos(1)[0], patient_id="FUZZ")
    ds.decompress()
    meta = ds.file_meta
    if transfer_syntax is None:
        del meta.TransferSyntaxUID
    else:
        meta.TransferSyntaxUID = UID(transfer_syntax)
    head = DicomBytesIO()
    head.is_little_endian, head.is_implicit_VR = True, False
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=False)
    body = BytesIO()
    dcmwrite(body, ds, implicit_vr=False, little_endian=True)
    return head.getvalue() + body.getvalue()


def test_an_intact_photograph_passes() -> None:
    assert inspect(_with_file_meta("1.2.840.10008.1.2.1"), LIMITS).rows > 0


@pytest.mark.parametrize(
    ("transfer_syntax", "reason"),
    [(None, "no Transfer Syntax UID"), ("1.2.3.4", "not a known transfer syntax")],
)
def test_file_meta_without_a_usable_transfer_syntax_is_refused(
    transfer_syntax: str | None, reason: str
) -> None:
    # Found by fuzzing in CI: a mutated file meta group length hid the Transfer Syntax UID and
    # the inspection raised AttributeError instead of refusing the instance.
    with pytest.raises(InstanceRejected, match=reason):
        inspect(_with_file_meta(transfer_syntax), LIMITS)
