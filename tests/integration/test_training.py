"""A small network learns from a few dozen real fundus photographs, on the CPU, quickly."""

from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from ml import train as train_module
from ml.data import read_manifest, targets
from ml.pipeline import evaluate_checkpoint, train_final
from ml.predictor import Predictor
from ml.preprocess import load_rgb
from ml.train import TrainConfig
from services.taxonomy.tree import load_taxonomy
from tests.conftest import FUNDUS, needs_shared_data
from tests.service_harness import eyescreen

pytestmark = pytest.mark.slow


def small_manifest(tmp_path: Path, per_class: int = 12) -> Path:
    rows, seen = [], {}
    with (FUNDUS / "manifest.csv").open() as handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames
        for row in reader:
            label = row["folder_label"]
            if seen.get(label, 0) < per_class:
                seen[label] = seen.get(label, 0) + 1
                rows.append(row)
    path = tmp_path / "manifest.csv"
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header or [])
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_small_network_learns_from_real_photographs(tmp_path: Path) -> None:
    needs_shared_data()
    started = time.monotonic()
    tree = load_taxonomy("fundus")
    samples = read_manifest(small_manifest(tmp_path), FUNDUS, tree)
    config = TrainConfig(head_epochs=40, unfreeze_steps=1, step_epochs=1, batch_size=16)
    out = tmp_path / "model.pt"
    sha, history = train_final(samples, tree, config, "fundus", out, "test")
    heads_loss = history[: config.head_epochs]
    assert heads_loss[-1] < 0.5 * heads_loss[0], heads_loss

    predictor = Predictor.load(out, "cpu")
    assert predictor.sha256 == sha
    rows = predictor.predict([load_rgb(str(s.path)) for s in samples])
    level1 = targets(samples, tree)[0]
    probs = np.array([[r[c] for c in tree.level_codes(1)] for r in rows])
    aucs = [
        roc_auc_score(level1[:, i], probs[:, i])
        for i in range(level1.shape[1])
        if 0 < level1[:, i].sum() < len(level1)
    ]
    assert np.mean(aucs) > 0.85, aucs
    assert time.monotonic() - started < 120


