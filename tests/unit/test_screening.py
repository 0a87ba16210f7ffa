import numpy as np
import pytest

from services.screening.decision import (
    OperatingPoint,
    ProbabilityScale,
    decide,
    enforce_hierarchy,
)
from services.taxonomy.tree import load_taxonomy


@pytest.mark.parametrize("route", ["fundus", "anterior"])
def test_hierarchy_holds_on_random_inputs(route: str) -> None:
    tree = load_taxonomy(route)
    rng = np.random.default_rng(7)
    for _ in range(500):
        raw = dict(zip(tree.codes, rng.random(len(tree.codes)), strict=True))
        probs = enforce_hierarchy(tree, raw)
        cuts = dict(zip(tree.codes, rng.random(len(tree.codes)), strict=True))
        for node in tree.nodes:
            if node.parent:
                assert probs[node.parent] >= probs[node.code]
        decision = decide(tree, raw, OperatingPoint(cuts))
        positives = set(decision.positive_codes)
        assert tree.with_ancestors(positives) == positives  # no positive child without its parent


def test_parents_keep_their_own_thresholds() -> None:
    """A parent is not dragged down to its weakest child's threshold: with a low child
    threshold, the parent still decides on its own unless that child is present."""
    tree = load_taxonomy("fundus")
    low = dict.fromkeys(tree.codes, 0.05)
    point = OperatingPoint({"F.VRD": 0.6, "F.VRD.MAC": 0.04, "F.VRD.RVAS": 0.5})
    parent_only = decide(tree, low | {"F.VRD": 0.3, "F.VRD.MAC": 0.03}, point)
    assert parent_only.findings[1].code == "F.VRD"
    assert {f.code: f.threshold for f in parent_only.findings}["F.VRD"] == 0.6
    assert "F.VRD" not in parent_only.positive_codes
    child = decide(tree, low | {"F.VRD": 0.3, "F.VRD.MAC": 0.045}, point)
    assert {"F.VRD", "F.VRD.MAC"} <= set(child.positive_codes)


def test_referral_rules() -> None:
    tree = load_taxonomy("fundus")
    low = dict.fromkeys(tree.codes, 0.05)
    normal = low | {"F.NOR.NOR": 0.9}
    glaucoma = low | {"F.GLAU.GLAU": 0.8}
    assert decide(tree, normal).referral is False
    assert decide(tree, glaucoma).referral is True
    assert decide(tree, low).referral is True  # nothing found: a human must look
    assert decide(tree, normal, quality="ungradable:dark").referral is True
    decision = decide(tree, glaucoma | {"F.VRD.MAC": 0.6, "F.NOR.NOR": 0.3})
    assert decision.top3 == ("F.GLAU.GLAU", "F.VRD.MAC", "F.NOR.NOR")
    assert decision.probabilities["F.GLAU"] == pytest.approx(0.8)


def test_not_assessed_class_has_no_decision_and_no_part_in_referral() -> None:
    tree = load_taxonomy("fundus")
    point = OperatingPoint(
        {"F.NOR": 0.5, "F.NOR.NOR": 0.5},
        not_assessed=frozenset({"F.VRD.OPT"}),
        scale=ProbabilityScale.CALIBRATED,
    )
    probs = dict.fromkeys(tree.codes, 0.05) | {"F.NOR.NOR": 0.9, "F.VRD.OPT": 0.99}
    decision = decide(tree, probs, point)
    optic = next(f for f in decision.findings if f.code == "F.VRD.OPT")
    assert optic.positive is None and optic.threshold is None and not optic.assessed
    assert decision.not_assessed_codes == ["F.VRD.OPT"]
    assert "F.VRD.OPT" not in decision.thresholds
    assert "F.VRD.OPT" not in decision.top3
    # its probability does not raise its parent either, and it refers no one
    assert decision.probabilities["F.VRD"] == pytest.approx(0.05)
    assert decision.referral is False
    assert decision.scale == ProbabilityScale.CALIBRATED


def test_site_overrides_cannot_assess_what_the_model_cannot() -> None:
    point = OperatingPoint({"F.GLAU": 0.4}, frozenset({"F.VRD.OPT"}))
    assert point.with_overrides({"F.GLAU": 0.3}).threshold("F.GLAU") == 0.3
    with pytest.raises(ValueError, match=r"F\.VRD\.OPT"):
        point.with_overrides({"F.VRD.OPT": 0.3})


def test_operating_point_from_checkpoint_meta() -> None:
    old = OperatingPoint.from_meta({"thresholds": {"F.GLAU": 0.2}})
    assert old.scale == ProbabilityScale.RAW and not old.not_assessed
    new = OperatingPoint.from_meta(
        {
            "thresholds": {"F.GLAU": 0.2},
            "assessment": {"not_assessed": ["F.VRD.OPT"]},
            "operating_point": {"scale": "calibrated"},
        }
    )
    assert new.scale == ProbabilityScale.CALIBRATED
    assert new.threshold("F.VRD.OPT") is None
