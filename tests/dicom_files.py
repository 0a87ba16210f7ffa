"""Building test DICOM files from real photographs (never stored in the repository)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from pydicom.dataset import Dataset

from dicom_gateway.photos import photo_to_dataset
from dicom_gateway.reading import laterality
from reports.sr import encode
from services.intake.ingest import ReceivedImage


def write_photo_dicom(photo: Path, target: Path, **kwargs: object) -> Dataset:
    ds = photo_to_dataset(photo, **kwargs)  # type: ignore[arg-type]
    ds.save_as(target, enforce_file_format=True)
    return ds


def received_dataset(ds: Dataset, route: str = "fundus", calling_ae: str = "") -> ReceivedImage:
    """What the gateway would hand the ingest service for this data set, identity included."""
    return ReceivedImage(
        sop_instance_uid=ds.SOPInstanceUID,
        sop_class_uid=ds.SOPClassUID,
        study_instance_uid=ds.StudyInstanceUID,
        series_instance_uid=ds.SeriesInstanceUID,
        transfer_syntax_uid=str(ds.file_meta.TransferSyntaxUID),
        route=route,
        encoded=encode(ds),
        patient_id=str(ds.PatientID),
        patient_name=str(ds.PatientName),
        laterality=laterality(ds),  # as the gateway reads it: R, L, B or nothing
        calling_ae=calling_ae,
    )


def received_photo(
    photo: Path, patient_id: str, calling_ae: str = "", cut_short: bool = False
) -> ReceivedImage:
    """What the gateway would hand the ingest service for this photograph (as a fundus OP);
    ``cut_short`` keeps half the bytes, as a broken transfer would."""
    image = received_dataset(photo_to_dataset(photo, patient_id=patient_id), "fundus", calling_ae)
    if cut_short:
        image = replace(image, encoded=image.encoded[: len(image.encoded) // 2])
    return image
