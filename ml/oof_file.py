"""A training run's out-of-fold predictions, kept in one file.

Choosing an operating point needs only these (raw probabilities of every eye from the fold
that did not train on it, the labels, folds, patients and sources), not the photographs or
the network: with the file, another target or a per-source floor is measured in seconds
(``scripts/operating_point_floors.py``) where retraining takes an hour on this machine.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ml.crossval import flat_levels
from ml.data import Sample, targets
from services.taxonomy.tree import Taxonomy


@dataclass(frozen=True)
class OutOfFold:
    codes: tuple[str, ...]  # taxonomy order, every level
    raw: np.ndarray  # (eyes, codes) uncalibrated probabilities
    labels: np.ndarray  # (eyes, codes) 0/1
    folds: np.ndarray  # (eyes,)
    patients: list[str]
    sources: list[str]
    not_assessed: frozenset[str]


def save_out_of_fold(
    path: Path,
    samples: list[Sample],
    taxonomy: Taxonomy,
    oof: list[np.ndarray],
    folds: np.ndarray,
    not_assessed: frozenset[str],
) -> None:
    """Write the run's out-of-fold predictions (per level, as ``out_of_fold`` gives them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as handle:  # np.savez would add ".npz" to a name without it
        np.savez_compressed(
            handle,
            codes=np.array(taxonomy.codes),
            raw=flat_levels(oof),
            labels=flat_levels(targets(samples, taxonomy)),
            folds=np.asarray(folds),
            patients=np.array([s.patient_id for s in samples]),
            sources=np.array([s.source for s in samples]),
            not_assessed=np.array(sorted(not_assessed), dtype=str),
        )


def load_out_of_fold(path: Path, taxonomy: Taxonomy) -> OutOfFold:
    """Read a file ``save_out_of_fold`` wrote; its classes must be the taxonomy's."""
    with np.load(path, allow_pickle=False) as data:
        codes = tuple(str(c) for c in data["codes"])
        if codes != tuple(taxonomy.codes):
            raise ValueError(f"{path}: classes {codes} are not taxonomy {taxonomy.name}'s")
        return OutOfFold(
            codes=codes,
            raw=data["raw"],
            labels=data["labels"],
            folds=data["folds"],
            patients=[str(p) for p in data["patients"]],
            sources=[str(s) for s in data["sources"]],
            not_assessed=frozenset(str(c) for c in data["not_assessed"]),
        )
