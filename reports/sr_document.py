"""The Comprehensive 3D SR document around a TID 1500 content tree, assembled with pydicom.

highdicom builds and validates the content tree (``reports/sr.py``); its ``Comprehensive3DSR``
constructor then costs about half a second per two-image case (a deep copy and a re-parse of
the tree, evidence collection by tree search, IOD attribute lookups), which was most of the
report's time. The document modules around the tree are plain attributes; they are set here
as highdicom sets them, and the tests check every SR with dciodvfy, DCMTK dsrdump and
highdicom's own parser."""

from __future__ import annotations

import datetime
from collections import defaultdict
from collections.abc import Sequence

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    Comprehensive3DSRStorage,
    ExplicitVRLittleEndian,
)

# Patient, General Study and Patient Study attributes copied from the first source image
# (Type 2 ones are written empty when the source lacks them).
PATIENT_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex")
STUDY_TYPE2 = ("StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber")
OPTIONAL = (
    "IssuerOfPatientID",
    "IssuerOfPatientIDQualifiersSequence",
    "OtherPatientIDsSequence",
    "PatientAge",
    "PatientSize",
    "PatientWeight",
    "StudyDescription",
    "IssuerOfAccessionNumberSequence",
)


def _verifying_observer(name: str, organization: str, now: datetime.datetime) -> Dataset:
    observer = Dataset()
    observer.VerifyingObserverName = name
    observer.VerifyingOrganization = organization
    observer.VerificationDateTime = now.strftime("%Y%m%d%H%M%S.%f")
    observer.VerifyingObserverIdentificationCodeSequence = DicomSequence()
    return observer


def assemble(
    root: Dataset,
    sources: Sequence[Dataset],
    sop_instance_uid: str,
    series_instance_uid: str,
    series_number: int,
    series_description: str,
    manufacturer: str,
    verifying_observers: Sequence[tuple[str, str]],
    predecessors: Sequence[Dataset] = (),
) -> Dataset:
    """The SR data set: ``root`` is the content tree's root item (TID 1500), ``sources`` the
    images it refers to (metadata only), ``verifying_observers`` (name, organization of each
    person who signed) when the report is verified and final."""
    first = sources[0]
    now = datetime.datetime.now()
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = Comprehensive3DSRStorage
    ds.file_meta.MediaStorageSOPInstanceUID = UID(sop_instance_uid)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    if "SpecificCharacterSet" in first:  # the source's repertoire (default: ASCII)
        ds.SpecificCharacterSet = first.SpecificCharacterSet
    ds.SOPClassUID = Comprehensive3DSRStorage
    ds.SOPInstanceUID = sop_instance_uid
    for keyword in PATIENT_TYPE2:
        setattr(ds, keyword, first.get(keyword, ""))
    ds.StudyInstanceUID = first.StudyInstanceUID
    for keyword in STUDY_TYPE2:
        setattr(ds, keyword, first.get(keyword, ""))
    for keyword in OPTIONAL:
        if keyword in first:
            setattr(ds, keyword, first.get(keyword))
    ds.Modality = "SR"
    ds.SeriesInstanceUID = series_instance_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.ReferencedPerformedProcedureStepSequence = DicomSequence()
    ds.Manufacturer = manufacturer
    ds.InstanceNumber = 1
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S.%f")
    ds.CompletionFlag = "COMPLETE"
    if verifying_observers:
        ds.VerifyingObserverSequence = [
            _verifying_observer(name, organization, now)
            for name, organization in verifying_observers
        ]
        ds.VerificationFlag = "VERIFIED"
        ds.PreliminaryFlag = "FINAL"
    else:
        ds.VerificationFlag = "UNVERIFIED"
        ds.PreliminaryFlag = "PRELIMINARY"
    same, other = _references(sources, first.StudyInstanceUID)
    if same:
        ds.CurrentRequestedProcedureEvidenceSequence = same
    if other:
        ds.PertinentOtherEvidenceSequence = other
    if predecessors:
        ds.PredecessorDocumentsSequence = _references(predecessors, None)[1]
    ds.PerformedProcedureCodeSequence = DicomSequence()
    for element in root:  # ValueType, ConceptNameCodeSequence, ContinuityOfContent, ...
        ds[element.tag] = element
    return ds


def _references(
    instances: Sequence[Dataset], study_uid: str | None
) -> tuple[list[Dataset], list[Dataset]]:
    """Hierarchical SOP instance references, split into this study's and other studies'."""
    grouped: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)
    for instance in instances:
        key = (str(instance.StudyInstanceUID), str(instance.SeriesInstanceUID))
        grouped[key][str(instance.SOPInstanceUID)] = str(instance.SOPClassUID)
    same: list[Dataset] = []
    other: list[Dataset] = []
    studies: dict[str, Dataset] = {}
    for (study, series), sops in grouped.items():
        if study not in studies:
            item = Dataset()
            item.StudyInstanceUID = study
            item.ReferencedSeriesSequence = DicomSequence()
            studies[study] = item
            (same if study == study_uid else other).append(item)
        series_item = Dataset()
        series_item.SeriesInstanceUID = series
        series_item.ReferencedSOPSequence = DicomSequence()
        for sop_uid, class_uid in sops.items():
            reference = Dataset()
            reference.ReferencedSOPClassUID = class_uid
            reference.ReferencedSOPInstanceUID = sop_uid
            series_item.ReferencedSOPSequence.append(reference)
        studies[study].ReferencedSeriesSequence.append(series_item)
    return same, other
