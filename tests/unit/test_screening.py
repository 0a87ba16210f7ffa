import numpy as np
import pytest

from services.screening import consistent_thresholds, decide, enforce_hierarchy
from services.taxonomy import load_taxonomy


@pytest.mark.parametrize("route", ["fundus", "anterior"])
def test_constraint_holds_on_random_inputs(route: str) -> None:
    tree = load_taxonomy(route)
    rng = np.random.default_rng(7)
    for _ in range(500):
        raw = dict(zip(tree.codes, rng.random(len(tree.codes)), strict=True))
        probs = enforce_hierarchy(tree, raw)
        cuts = consistent_thresholds(
            tree, dict(zip(tree.codes, rng.random(len(tree.codes)), strict=True))
        )
        for node in tree.nodes:
            if node.parent:
                assert probs[node.parent] >= probs[node.code]
                assert cuts[node.parent] <= cuts[node.code]
        decision = decide(tree, raw, cuts)
        positives = set(decision.positive_codes)
        assert tree.with_ancestors(positives) == positives  # no positive child without its parent


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
