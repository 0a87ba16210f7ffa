"""The guard against the unfamiliar on real photographs: fitted on fundus photographs of three
sources, it lets other fundus photographs through and stops anterior photos sent as fundus."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from ml.checkpoint import load_checkpoint, save_checkpoint
from ml.data import Sample
from ml.guard import Guard, fit_for_checkpoint, fit_guard
from ml.predictor import Predictor, untrained_checkpoint
from ml.preprocess import load_rgb
from tests.conftest import ANTERIOR, FUNDUS, needs_shared_data

pytestmark = pytest.mark.slow


def _fundus(per_source: int) -> list[Sample]:
    taken: dict[str, int] = {}
    samples = []
    with (FUNDUS / "manifest.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            if taken.get(row["source"], 0) < per_source:
                taken[row["source"]] = taken.get(row["source"], 0) + 1
                samples.append(
                    Sample(
                        FUNDUS / row["file"],
                        row["patient_id"],
                        row["eye"],
                        frozenset(),
                        row["source"],
                    )
                )
    return samples


def test_guard_fires_on_an_anterior_photo_sent_as_fundus(tmp_path: Path, one_thread: None) -> None:
    needs_shared_data()
    base = untrained_checkpoint("fundus", tmp_path / "models")
    fundus = _fundus(16)
    fitted = [s for i, s in enumerate(fundus) if i % 4]
    unseen = [s for i, s in enumerate(fundus) if not i % 4]
    meta, model = load_checkpoint(base)
    meta["guard"] = fit_for_checkpoint(base, fitted, tmp_path / "features", 0.99)
    assert set(meta["guard"]["fired_on_held_out_sources"]) == {"eyepacs", "odir", "retina_dataset"}
    guarded = tmp_path / "guarded.pt"
    save_checkpoint(guarded, meta, model)

    predictor = Predictor.load(guarded, "cpu")
    anterior = sorted((ANTERIOR / "images").glob("*slit-lamp*"))[:4]
    reads = predictor.read([load_rgb(str(p)) for p in anterior])
    assert all(r.unfamiliar for r in reads), [r.distance for r in reads]
    familiar = predictor.read([load_rgb(str(s.path)) for s in unseen])
    assert np.mean([r.unfamiliar for r in familiar]) <= 0.25, [r.distance for r in familiar]
    assert min(r.distance or 0 for r in reads) > max(r.distance or 0 for r in familiar)
    # the probabilities are those predict gives: the guard only adds its verdict
    assert reads[0].probabilities == predictor.predict([load_rgb(str(anterior[0]))])[0]
    assert predictor.provenance(0.1, 1)["guard_threshold"] == meta["guard"]["threshold"]


def test_guard_round_trips_through_the_checkpoint_meta() -> None:
    rng = np.random.default_rng(0)
    train = rng.normal(0, 1, (200, 16)) + 4.0  # a cluster, as features of one kind of photo are
    guard = fit_guard(train, reference=100).with_threshold(0.5)
    again = Guard.from_meta(guard.to_meta())
    far = -train[:5]  # pointing away from every training photograph
    assert again.reference.shape == (100, 16)
    assert np.allclose(again.distance(far), guard.distance(far), atol=1e-3)
    assert again.unfamiliar(far).all() and not again.unfamiliar(train[:50]).mean() > 0.1
