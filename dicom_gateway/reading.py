"""Reading what the service needs from a received data set, with specific errors for bad input."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.uid import UID

from services.errors import InstanceRejected
from services.routing import RoutingFacts

_REQUIRED_UIDS = ("SOPInstanceUID", "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID")


class SopClassMismatch(InstanceRejected):
    """The data set's SOP Class UID is not the one negotiated for the C-STORE."""


def text(ds: Dataset, keyword: str, limit: int = 64) -> str:
    value = ds.get(keyword, "")
    return ("" if value is None else str(value)).strip()[:limit]


def check_identity(ds: Dataset, affected_sop_class: str, affected_instance: str) -> None:
    for keyword in _REQUIRED_UIDS:
        value = text(ds, keyword)
        if not value or not UID(value).is_valid:
            raise InstanceRejected(f"{keyword} is missing or not a valid UID")
    if text(ds, "SOPClassUID") != affected_sop_class:
        raise SopClassMismatch("SOP Class UID of the data set differs from the C-STORE request")
    if text(ds, "SOPInstanceUID") != affected_instance:
        raise SopClassMismatch("SOP Instance UID of the data set differs from the C-STORE request")
    if "PixelData" not in ds:
        raise SopClassMismatch("an image storage data set without Pixel Data")


def _codes(ds: Dataset, keyword: str) -> tuple[tuple[str, str], ...]:
    items = ds.get(keyword) or []
    return tuple(
        (text(item, "CodeValue"), text(item, "CodeMeaning")) for item in items if item is not None
    )


def routing_facts(ds: Dataset, calling_ae: str) -> RoutingFacts:
    return RoutingFacts(
        calling_ae=calling_ae.strip(),
        station_name=text(ds, "StationName", 16),
        device_type=_codes(ds, "AcquisitionDeviceTypeCodeSequence"),
        anatomic_region=_codes(ds, "AnatomicRegionSequence"),
        sop_class_uid=text(ds, "SOPClassUID"),
    )


def laterality(ds: Dataset) -> str:
    for keyword in ("ImageLaterality", "Laterality"):
        value = text(ds, keyword, 2).upper()
        if value in ("L", "R", "B"):
            return value
    return ""
