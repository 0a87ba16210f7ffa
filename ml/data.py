"""Training manifests: reading, label mapping to a taxonomy, merging rows of one eye.

Manifest columns (``../shared/data/fundus/manifest.csv``): file, patient_id, eye, source,
folder_label, odir_keywords (``;``-separated). A malformed row raises ``ManifestError`` naming
its line. Labels become taxonomy codes through a mapping file (``services/taxonomies``); every
positive code's ancestors are positive too.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from services.errors import ManifestError
from services.taxonomy import Taxonomy

REQUIRED_COLUMNS = ("file", "patient_id", "folder_label")


@dataclass(frozen=True)
class Sample:
    path: Path
    patient_id: str
    eye: str
    codes: frozenset[str]


def load_label_map(taxonomy_name: str) -> dict[str, Any]:
    resource = resources.files("services.taxonomies").joinpath(f"{taxonomy_name}_labels.json")
    if not resource.is_file():
        raise ManifestError(f"no label mapping for taxonomy {taxonomy_name!r}")
    return dict(json.loads(resource.read_text()))


def _codes_for_row(row: dict[str, str], label_map: dict[str, Any], line: int) -> set[str]:
    folder = row["folder_label"].strip()
    if folder not in label_map["folder_label"]:
        raise ManifestError(f"line {line}: unknown folder_label {folder!r}")
    codes = set(label_map["folder_label"][folder])
    ignored = set(label_map.get("ignore", []))
    for keyword in filter(None, (k.strip() for k in (row.get("odir_keywords") or "").split(";"))):
        if keyword in ignored:
            continue
        if keyword not in label_map["odir_keywords"]:
            raise ManifestError(f"line {line}: unknown keyword {keyword!r}; map it or ignore it")
        codes.update(label_map["odir_keywords"][keyword])
    return codes


def read_manifest(manifest: Path, images_dir: Path, taxonomy: Taxonomy) -> list[Sample]:
    """One sample per eye; rows of the same eye are merged into one multi-label target."""
    label_map = load_label_map(taxonomy.name)
    normal_leaves = {n.code for n in taxonomy.nodes if n.normal}
    merged: dict[tuple[str, str], tuple[Path, set[str]]] = {}
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ManifestError(f"line 1: missing column(s) {', '.join(missing)}")
        for line, row in enumerate(reader, start=2):
            if not row.get("file") or not row.get("patient_id"):
                raise ManifestError(f"line {line}: file and patient_id must not be empty")
            if None in row:
                raise ManifestError(f"line {line}: more fields than the header has")
            codes = _codes_for_row(row, label_map, line)
            for code in codes:
                taxonomy.node(code)  # unknown codes in the mapping fail loudly
            eye = (row.get("eye") or "").strip()
            key = (row["patient_id"].strip(), eye or row["file"])
            path = images_dir / row["file"]
            if key in merged:
                merged[key][1].update(codes)
            else:
                merged[key] = (path, codes)
    samples = []
    for (patient, eye), (path, codes) in merged.items():
        if codes - normal_leaves:
            codes -= normal_leaves  # an eye with a disease is not also normal
        samples.append(Sample(path, patient, eye, frozenset(taxonomy.with_ancestors(codes))))
    return samples


def targets(samples: list[Sample], taxonomy: Taxonomy) -> list[np.ndarray]:
    """Per level, an (n_samples, n_classes) 0/1 matrix."""
    out = []
    for level in range(1, taxonomy.depth + 1):
        codes = taxonomy.level_codes(level)
        out.append(np.array([[c in s.codes for c in codes] for s in samples], dtype=np.float32))
    return out


def patient_folds(
    samples: list[Sample], taxonomy: Taxonomy, k: int = 5, seed: int = 0
) -> np.ndarray:
    """Fold per sample: a patient's eyes share a fold; stratified on the deepest labels."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    patients = sorted({s.patient_id for s in samples})
    index = {p: i for i, p in enumerate(patients)}
    deepest = targets(samples, taxonomy)[-1]
    per_patient = np.zeros((len(patients), deepest.shape[1]), dtype=np.float32)
    for sample, row in zip(samples, deepest, strict=True):
        per_patient[index[sample.patient_id]] = np.maximum(
            per_patient[index[sample.patient_id]], row
        )
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    patient_fold = np.zeros(len(patients), dtype=np.int64)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(patients)), per_patient)):
        patient_fold[test] = fold
    return np.array([patient_fold[index[s.patient_id]] for s in samples])
