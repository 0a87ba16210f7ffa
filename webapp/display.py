"""DICOM values as people write them on a page: ``Doe^Jane`` is "Jane Doe", ``19500101`` is
"1 Jan 1950". Whatever does not parse is shown as it came, never dropped (a reader must still
see what the modality sent)."""

from __future__ import annotations

from datetime import date, datetime

SEX = {"F": "female", "M": "male", "O": "other"}


def person_name(value: str | None) -> str:
    """A DICOM PN (family^given^middle^prefix^suffix, perhaps with ideographic groups after
    ``=``) as written in Western order: "Dr Jane Ann Doe Jr"."""
    if not value:
        return ""
    alphabetic = value.split("=")[0]
    parts = [p.strip() for p in alphabetic.split("^")] + [""] * 5
    family, given, middle, prefix, suffix = parts[:5]
    return " ".join(p for p in (prefix, given, middle, family, suffix) if p) or value


def dicom_date(value: str | None) -> str:
    """A DICOM DA (YYYYMMDD) as "1 Jan 1950", the unambiguous way on both sides of the
    Atlantic; an empty value as "not given"."""
    if not value:
        return "not given"
    try:
        day = date(int(value[:4]), int(value[4:6]), int(value[6:8]))
    except ValueError:
        return value
    if len(value) != 8:
        return value
    return f"{day.day} {day.strftime('%b')} {day.year}"


def sex(value: str | None) -> str:
    return SEX.get((value or "").upper(), value or "sex not given")


def when(value: datetime | None) -> str:
    """A time stamp as "6 Dec 2026, 21:41" (the pages say which clock: UTC)."""
    if value is None:
        return ""
    return f"{value.day} {value.strftime('%b %Y, %H:%M')}"
