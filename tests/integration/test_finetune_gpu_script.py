"""The GPU fine-tuning script, checked on the CPU with a tiny packed set: what travels to a lent
machine (packed photographs, codes, the backbone's weights out of a checkpoint) and both
recipes cross-validated on the same folds."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml.camera_augment import CameraVariation, vary_batch
from ml.data import Sample
from ml.efficientnet_lite import efficientnet_lite
from ml.packed_set import load_squares, read_packed, write_packed
from ml.preprocess import Preprocessing

ROOT = Path(__file__).resolve().parents[2]


def _photographs(folder: Path) -> list[Sample]:
    """Two sources, glaucoma red and normal blue, on a black frame like a fundus camera's."""
    rng = np.random.default_rng(0)
    samples = []
    for i in range(40):
        source = ("odir", "mexico_imo")[i % 2]
        sick = (i // 4) % 2 == 0  # both eyes of a patient alike
        tone = (150, 60, 40) if sick else (60, 90, 150)
        pixels = np.zeros((60, 80, 3), np.uint8)
        ramp = np.linspace(-30, 30, 50)[:, None, None]  # smooth, as photographs are
        pixels[5:55, 15:65] = np.clip(rng.normal(tone, 4, (50, 50, 3)) + ramp, 1, 255)
        path = folder / f"{i}.png"
        Image.fromarray(pixels).save(path)
        codes = {"F.GLAU", "F.GLAU.GLAU"} if sick else {"F.NOR", "F.NOR.NOR"}
        samples.append(
            Sample(path, f"{source}{i // 4}", str((i // 2) % 2), frozenset(codes), source)
        )
    return samples


def test_a_packed_set_keeps_the_codes_and_the_squares(tmp_path: Path) -> None:
    samples = _photographs(tmp_path)
    spec = Preprocessing(size=32, crop_dark_border=True)
    write_packed(samples, tmp_path / "packed", spec)
    back = read_packed(tmp_path / "packed")
    assert [(s.patient_id, s.eye, s.codes, s.source) for s in back] == [
        (s.patient_id, s.eye, s.codes, s.source) for s in samples
    ]
    squares = load_squares(back, spec, torch.device("cpu"))
    originals = load_squares(samples, spec, torch.device("cpu"))
    assert squares.shape == (40, 3, 32, 32) and squares.dtype == torch.uint8
    # JPEG at quality 92 of a pre-squared photograph: the model's input barely moves
    assert (squares.float() - originals.float()).abs().mean() < 3


def test_camera_variations_on_a_batch_stay_photographs() -> None:
    images = torch.rand(6, 3, 24, 24)
    images[:, :, :2] = 0  # a black frame stays black
    one = vary_batch(images, torch.Generator().manual_seed(1))
    again = vary_batch(images, torch.Generator().manual_seed(1))
    assert one.shape == images.shape and torch.equal(one, again)
    assert float(one.min()) >= 0.0 and float(one.max()) <= 1.0
    assert not torch.equal(one, images)
    still = CameraVariation(exposure=0, gamma=0, colour_balance=0, blur=0, rotation=0, zoom=0)
    kept = vary_batch(images, torch.Generator().manual_seed(2), still)
    for k, i in zip(kept, images, strict=True):  # only mirrored, if at all
        assert torch.allclose(k, i, atol=1e-5) or torch.allclose(k, i.flip(-1), atol=1e-5)


@pytest.mark.slow
def test_the_script_compares_both_recipes_on_the_same_folds(tmp_path: Path) -> None:
    samples = _photographs(tmp_path)
    write_packed(samples, tmp_path / "packed", Preprocessing(size=64, crop_dark_border=True))
    lite = efficientnet_lite("efficientnet_lite0")
    checkpoint = {"state_dict": {f"backbone.{k}": v.half() for k, v in lite.state_dict().items()}}
    checkpoint["state_dict"]["heads.x"] = torch.zeros(1)
    torch.save(checkpoint, tmp_path / "model.pt")
    out = tmp_path / "out"
    command = [
        sys.executable, str(ROOT / "scripts" / "finetune_gpu.py"), "run",
        str(tmp_path / "packed"), str(out), "--device", "cpu",
        "--backbone", "efficientnet_lite0", "--weights-from", str(tmp_path / "model.pt"),
        "--size", "64", "--epochs", "1", "--groups", "2", "--batch-size", "8",
        "--head-epochs", "3", "--folds", "2", "--min-positive", "5", "--target", "0.9",
    ]  # fmt: skip
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    comparison = (out / "comparison.md").read_text()
    assert "| frozen |" in comparison and "| image-finetune |" in comparison
    import json

    tuned = json.loads((out / "image-finetune.json").read_text())
    frozen = json.loads((out / "frozen.json").read_text())
    assert tuned["tuning"]["groups"] == 2 and frozen["tuning"] is None
    assert set(tuned["source_held_out"]) == {"odir", "mexico_imo"}
    assert tuned["pooled"]["eye"]["n_positive"] == frozen["pooled"]["eye"]["n_positive"] == 20
