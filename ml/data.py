"""Training manifests: reading, label mapping to a taxonomy, merging rows of one eye.

Manifest columns (``../shared/data/fundus/manifest.csv``): file, patient_id, eye, source,
folder_label, odir_keywords (``;``-separated); ``group_id``, ``label`` and ``source_repo`` are
taken for patient_id, folder_label and source (the anterior manifests' names). A manifest may
carry ``labels`` (``;``-separated, the publisher's words, ``../shared/data/fundus-external``)
instead of or beside ``folder_label``; ``label_note`` is kept on the sample. A malformed row
raises ``ManifestError`` naming its line. Labels become taxonomy codes through a label map (the
package's ``services/taxonomy/<taxonomy>_labels.json``, or a hospital's own file with the
same keys: ``folder_label``, ``odir_keywords``, ``ignore`` for keywords that add nothing,
``skip_labels`` for folder labels whose rows are left out, ``labels`` with one word map per
source, since one word means different things at different hospitals); every positive code's
ancestors are positive too. A row whose labels give no code at all (e.g. a diabetic
retinopathy grade recorded as unknown, nothing else) is left out: it is neither diseased nor
normal, and counting it as a negative would flatter specificity.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from services.kernel.errors import ManifestError
from services.taxonomy.tree import Taxonomy

log = logging.getLogger(__name__)

# Each column and the other names it is known by, first found wins.
COLUMN_ALIASES = {
    "file": ("file",),
    "patient_id": ("patient_id", "group_id"),
    "folder_label": ("folder_label", "label"),
    "source": ("source", "source_repo"),
}
REQUIRED_COLUMNS = ("file", "patient_id")


@dataclass(frozen=True)
class Sample:
    path: Path
    patient_id: str
    eye: str
    codes: frozenset[str]
    source: str = ""
    note: str = ""


def load_label_map(taxonomy_name: str, path: Path | None = None) -> dict[str, Any]:
    """The hospital's label map file if given, else the package's one for the taxonomy."""
    if path is not None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ManifestError(f"{path}: cannot read the label map: {exc}") from exc
        if not isinstance(data, dict) or not isinstance(data.get("folder_label"), dict):
            raise ManifestError(f"{path}: a label map needs a 'folder_label' object")
        return data
    resource = resources.files("services.taxonomy").joinpath(f"{taxonomy_name}_labels.json")
    if not resource.is_file():
        raise ManifestError(f"no label mapping for taxonomy {taxonomy_name!r}")
    return dict(json.loads(resource.read_text()))


def _column_names(fieldnames: list[str]) -> dict[str, str]:
    found = {}
    for column, aliases in COLUMN_ALIASES.items():
        for alias in aliases:
            if alias in fieldnames:
                found[column] = alias
                break
    missing = [c for c in REQUIRED_COLUMNS if c not in found]
    if "folder_label" not in found and "labels" not in fieldnames:
        missing.append("folder_label (or labels)")
    if missing:
        raise ManifestError(f"line 1: missing column(s) {', '.join(missing)}")
    return found


def _codes_for_words(row: dict[str, str], label_map: dict[str, Any], line: int) -> set[str]:
    """The ``labels`` column through the label map's word map for the row's source."""
    source = (row.get("source") or "").strip()
    words = label_map.get("labels", {}).get(source)
    if words is None:
        raise ManifestError(f"line {line}: no 'labels' map for source {source!r} in the label map")
    codes: set[str] = set()
    for word in filter(None, (w.strip() for w in (row.get("labels") or "").split(";"))):
        if word not in words:
            raise ManifestError(f"line {line}: unknown label {word!r} of source {source!r}")
        codes.update(words[word])
    return codes


def _codes_for_row(row: dict[str, str], label_map: dict[str, Any], line: int) -> set[str]:
    if not row.get("folder_label", "").strip():
        return _codes_for_words(row, label_map, line)
    folder = row["folder_label"].strip()
    if folder not in label_map["folder_label"]:
        raise ManifestError(
            f"line {line}: unknown folder_label {folder!r}; map it in the label map, or list it "
            "under 'skip_labels'"
        )
    codes = set(label_map["folder_label"][folder])
    ignored = set(label_map.get("ignore", []))
    for keyword in filter(None, (k.strip() for k in (row.get("odir_keywords") or "").split(";"))):
        if keyword in ignored:
            continue
        if keyword not in label_map.get("odir_keywords", {}):
            raise ManifestError(f"line {line}: unknown keyword {keyword!r}; map it or ignore it")
        codes.update(label_map["odir_keywords"][keyword])
    return codes


def read_manifest(
    manifest: Path, images_dir: Path, taxonomy: Taxonomy, label_map_path: Path | None = None
) -> list[Sample]:
    """One sample per eye; rows of the same eye are merged into one multi-label target."""
    label_map = load_label_map(taxonomy.name, label_map_path)
    skipped_labels = set(label_map.get("skip_labels", []))
    normal_leaves = {n.code for n in taxonomy.nodes if n.normal}
    merged: dict[tuple[str, str], tuple[Path, set[str], str, str]] = {}
    unlabelled: list[int] = []
    with manifest.open(newline="") as handle:
        reader = csv.DictReader(handle)
        names = _column_names(list(reader.fieldnames or []))
        for line, raw in enumerate(reader, start=2):
            if None in raw:
                raise ManifestError(f"line {line}: more fields than the header has")
            row = dict(raw) | {column: raw.get(alias) or "" for column, alias in names.items()}
            row.setdefault("folder_label", "")
            if not row["file"] or not row["patient_id"]:
                raise ManifestError(f"line {line}: file and patient_id must not be empty")
            if row["folder_label"].strip() in skipped_labels:
                continue
            codes = _codes_for_row(row, label_map, line)
            if not codes:
                unlabelled.append(line)
                continue
            for code in codes:
                taxonomy.node(code)  # unknown codes in the mapping fail loudly
            eye = (row.get("eye") or "").strip()
            key = (row["patient_id"].strip(), eye or row["file"])
            path = images_dir / row["file"]
            if key in merged:
                merged[key][1].update(codes)
            else:
                note = (row.get("label_note") or "").strip()
                merged[key] = (path, codes, (row.get("source") or "").strip(), note)
    if unlabelled:
        shown = ", ".join(map(str, unlabelled[:10])) + (", …" if len(unlabelled) > 10 else "")
        log.info(
            "%s: %d row(s) whose labels map to no taxonomy code left out (lines %s; the label "
            "map's words decide)",
            manifest,
            len(unlabelled),
            shown,
        )
    samples = []
    for (patient, eye), (path, codes, source, note) in merged.items():
        if codes - normal_leaves:
            codes -= normal_leaves  # an eye with a disease is not also normal
        samples.append(
            Sample(path, patient, eye, frozenset(taxonomy.with_ancestors(codes)), source, note)
        )
    return samples


def source_folds(samples: list[Sample]) -> tuple[np.ndarray, list[str]]:
    """One fold per source (each source held out in turn), and the sources in fold order."""
    sources = sorted({s.source for s in samples})
    return np.array([sources.index(s.source) for s in samples]), sources


def targets(samples: list[Sample], taxonomy: Taxonomy) -> list[np.ndarray]:
    """Per level, an (n_samples, n_classes) 0/1 matrix."""
    out = []
    for level in range(1, taxonomy.depth + 1):
        codes = taxonomy.level_codes(level)
        out.append(np.array([[c in s.codes for c in codes] for s in samples], dtype=np.float32))
    return out


def patient_folds(
    samples: list[Sample],
    taxonomy: Taxonomy,
    k: int = 5,
    seed: int = 0,
    groups: list[str] | None = None,
) -> np.ndarray:
    """Fold per sample: a patient's eyes share a fold, and so do the samples of one group
    (``near_duplicate_groups``: one eye filed under two ids); stratified on the deepest labels."""
    from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

    keys = groups if groups is not None else [s.patient_id for s in samples]
    patients = sorted(set(keys))
    index = {p: i for i, p in enumerate(patients)}
    deepest = targets(samples, taxonomy)[-1]
    per_patient = np.zeros((len(patients), deepest.shape[1]), dtype=np.float32)
    for key, row in zip(keys, deepest, strict=True):
        per_patient[index[key]] = np.maximum(per_patient[index[key]], row)
    splitter = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    patient_fold = np.zeros(len(patients), dtype=np.int64)
    for fold, (_, test) in enumerate(splitter.split(np.zeros(len(patients)), per_patient)):
        patient_fold[test] = fold
    return np.array([patient_fold[index[key]] for key in keys])


def near_duplicate_groups(
    features: np.ndarray, patients: list[str], cosine: float = 0.98
) -> list[str]:
    """Per sample, a group key: its patient id, or the smallest id among photographs whose
    backbone features have cosine >= ``cosine`` with it (transitively), so that one eye
    filed under two ids keeps to one fold."""
    unit = features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)
    ids = sorted(set(patients))
    parent = {p: p for p in ids}

    def root(p: str) -> str:
        while parent[p] != p:
            parent[p] = parent[parent[p]]
            p = parent[p]
        return p

    for start in range(0, len(unit), 512):
        sims = unit[start : start + 512] @ unit.T
        rows, cols = np.nonzero(sims >= cosine)
        for r, c in zip(rows + start, cols, strict=True):
            a, b = root(patients[r]), root(patients[c])
            if a != b:
                parent[max(a, b)] = min(a, b)
    return [root(p) for p in patients]


def patients_per_source(samples: list[Sample], photographs: int, seed: int = 0) -> list[Sample]:
    """A seeded subsample of whole patients, about ``photographs`` per source (a patient is
    taken while the source has fewer), in the samples' order: every source weighs in, and
    no patient is split between the subsample and the rest."""
    rng = np.random.default_rng(seed)
    by_source: dict[str, dict[str, int]] = {}
    for s in samples:
        counts = by_source.setdefault(s.source, {})
        counts[s.patient_id] = counts.get(s.patient_id, 0) + 1
    chosen: set[tuple[str, str]] = set()
    for source, counts in sorted(by_source.items()):
        patients = sorted(counts)
        taken = 0
        for i in rng.permutation(len(patients)):
            if taken >= photographs:
                break
            chosen.add((source, patients[i]))
            taken += counts[patients[i]]
    return [s for s in samples if (s.source, s.patient_id) in chosen]


def held_out_patients(
    samples: list[Sample], fraction: float, seed: int = 0
) -> tuple[list[Sample], list[Sample]]:
    """A seeded split of whole patients, ``fraction`` of each source's patients held out:
    (trained on, held out), each in the samples' order. A source's photographs stay in
    both parts, so the held-out part measures new patients of every camera."""
    if not 0 < fraction < 1:
        raise ValueError(f"the fraction held out must lie between 0 and 1, not {fraction}")
    rng = np.random.default_rng(seed)
    held: set[tuple[str, str]] = set()
    for source in sorted({s.source for s in samples}):
        patients = sorted({s.patient_id for s in samples if s.source == source})
        count = round(len(patients) * fraction)
        held.update((source, patients[i]) for i in rng.permutation(len(patients))[:count])
    trained = [s for s in samples if (s.source, s.patient_id) not in held]
    return trained, [s for s in samples if (s.source, s.patient_id) in held]