def test_interrupted_training_resumes_where_it_stopped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    needs_shared_data()
    tree = load_taxonomy("fundus")
    samples = read_manifest(small_manifest(tmp_path, per_class=4), FUNDUS, tree)
    config = TrainConfig(head_epochs=3, unfreeze_steps=2, step_epochs=1, batch_size=8)
    out, resume = tmp_path / "model.pt", tmp_path / "model.resume.pt"
    real_epoch = train_module._image_epoch
    calls: list[str] = []

    def interrupted(*args: object, **kwargs: object) -> float:
        calls.append(str(args[-1]))
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C during the second unfreezing step
        return real_epoch(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(train_module, "_image_epoch", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train_final(samples, tree, config, "fundus", out, "test", resume_path=resume)
    assert resume.exists() and not out.exists()
    calls.clear()
    _, history = train_final(samples, tree, config, "fundus", out, "test", resume_path=resume)
    assert calls == ["unfreeze 2.1"]  # step 1 and the head phase were not repeated
    assert len(history) == config.head_epochs + 2
    assert out.exists() and not resume.exists()


def test_evaluation_writes_tables_and_pictures(tmp_path: Path) -> None:
    needs_shared_data()
    tree = load_taxonomy("fundus")
    samples = read_manifest(small_manifest(tmp_path, per_class=8), FUNDUS, tree)
    shipped = Path(__file__).resolve().parents[2] / "ml" / "models" / "fundus.pt"
    evaluate_checkpoint(shipped, samples, tmp_path / "eval", "cpu")
    csv_rows = (tmp_path / "eval" / "metrics.csv").read_text().splitlines()
    assert len(csv_rows) == 1 + len(tree.codes) + tree.depth  # header, classes, averages
    for name in (
        "metrics.md",
        "roc_level2.png",
        "gradcam.png",
        "tsne.png",
        "referral.png",
    ):
        assert (tmp_path / "eval" / name).stat().st_size > 1000, name
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    referral = metrics["results"]["checkpoint"]["referral"]
    for unit in ("eye", "patient"):
        for measure in ("sensitivity", "specificity", "ppv", "npv"):
            value = referral[unit][measure]
            if value["n"]:  # an NPV has no eyes when every eye is referred
                assert value["low"] <= value["estimate"] <= value["high"]
            else:
                assert measure in ("ppv", "npv") and value["estimate"] is None
    assert referral["eye"]["n_positive"] + referral["eye"]["n_negative"] == len(samples)
    assert "Referral" in (tmp_path / "eval" / "metrics.md").read_text()
    by_source = metrics["results"]["checkpoint"]["referral_by_source"]
    assert set(by_source) == {s.source for s in samples}  # a camera it fails on shows
    counted = sum(f["eye"]["n_positive"] + f["eye"]["n_negative"] for f in by_source.values())
    assert counted == len(samples)


def test_cross_validate_command_on_generated_photographs(tmp_path: Path) -> None:
    """The whole command on a fresh clone's own images: --json, a label map, the referral
    operating point and the classes left unassessed."""
    rng = np.random.default_rng(0)
    rows = ["file,patient_id,folder_label"]
    for i in range(48):
        label = ("sick", "well")[i % 2]
        tone = (150, 60, 40) if label == "sick" else (60, 90, 150)
        pixels = np.clip(rng.normal(tone, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,p{i // 2},{label}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    (tmp_path / "labels.json").write_text(
        '{"folder_label": {"sick": ["A.OSD.CONJ"], "well": ["A.NOR.NOR"]}}'
    )
    args = [
        "cross-validate",
        "--taxonomy", "anterior",
        "--manifest", str(tmp_path / "m.csv"),
        "--label-map", str(tmp_path / "labels.json"),
        "--image-size", "64",
        "--head-epochs", "3",
        "--folds", "2",
        "--min-positive", "5",
        "--target-sensitivity", "0.9",
        "--device", "cpu",
        "--out", str(tmp_path / "cv"),
        "--json", str(tmp_path / "cv.json"),
    ]  # fmt: skip
    result = eyescreen(*args, env=dict(os.environ, EYESCREEN_DATA_DIR=str(tmp_path / "var")))
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "cv.json").read_text())
    assert "A.CAT.CAT" in metrics["assessment"]["not_assessed"]  # no photograph of it
    assert "A.OSD.CONJ" not in metrics["assessment"]["not_assessed"]
    point = metrics["operating_point"]
    assert point["scale"] == "calibrated" and "A.CAT.CAT" not in point["thresholds"]
    referral = metrics["results"]["hierarchical"]["referral"]["eye"]
    assert referral["n_positive"] == 24 and referral["n_negative"] == 24
    assert "Referral" in result.stdout and "(not assessed)" in result.stdout

    # the final model carries the operating point, calibration and the unassessed classes
    train = [
        arg for arg in args if arg not in ("--folds", "2", "--json", str(tmp_path / "cv.json"))
    ]
    train = [a for a in train if a not in ("--min-positive", "5", "--target-sensitivity", "0.9")]
    train[0] = "train"
    out = tmp_path / "model.pt"
    train[train.index("--out") + 1] = str(out)
    env = dict(os.environ, EYESCREEN_DATA_DIR=str(tmp_path / "var"))
    cache = str(tmp_path / "cache")
    trained = eyescreen(
        *train, "--thresholds-from", str(tmp_path / "cv.json"), "--cache-dir", cache, env=env
    )
    assert trained.returncode == 0, trained.stderr[-3000:]
    predictor = Predictor.load(out, "cpu")
    point = predictor.operating_point
    assert point.scale == "calibrated" and "A.CAT.CAT" in point.not_assessed
    assert dict(point.thresholds) == metrics["operating_point"]["thresholds"]
    [row] = predictor.predict([np.zeros((48, 48, 3), np.uint8)])
    assert set(row) == set(predictor.taxonomy.codes)
