"""Building test DICOM files from real photographs (never stored in the repository)."""

from __future__ import annotations

from pathlib import Path

from pydicom.dataset import Dataset

from dicom_gateway.photos import photo_to_dataset


def write_photo_dicom(photo: Path, target: Path, **kwargs: object) -> Dataset:
    ds = photo_to_dataset(photo, **kwargs)  # type: ignore[arg-type]
    ds.save_as(target, enforce_file_format=True)
    return ds
