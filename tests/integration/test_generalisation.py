"""The referral per source and with each source held out, on generated photographs and on
generated features (no real data needed)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ml.data import Sample, near_duplicate_groups
from ml.generalisation import HeadsOnFeatures, markdown, source_report
from ml.train import TrainConfig
from services.taxonomy.tree import load_taxonomy
from tests.service_harness import eyescreen

pytestmark = pytest.mark.slow


def _samples(n_per_source: int, shift: dict[str, float]) -> tuple[list[Sample], np.ndarray]:
    """Three sources; a disease moves one feature direction; a source moves another (camera)."""
    rng = np.random.default_rng(0)
    samples, rows = [], []
    for source, offset in shift.items():
        for i in range(n_per_source):
            sick = (i // 2) % 2 == 0  # both eyes of a patient alike: healthy patients exist
            codes = {"F.GLAU", "F.GLAU.GLAU"} if sick else {"F.NOR", "F.NOR.NOR"}
            samples.append(
                Sample(
                    Path(f"/{source}/{i}.png"),
                    f"{source}-{i // 2}",
                    str(i % 2),
                    frozenset(codes),
                    source,
                )
            )
            vector = rng.normal(0, 1, 32)
            vector[0] += 3.0 if sick else -3.0
            vector[1] += offset
            rows.append(vector)
    return samples, np.array(rows, np.float32)[None]


def test_source_held_out_figures_show_the_camera_the_model_never_saw(one_thread: None) -> None:
    """Pooled CV hides a source whose camera moves the disease direction; holding it out
    shows it, per eye and per patient, with Wilson intervals, and names the worst source."""
    samples, features = _samples(40, {"a": 0.0, "b": 1.0, "c": -1.0})
    # source c's camera pushes every photograph along the disease direction: its normals
    # look diseased to a model that never saw that camera
    features[0, 80:, 0] += 5.0
    taxonomy = load_taxonomy("fundus")
    not_assessed = frozenset(
        c for c in taxonomy.codes if c not in {"F.GLAU", "F.GLAU.GLAU", "F.NOR", "F.NOR.NOR"}
    )
    config = TrainConfig(head_epochs=30, hidden=16, device="cpu")
    recipe = HeadsOnFeatures(taxonomy, config, features)
    report = source_report(samples, taxonomy, recipe, not_assessed, 0.9, k=3)
    held = report["source_held_out"]
    assert set(held) == set(report["per_source"]) == {"a", "b", "c"}
    assert report["worst_source"]["source"] == "c"
    assert held["c"]["eye"]["specificity"]["estimate"] < 0.3
    assert held["a"]["eye"]["specificity"]["estimate"] > 0.7
    assert held["c"]["patient"]["specificity"]["estimate"] < 0.3
    for block in (report["pooled"], *held.values()):
        for unit in ("eye", "patient"):
            sens = block[unit]["sensitivity"]
            assert sens["low"] - 1e-9 <= sens["estimate"] <= sens["high"] + 1e-9
        assert block["referral_auc"] is not None
    assert held["c"]["eye"]["n_negative"] == 20 and held["c"]["patient"]["n_positive"] == 10
    # the same held-out model, recalibrated on the site's own eyes: the camera's shift is a
    # shift, the ranking survives it, and the site's normals are no longer referred
    recalibrated = report["site_recalibrated"]["c"]
    assert recalibrated["eye"]["specificity"]["estimate"] > 0.7
    assert recalibrated["eye"]["sensitivity"]["estimate"] >= 0.8
    assert 24 <= recalibrated["calibration_eyes"] <= 29  # two of its three folds (40 eyes)
    rows = [line for line in markdown(report).splitlines() if line.startswith("| ")]
    assert rows[2].startswith("| worst source held out | c | eye |")  # after header and rule
    assert len(recalibrated["calibration_eyes_per_fold"]) == 3


def test_near_duplicates_under_two_ids_share_a_group() -> None:
    features = np.array([[1.0, 0.0], [0.999, 0.01], [0.0, 1.0]], np.float32)
    assert near_duplicate_groups(features, ["p2", "p1", "p3"]) == ["p1", "p1", "p3"]


def _no_nan(constant: str) -> None:
    pytest.fail(f"{constant} is not JSON (R's jsonlite refuses it)")


def test_cross_validate_sources_command_on_generated_photographs(tmp_path: Path) -> None:
    """The command end to end: a feature store, two sources, one held out at a time."""
    rng = np.random.default_rng(0)
    rows = ["file,patient_id,eye,source,folder_label,odir_keywords"]
    for i in range(48):
        source = ("odir", "eyepacs")[i % 2]
        label = ("glaucoma", "normal")[(i // 2) % 2]
        tone = (150, 60, 40) if label == "glaucoma" else (60, 90, 150)
        pixels = np.clip(rng.normal(tone, 25, (48, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,p{i // 4},{i % 4},{source},{label},")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    args = [
        "cross-validate-sources",
        "--manifest", str(tmp_path / "m.csv"),
        "--backbone", "efficientnet_lite0",
        "--image-size", "64",
        "--head-epochs", "3",
        "--folds", "2",
        "--min-positive", "5",
        "--target-sensitivity", "0.9",
        "--features", str(tmp_path / "features"),
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    env = dict(os.environ, EYESCREEN_DATA_DIR=str(tmp_path / "var"))
    result = eyescreen(*args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads((tmp_path / "out" / "sources.json").read_text(), parse_constant=_no_nan)
    assert set(report["source_held_out"]) == {"eyepacs", "odir"}
    assert report["pooled"]["eye"]["n_positive"] == 24
    assert (
        report["pooled"]["patient"]["n_positive"] + report["pooled"]["patient"]["n_negative"] == 12
    )
    assert "worst source held out" in result.stdout
    assert (tmp_path / "out" / "sources.png").read_bytes()[:4] == b"\x89PNG"
    stored = list((tmp_path / "features").glob("*/part-*.npy"))
    assert len(stored) == 1  # the backbone ran once per photograph
    again = eyescreen(*args, "--only-stored", env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert list((tmp_path / "features").glob("*/part-*.npy")) == stored


def test_procedure_check_compares_the_promise_with_new_patients(one_thread: None) -> None:
    """Outer patient folds: the nested CV's promise on the rest, and what the shipped procedure
    (heads on all the rest, thresholds from its out-of-fold predictions) gives the new ones."""
    from ml.generalisation import procedure_check

    samples, features = _samples(30, {"a": 0.0, "b": 1.0, "c": -1.0})
    taxonomy = load_taxonomy("fundus")
    not_assessed = frozenset(
        c for c in taxonomy.codes if c not in {"F.GLAU", "F.GLAU.GLAU", "F.NOR", "F.NOR.NOR"}
    )
    config = TrainConfig(head_epochs=20, hidden=16, device="cpu")
    recipe = HeadsOnFeatures(taxonomy, config, features)
    result = procedure_check(samples, taxonomy, recipe, not_assessed, 0.9, k=3)
    delivered = result["delivered_to_new_patients"]
    assert delivered["eye"]["n_positive"] + delivered["eye"]["n_negative"] == 90  # every eye once
    assert delivered["patient"]["n_positive"] + delivered["patient"]["n_negative"] == 45
    promise = result["promised_by_nested_cv"]["eye"]
    assert 0 <= promise["specificity"] <= 1 and 0 <= promise["sensitivity"] <= 1


def test_recipes_compared_on_the_same_folds_from_cached_activations(tmp_path: Path) -> None:
    """--camera-views caches the activations below the last block once per photograph and
    view; the frozen recipe, the frozen one on camera views and the last-block fine-tuning
    are cross-validated on the same folds and set side by side."""
    rng = np.random.default_rng(1)
    rows = ["file,patient_id,eye,source,folder_label,odir_keywords"]
    for i in range(40):
        source = ("odir", "eyepacs")[i % 2]
        label = ("glaucoma", "normal")[(i // 4) % 2]  # both eyes of a patient alike
        tone = (150, 60, 40) if label == "glaucoma" else (60, 90, 150)
        pixels = np.clip(rng.normal(tone, 25, (40, 40, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{source}{i // 4},{(i // 2) % 2},{source},{label},")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    args = [
        "cross-validate-sources",
        "--manifest", str(tmp_path / "m.csv"),
        "--backbone", "efficientnet_lite0",
        "--image-size", "64",
        "--head-epochs", "3",
        "--folds", "2",
        "--min-positive", "5",
        "--target-sensitivity", "0.9",
        "--features", str(tmp_path / "features"),
        "--camera-views", "3",
        "--per-source", "16",
        "--recipe", "frozen", "--recipe", "frozen-camera-views", "--recipe", "last-block",
        "--finetune-epochs", "2",
        "--out", str(tmp_path / "out"),
    ]  # fmt: skip
    env = dict(os.environ, EYESCREEN_DATA_DIR=str(tmp_path / "var"))
    result = eyescreen(*args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    reports = {
        name: json.loads((tmp_path / "out" / name / "sources.json").read_text())
        for name in ("frozen", "frozen-camera-views", "last-block")
    }
    assert reports["last-block"]["finetune_epochs"] == 2
    for report in reports.values():  # the subsample: 8 patients (16 photographs) per source
        assert report["samples"] == 32 and report["patients"] == 16
        assert set(report["source_held_out"]) == {"eyepacs", "odir"}
    comparison = (tmp_path / "out" / "comparison.md").read_text()
    assert "| last-block |" in comparison and "| frozen-camera-views |" in comparison
    assert (tmp_path / "out" / "sources.png").read_bytes()[:4] == b"\x89PNG"  # one, all recipes
    stored = list((tmp_path / "features").glob("*-lower-*/part-*.npy"))
    assert len(stored) == 1 and np.load(stored[0]).shape[:2] == (3, 32)  # views, photographs
