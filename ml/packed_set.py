"""A training set packed to travel: each eye's photograph already cropped, squared and resized
(the first steps of ``ml.preprocess``), as JPEG, beside one CSV of its taxonomy codes.

A lent GPU machine reaches neither ``../shared`` nor a package registry, and what travels to
it is limited in size; 1,500 photographs at 320 px come to about 30 MB. The labels travel as
taxonomy codes, so no label map is needed there. Cropping again is a no-op: the packed square
has no black frame left to find but the padding, which squaring restores.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ml.data import Sample
from ml.preprocess import Preprocessing, load_rgb, to_square_image

COLUMNS = ("file", "patient_id", "eye", "source", "codes", "label_note")


def write_packed(samples: Sequence[Sample], folder: Path, spec: Preprocessing) -> None:
    """Write ``folder``/images/*.jpg and ``folder``/samples.csv for ``samples``."""
    (folder / "images").mkdir(parents=True, exist_ok=True)
    with (folder / "samples.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for i, s in enumerate(tqdm(samples, desc="packing", unit="photo")):
            name = f"images/{i:05d}.jpg"
            square = to_square_image(load_rgb(str(s.path)), spec)
            square.save(folder / name, quality=92)
            codes = ";".join(sorted(s.codes))
            writer.writerow((name, s.patient_id, s.eye, s.source, codes, s.note))


def read_packed(folder: Path) -> list[Sample]:
    with (folder / "samples.csv").open(newline="") as handle:
        return [
            Sample(
                folder / row["file"],
                row["patient_id"],
                row["eye"],
                frozenset(filter(None, row["codes"].split(";"))),
                row["source"],
                row["label_note"],
            )
            for row in csv.DictReader(handle)
        ]


def load_squares(
    samples: Sequence[Sample], spec: Preprocessing, device: torch.device
) -> torch.Tensor:
    """(n, 3, S, S) 8-bit images on ``device``, pre-processed as the model reads them."""
    out = torch.empty((len(samples), 3, spec.size, spec.size), dtype=torch.uint8)
    for i, s in enumerate(tqdm(samples, desc="photographs", unit="photo")):
        square = np.asarray(to_square_image(load_rgb(str(s.path)), spec))
        out[i] = torch.from_numpy(square.copy()).permute(2, 0, 1)
    return out.to(device)
