"""Wrapping an ordinary photograph (JPEG/PNG) as an Ophthalmic Photography 8 Bit image.

JPEG files are encapsulated as they are (JPEG Baseline, as fundus cameras send them); other
formats are stored uncompressed. Used by ``eyescreen send`` and by the tests.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    OphthalmicPhotography8BitImageStorage,
    generate_uid,
)

REGION = {
    "fundus": ("5665001", "SCT", "Retina"),
    "anterior": ("28726007", "SCT", "Cornea"),
}


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def photo_to_dataset(
    path: Path,
    route: str = "fundus",
    patient_id: str = "ANON",
    patient_name: str = "Anonymous^",
    laterality: str = "",
    study_uid: str | None = None,
) -> Dataset:
    raw = path.read_bytes()
    with Image.open(path) as image:
        is_jpeg = image.format == "JPEG" and image.mode == "RGB"
        rgb = np.asarray(image.convert("RGB"))
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = OphthalmicPhotography8BitImageStorage
    ds.SOPClassUID = OphthalmicPhotography8BitImageStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    now = dt.datetime.now()
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = ds.AcquisitionDateTime = now.strftime("%Y%m%d")
    ds.StudyTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AcquisitionDateTime = now.strftime("%Y%m%d%H%M%S")
    ds.PatientID, ds.PatientName = patient_id, patient_name
    ds.PatientBirthDate = ds.PatientSex = ds.AccessionNumber = ds.ReferringPhysicianName = ""
    ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "1", 1, 1
    ds.Modality, ds.Manufacturer = "OP", "eyescreen"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.ImageLaterality = laterality or "U"
    ds.BurnedInAnnotation, ds.LossyImageCompression = "NO", "01" if is_jpeg else "00"
    ds.PatientEyeMovementCommanded = "NO"
    ds.AnatomicRegionSequence = Sequence([_code(*REGION[route])])
    ds.AcquisitionDeviceTypeCodeSequence = Sequence()
    ds.IlluminationTypeCodeSequence = Sequence()
    ds.LightPathFilterTypeStackCodeSequence = Sequence()
    ds.ImagePathFilterTypeStackCodeSequence = Sequence()
    ds.LensesCodeSequence = Sequence()
    ds.DetectorType = "CCD"
    ds.EmmetropicMagnification = ds.HorizontalFieldOfView = None
    ds.RefractiveStateSequence = Sequence()
    ds.PupilDilated = "NO"
    ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
    ds.Rows, ds.Columns = rgb.shape[:2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.NumberOfFrames = 1
    if is_jpeg:
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.PixelData = encapsulate([raw])
        ds.LossyImageCompressionRatio = f"{rgb.nbytes / len(raw):.2f}"[:16]
        ds.LossyImageCompressionMethod = "ISO_10918_1"
        ds["PixelData"].VR = "OB"
    else:
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PhotometricInterpretation = "RGB"
        ds.PixelData = rgb.tobytes()
    return ds
