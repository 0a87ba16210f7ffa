"""``eyescreen train-last-block`` end to end on generated photographs: a checkpoint the
service can load, its last block tuned and everything below it ImageNet's, an operating point
and a guard, and manifests of the patients held out that ``eyescreen evaluate`` reads."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml.checkpoint import backbone_tuned, load_checkpoint
from ml.efficientnet_lite import efficientnet_lite
from ml.oof_file import load_out_of_fold
from ml.predictor import Predictor
from ml.preprocess import load_rgb
from services.taxonomy.tree import load_taxonomy
from tests.service_harness import eyescreen
from tests.shipped_models import SHIPPED_FUNDUS

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
TONES = {"glaucoma": (150, 60, 40), "normal": (60, 90, 150)}


def _photographs(folder: Path, count: int) -> Path:
    """Two sources; both eyes of a patient alike; glaucoma and normal differ in colour."""
    rng = np.random.default_rng(2)
    rows = ["file,patient_id,eye,source,folder_label,odir_keywords"]
    for i in range(count):
        source = ("odir", "eyepacs")[i % 2]
        label = ("glaucoma", "normal")[(i // 4) % 2]
        pixels = np.clip(rng.normal(TONES[label], 25, (48, 48, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")
        rows.append(f"{i}.png,{source}{i // 4},{(i // 2) % 2},{source},{label},")
    (folder / "m.csv").write_text("\n".join(rows) + "\n")
    return folder / "m.csv"


def test_train_last_block_writes_a_servable_checkpoint(tmp_path: Path) -> None:
    manifest = _photographs(tmp_path, 64)
    out = tmp_path / "model.pt"
    args = [
        "train-last-block",
        "--manifest", str(manifest),
        "--backbone", "efficientnet_lite0",
        "--image-size", "64",
        "--camera-views", "2",
        "--head-epochs", "15",
        "--finetune-epochs", "2",
        "--folds", "2",
        "--min-positive", "5",
        "--target-sensitivity", "0.9",
        "--source-sensitivity-floor", "0.9",
        "--hold-out", "0.25",
        "--held-out-manifests", str(tmp_path / "held"),
        "--features", str(tmp_path / "features"),
        "--threads", "1",
        "--version", "9.9",
        "--out", str(out),
    ]  # fmt: skip
    env = dict(os.environ, EYESCREEN_DATA_DIR=str(tmp_path / "var"))
    result = eyescreen(*args, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert summary["photographs"] == 48 and summary["patients"] == 24  # 4 of 16 per source held
    assert set(summary["nested_referral_by_source"]) == {"odir", "eyepacs"}
    own = summary["nested_referral_with_the_sources_own_operating_point"]
    assert set(own) == {"odir", "eyepacs"}
    assert all(block["eye"]["sensitivity"]["n"] == 12 for block in own.values())
    assert summary["source_sensitivity_floor"] == 0.9
    assert set(summary["cross_validated_by_source_without_the_floor"]) == {"odir", "eyepacs"}
    oof = load_out_of_fold(out.with_suffix(".oof.npz"), load_taxonomy("fundus"))
    assert len(oof.patients) == 48 and set(oof.folds) == {0, 1}

    meta, model = load_checkpoint(out)
    assert meta["version"] == "9.9" and meta["training"]["recipe"] == "last-block"
    assert backbone_tuned(meta) and meta["inference"]["flip_tta"] is True
    assert meta["thresholds"] and meta["calibration"]["temperatures"]
    assert set(meta["guard"]["fired_on_held_out_sources"]) == {"odir", "eyepacs"}
    imagenet = efficientnet_lite("efficientnet_lite0").state_dict()
    served = model.backbone.state_dict()
    assert served.keys() == imagenet.keys()
    below = [k for k in served if not k.startswith(("_blocks.15.", "_conv_head", "_bn1", "_fc"))]
    for key in below:  # the frozen layers are ImageNet's (stored in fp16)
        assert torch.equal(served[key], imagenet[key].half().float()), key
    tuned = [k for k in served if k.startswith("_blocks.15.") and served[k].is_floating_point()]
    assert any(not torch.equal(served[k], imagenet[k].half().float()) for k in tuned)

    held = sorted((tmp_path / "held").glob("*.csv"))
    assert len(held) == 1
    with held[0].open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16 and all(Path(r["file"]).is_absolute() for r in rows)
    trained = {f"{i}.png" for i in range(64)} - {Path(r["file"]).name for r in rows}
    assert len(trained) == 48

    # The service's predictor reads the tuned model: glaucoma photographs of patients it never
    # saw score above the normal ones.
    predictor = Predictor.load(out, "cpu")
    scores = {
        label: [
            predictor.predict([load_rgb(r["file"])])[0]["F.GLAU"]
            for r in rows
            if r["folder_label"] == label
        ]
        for label in TONES
    }
    assert min(scores["glaucoma"]) > max(scores["normal"])

    evaluated = eyescreen(
        "evaluate", "--checkpoint", str(out), "--manifest", str(held[0]), "--no-figures",
        "--out", str(tmp_path / "evaluation"), env=env,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    figures = json.loads((tmp_path / "evaluation" / "metrics.json").read_text())
    referral = figures["results"]["checkpoint"]["referral"]["eye"]
    assert referral["sensitivity"]["n"] == 8 and referral["specificity"]["n"] == 8
    guard = figures["results"]["checkpoint"]["guard"]
    assert guard["present"] and sum(guard["photographs_by_source"].values()) == 16

    # Photographs unlike any it learnt from: the guard calls them not assessable, and the
    # evaluation refers them as the service does, whatever the heads say.
    strange = ["file,patient_id,eye,source,folder_label,odir_keywords"]
    for i in range(4):
        board = (np.indices((48, 48)).sum(axis=0) // (3 + i) % 2 * 255).astype(np.uint8)
        Image.fromarray(np.stack([board] * 3, axis=-1)).save(tmp_path / f"board{i}.png")
        strange.append(f"board{i}.png,s{i},0,scanner,normal,")
    (tmp_path / "strange.csv").write_text("\n".join(strange) + "\n")
    evaluated = eyescreen(
        "evaluate", "--checkpoint", str(out), "--manifest", str(tmp_path / "strange.csv"),
        "--no-figures", "--out", str(tmp_path / "strange"), env=env,
    )  # fmt: skip
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    result = json.loads((tmp_path / "strange" / "metrics.json").read_text())["results"]
    assert result["checkpoint"]["guard"]["fired"] == 4
    assert result["checkpoint"]["referral"]["eye"]["specificity"]["successes"] == 0
    assert "the guard called 4 of 4 photographs not assessable" in evaluated.stdout

    # Another model on the same photographs, compared as paired data: the shipped model's
    # guard calls every drawn picture not assessable, so it refers all sixteen.
    paired = eyescreen(
        "evaluate", "--checkpoint", str(SHIPPED_FUNDUS), "--manifest", str(held[0]),
        "--no-figures", "--paired-with", str(tmp_path / "evaluation"),
        "--out", str(tmp_path / "shipped"), env=env,
    )  # fmt: skip
    assert paired.returncode == 0, paired.stderr[-3000:]
    comparison = json.loads((tmp_path / "shipped" / "metrics.json").read_text())["paired_with"]
    eyes = comparison["pooled"]["eye (eyes as independent)"]
    assert eyes["specificity"]["this"] == 0.0 and eyes["sensitivity"]["this"] == 1.0
    assert eyes["specificity"]["only_other"] == round(8 * eyes["specificity"]["other"])
    assert eyes["specificity"]["only_this"] == 0
    assert set(comparison["by_source"]) == {"odir", "eyepacs"}
    assert "## Paired with" in paired.stdout and "McNemar p" in paired.stdout

    rates = subprocess.run(
        [sys.executable, "scripts/guard_rates.py", str(out), f"{tmp_path / 'strange.csv'}:3"],
        cwd=REPO, capture_output=True, text=True, check=True, env=env,
    )  # fmt: skip
    assert json.loads(rates.stdout)["manifests"][str(tmp_path / "strange.csv")] == {
        "scanner": {"fired": 3, "photographs": 3, "rate": 1.0}
    }
