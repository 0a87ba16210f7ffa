"""Reading attributes from a data set defensively: short strings, no exceptions for odd values."""

from __future__ import annotations

from pydicom.dataset import Dataset

Codes = tuple[tuple[str, str], ...]


def text(ds: Dataset, keyword: str, limit: int = 64) -> str:
    value = ds.get(keyword, "")
    return ("" if value is None else str(value)).strip()[:limit]


def _codes(ds: Dataset, keyword: str) -> Codes:
    items = ds.get(keyword) or []
    return tuple(
        (text(item, "CodeValue"), text(item, "CodeMeaning")) for item in items if item is not None
    )


def routing_codes(ds: Dataset) -> tuple[Codes, Codes]:
    """(Acquisition Device Type codes, Anatomic Region codes) as (value, meaning) pairs."""
    return _codes(ds, "AcquisitionDeviceTypeCodeSequence"), _codes(ds, "AnatomicRegionSequence")


def laterality(ds: Dataset) -> str:
    for keyword in ("ImageLaterality", "Laterality"):
        value = text(ds, keyword, 2).upper()
        if value in ("L", "R", "B"):
            return value
    return ""
