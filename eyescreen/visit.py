"""What ``eyescreen send`` makes of plain photographs: one visit (one study, one accession) of
one patient, each photograph with its eye, as a camera would send them. A person trying the
system sends a two-eye visit in one command instead of one visit per photograph with the eye
not given."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicom_gateway.photos import photo_to_dataset

EYES = {"R": "R", "OD": "R", "RIGHT": "R", "L": "L", "OS": "L", "LEFT": "L"}
_NAMED = re.compile(r"(?:^|[^a-z])(right|left|od|os)(?:[^a-z]|$)", re.IGNORECASE)


class VisitError(ValueError):
    """Options that do not describe a visit (the message says which and why)."""


@dataclass(frozen=True)
class Patient:
    patient_id: str = "ANON"
    name: str = "Anonymous^"  # DICOM form: Family^Given
    birth_date: str = ""  # YYYYMMDD
    sex: str = ""


def eye_code(text: str) -> str:
    """R or L from R, L, OD, OS, right or left (any case)."""
    try:
        return EYES[text.strip().upper()]
    except KeyError:
        raise VisitError(f"eye {text!r}: write R, L, OD, OS, right or left") from None


def eye_from_name(path: Path) -> str:
    """The eye a file name states (``1034_left.jpg``, ``p1-OD.png``), or "" when it does not."""
    found = _NAMED.search(path.stem)
    return eye_code(found.group(1)) if found else ""


def eyes_for(paths: Sequence[Path], given: Sequence[str]) -> list[str]:
    """One eye per photograph: one --eye per file, or one for all, or from the file names."""
    if not given:
        return [eye_from_name(p) for p in paths]
    if len(given) == 1:
        return [eye_code(given[0])] * len(paths)
    if len(given) != len(paths):
        raise VisitError(f"{len(given)} --eye values for {len(paths)} photographs: one per file")
    return [eye_code(e) for e in given]


def dicom_date(text: str) -> str:
    """YYYYMMDD from 1950-01-01 or 19500101; "" stays ""."""
    if not text:
        return ""
    for form in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text.strip(), form).strftime("%Y%m%d")
        except ValueError:
            continue
    raise VisitError(f"birth date {text!r}: write YYYY-MM-DD")


def photos_as_visit(
    paths: Sequence[Path],
    route: str,
    patient: Patient,
    eyes: Sequence[str],
    accession: str = "",
    study_uid: str | None = None,
) -> list[Dataset]:
    """The photographs as Ophthalmic Photography of one study: same patient, study and
    accession, one series and instance number each, the eye set on each."""
    if accession and len(accession) > 16:
        raise VisitError(f"accession {accession!r}: at most 16 characters (DICOM SH)")
    study = study_uid or generate_uid()
    datasets = []
    for number, (path, eye) in enumerate(zip(paths, eyes, strict=True), start=1):
        ds = photo_to_dataset(
            path, route=route, patient_id=patient.patient_id, patient_name=patient.name,
            laterality=eye, study_uid=study,
        )  # fmt: skip
        ds.PatientBirthDate, ds.PatientSex = patient.birth_date, patient.sex
        ds.AccessionNumber = accession
        ds.SeriesNumber = ds.InstanceNumber = number
        datasets.append(ds)
    return datasets
