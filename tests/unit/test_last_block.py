"""The bounded fine-tuning's parts: camera variations, the backbone split at its last block,
the per-source subsample and the training of the last block on cached activations."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ml.camera_augment import CameraVariation, vary, view_rng, views_of
from ml.checkpoint import backbone_tuned
from ml.data import Sample, held_out_patients, patients_per_source
from ml.efficientnet_lite import VARIANTS, EfficientNetLite
from ml.last_block import FineTuning, fine_tune, top_features
from ml.network import HierarchicalHeads
from ml.train import TrainConfig


def _photo(seed: int = 0, side: int = 64) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(30, 220, (side, side, 3), dtype=np.uint8))


def test_views_are_as_is_mirrored_then_fixed_camera_variations() -> None:
    image = _photo()
    views = views_of(image, "a.jpg", 4)
    assert np.array_equal(np.asarray(views[0]), np.asarray(image))
    assert np.array_equal(np.asarray(views[1]), np.asarray(image)[:, ::-1])
    again = views_of(image, "a.jpg", 4)
    other = views_of(image, "b.jpg", 4)
    for v in (2, 3):  # the same photograph and view give the same variation on every run
        assert np.array_equal(np.asarray(views[v]), np.asarray(again[v]))
        assert not np.array_equal(np.asarray(views[v]), np.asarray(other[v]))
        assert views[v].size == image.size


def test_a_variation_with_no_range_is_the_photograph_and_black_stays_black() -> None:
    image = _photo()
    still = CameraVariation(exposure=0, gamma=0, colour_balance=0, blur=0, rotation=0, zoom=0)
    assert np.array_equal(np.asarray(vary(image, view_rng("k", 2), still)), np.asarray(image))
    black = Image.new("RGB", (32, 32))
    assert np.asarray(vary(black, view_rng("k", 3), CameraVariation())).max() == 0


def test_the_top_on_activations_below_the_last_block_is_the_whole_backbone() -> None:
    torch.manual_seed(0)
    net = EfficientNetLite(VARIANTS["efficientnet_lite0"][0]).eval()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        whole = net(x)
        lower = net.below_last_block(x)
        split = net.top()(lower)
    assert tuple(lower.shape[1:]) == net.last_block_input_shape(96)
    torch.testing.assert_close(split, whole)


def test_the_subsample_takes_whole_patients_about_n_per_source() -> None:
    samples = [
        Sample(Path(f"/{src}/{p}-{e}.jpg"), f"{src}{p}", str(e), frozenset(), src)
        for src, patients in (("a", 100), ("b", 10))
        for p in range(patients)
        for e in range(2)
    ]
    picked = patients_per_source(samples, 30, seed=1)
    by_source = {s: [x for x in picked if x.source == s] for s in ("a", "b")}
    assert len(by_source["a"]) == 30  # 15 whole patients of two eyes
    assert len(by_source["b"]) == 20  # a small source is taken whole
    eyes: dict[str, int] = {}
    for s in picked:
        eyes[s.patient_id] = eyes.get(s.patient_id, 0) + 1
    assert set(eyes.values()) == {2}
    assert picked == patients_per_source(samples, 30, seed=1)
    assert picked != patients_per_source(samples, 30, seed=2)


def test_the_shape_probe_leaves_batchnorm_statistics_alone() -> None:
    """Asking the activations' shape of a network in training mode (as built) once moved every
    BatchNorm's running statistics below the last block towards a blank image's, so that the
    cached activations and the servable checkpoint were not ImageNet's network."""
    torch.manual_seed(0)
    net = EfficientNetLite(VARIANTS["efficientnet_lite0"][0])
    before = copy.deepcopy(net.state_dict())
    assert net.training
    net.last_block_input_shape(64)
    assert net.training  # its mode is given back
    for key, value in net.state_dict().items():
        assert torch.equal(value, before[key]), key


def _two_sources() -> list[Sample]:
    return [
        Sample(Path(f"/{src}/{p}-{e}.jpg"), f"{src}{p}", str(e), frozenset(), src)
        for src, patients in (("a", 100), ("b", 20))
        for p in range(patients)
        for e in range(2)
    ]


def test_held_out_patients_are_whole_and_from_every_source() -> None:
    samples = _two_sources()
    trained, held = held_out_patients(samples, 0.15, seed=3)
    assert len(trained) + len(held) == len(samples)
    assert {s.patient_id for s in trained}.isdisjoint({s.patient_id for s in held})
    assert len([s for s in held if s.source == "a"]) == 30  # 15 of 100 patients, two eyes
    assert len([s for s in held if s.source == "b"]) == 6  # 3 of 20
    assert held == held_out_patients(samples, 0.15, seed=3)[1]
    assert held != held_out_patients(samples, 0.15, seed=4)[1]
    for fraction in (0.0, 1.0):
        with pytest.raises(ValueError, match="between 0 and 1"):
            held_out_patients(samples, fraction)


def test_a_fine_tuned_or_unfrozen_backbone_is_not_imagenets() -> None:
    assert backbone_tuned({"training": {"recipe": "last-block", "config": {}}})
    assert backbone_tuned({"training": {"config": {"unfreeze_steps": 2}}})
    assert not backbone_tuned({"training": {"config": {"unfreeze_steps": 0}}})
    assert not backbone_tuned({})


def test_fine_tuning_trains_the_block_and_keeps_its_imagenet_statistics(one_thread: None) -> None:
    """Training lowers the loss, moves the block's weights, and leaves the BatchNorm running
    statistics as they were (batches of one fold would drift them)."""
    torch.manual_seed(0)
    net = EfficientNetLite(VARIANTS["efficientnet_lite0"][0]).eval()
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.normal(0, 1, (48, 3, 64, 64)).astype(np.float32))
    sick = np.arange(48) % 2 == 0
    images[sick, 0] += 1.5  # the disease: a red cast the heads must find
    with torch.no_grad():
        lower = net.below_last_block(images).numpy()[None].astype(np.float16)
    y = [np.stack([sick, ~sick], 1).astype(np.float32)]
    top = copy.deepcopy(net.top())
    before = copy.deepcopy(top.state_dict())
    heads = HierarchicalHeads(1280, [2], hidden=16, dropout=0.0)
    tuning = FineTuning(epochs=6, top_lr=1e-3, heads_lr=1e-3, batch_size=16)
    history = fine_tune(top, heads, lower, y, TrainConfig(), tuning, seed=0)
    assert history[-1] < history[0]
    after = top.state_dict()
    stats = [k for k in before if k.endswith(("running_mean", "running_var"))]
    weights = [k for k in before if k.endswith("weight")]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert any(not torch.equal(before[k], after[k]) for k in weights)
    features = top_features(top, lower)
    assert features.shape == (1, 48, 1280)
