"""Folds keep a patient's eyes together, and photographs that look like one eye filed under
two patient ids too (issue 20 §2): the shipped recipe's own cross-validation, whose
out-of-fold predictions choose the operating point, groups them as the source figures do."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml.data import Sample, near_duplicate_groups, patient_folds
from ml.generalisation import HeadsOnFeatures
from ml.last_block_model import cross_validated_meta
from ml.oof_file import load_out_of_fold
from ml.train import TrainConfig
from services.taxonomy.tree import load_taxonomy

TAXONOMY = load_taxonomy("fundus")
GLAUCOMA = frozenset({"F.GLAU", "F.GLAU.GLAU"})
NORMAL = frozenset({"F.NOR", "F.NOR.NOR"})
COPIES = 6  # patients whose photographs were filed again under a second id


def _eyes(patients: int) -> tuple[list[Sample], np.ndarray]:
    """Both eyes of each patient, two sources, glaucoma along feature 0; then the first
    COPIES patients' photographs once more under new ids (the same features: one eye)."""
    rng = np.random.default_rng(5)
    samples, rows = [], []
    for p in range(patients):
        sick = p % 2 == 1
        for eye in ("right", "left"):
            samples.append(
                Sample(
                    Path(f"/site/{p}-{eye}.jpg"),
                    f"p{p:03d}",
                    eye,
                    GLAUCOMA if sick else NORMAL,
                    ("a", "b")[(p // 2) % 2],
                )
            )
            vector = rng.normal(0, 1, 16)
            vector[0] += 2.5 if sick else -2.5
            rows.append(vector)
    for n in range(2 * COPIES):
        original = samples[n]
        samples.append(
            Sample(
                Path(f"/site/copy-{n}.jpg"),
                f"q{n // 2:03d}",
                original.eye,
                original.codes,
                original.source,
            )
        )
        rows.append(rows[n])
    return samples, np.array(rows, np.float32)


def _together(folds: np.ndarray) -> list[bool]:
    """Per copied photograph: is it in its original's fold?"""
    return [bool(folds[n] == folds[-2 * COPIES + n]) for n in range(2 * COPIES)]


def test_a_group_of_patient_ids_keeps_to_one_fold() -> None:
    samples, features = _eyes(40)
    patients = [s.patient_id for s in samples]
    groups = near_duplicate_groups(features, patients)
    assert len(set(groups)) == len(set(patients)) - COPIES
    assert all(_together(patient_folds(samples, TAXONOMY, 5, 0, groups)))
    # by patient id alone, the copies land in other folds than their originals
    assert not all(_together(patient_folds(samples, TAXONOMY, 5, 0)))


def test_patient_folds_without_groups_are_the_folds_of_the_patient_ids_as_groups() -> None:
    samples, _ = _eyes(40)
    patients = [s.patient_id for s in samples]
    alone = patient_folds(samples, TAXONOMY, 5, 3)
    assert (alone == patient_folds(samples, TAXONOMY, 5, 3, patients)).all()
    for patient in set(patients):
        assert len({int(f) for f, p in zip(alone, patients, strict=True) if p == patient}) == 1


def test_the_shipped_recipes_folds_keep_one_eye_under_two_ids_together(
    tmp_path: Path, one_thread: None
) -> None:
    samples, features = _eyes(40)
    recipe = HeadsOnFeatures(
        TAXONOMY, TrainConfig(head_epochs=5, hidden=8, device="cpu"), features[None]
    )
    cv = cross_validated_meta(
        samples,
        TAXONOMY,
        recipe,
        5,
        0.9,
        5,
        oof_out=tmp_path / "oof.npz",  # type: ignore[arg-type]
    )
    assert cv["near_duplicates_grouped"] is True
    assert cv["fold_groups"] == cv["patients"] - COPIES == 40
    folds = load_out_of_fold(tmp_path / "oof.npz", TAXONOMY).folds
    assert all(_together(folds))
