"""Recalibration at a site whose camera shifts the colour balance: the shipped operating point
refers its normal eyes as retinal vascular disease; the one refitted on the site's verified
reads (weighted by inclusion probability) refers far fewer, and keeps the sensitivity."""

from __future__ import annotations

import numpy as np

from ml.recalibrate import recalibrate, recalibrated_meta, repeats
from services.screening.decision import OperatingPoint, ProbabilityScale
from services.taxonomy.tree import load_taxonomy

ASSESSED = {"F.GLAU", "F.GLAU.GLAU", "F.VRD", "F.VRD.RVAS", "F.NOR", "F.NOR.NOR"}


def _site(n: int, shift: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities of the shipped model at a site: each eye normal, glaucoma or
    retinal vascular disease; the site's camera adds ``shift`` to the vascular logit of every
    photograph (a colour balance the model never saw reads as haemorrhage)."""
    tree = load_taxonomy("fundus")
    rng = np.random.default_rng(seed)
    kind = rng.choice(3, n, p=[0.5, 0.25, 0.25])  # normal, glaucoma, vascular
    logits = np.full((n, len(tree.codes)), -4.0) + rng.normal(0, 0.5, (n, len(tree.codes)))
    labels = np.zeros((n, len(tree.codes)))

    def col(code: str) -> int:
        return tree.codes.index(code)

    for i, k in enumerate(kind):
        codes = [("F.NOR", "F.NOR.NOR"), ("F.GLAU", "F.GLAU.GLAU"), ("F.VRD", "F.VRD.RVAS")][k]
        for code in codes:
            labels[i, col(code)] = 1
            logits[i, col(code)] = rng.normal(2.0, 1.0)
    for code in ("F.VRD", "F.VRD.RVAS"):
        logits[:, col(code)] += shift
    return 1 / (1 + np.exp(-logits)), labels


def _shipped_point() -> OperatingPoint:
    tree = load_taxonomy("fundus")
    thresholds = {c: 0.5 for c in ASSESSED}
    not_assessed = frozenset(c for c in tree.codes if c not in ASSESSED)
    return OperatingPoint(thresholds, not_assessed, ProbabilityScale.CALIBRATED)


def test_recalibration_improves_a_site_whose_camera_shifts_the_colour_balance() -> None:
    tree = load_taxonomy("fundus")
    probs, labels = _site(400, shift=5.0)
    patients = [f"p{i // 2}" for i in range(len(probs))]
    weights = np.where(np.arange(len(probs)) % 4 == 0, 4.0, 1.0)  # a QC draw of 1 in 4
    result = recalibrate(tree, probs, labels, weights, patients, _shipped_point(), 0.95)
    before = result["active"]["eye"]
    after = result["recalibrated_nested"]["eye"]
    assert before["specificity"]["estimate"] < 0.1  # normal eyes read as vascular disease
    assert after["specificity"]["estimate"] > 0.6
    assert after["sensitivity"]["estimate"] >= 0.9
    assert result["thresholds"]["F.VRD.RVAS"] > 0.5  # the vascular cut moved above the shift
    assert result["weighted_eyes"] == 400 + 3 * 100


def test_a_site_like_the_training_data_keeps_its_operating_point_figures() -> None:
    tree = load_taxonomy("fundus")
    probs, labels = _site(400, shift=0.0, seed=1)
    patients = [f"p{i // 2}" for i in range(len(probs))]
    result = recalibrate(tree, probs, labels, np.ones(400), patients, _shipped_point(), 0.95)
    assert result["active"]["eye"]["specificity"]["estimate"] > 0.8
    assert result["recalibrated_nested"]["eye"]["sensitivity"]["estimate"] >= 0.9


def test_recalibrated_meta_composes_temperatures_and_names_its_site() -> None:
    meta = {
        "version": "1.3",
        "calibration": {"temperatures": {"F.GLAU": 2.0}},
        "thresholds": {"F.GLAU": 0.4},
    }
    result = {
        "site_temperatures": {"F.GLAU": 0.5, "F.NOR": 1.5},
        "thresholds": {"F.GLAU": 0.6},
        "target_sensitivity": 0.95,
    }
    out = recalibrated_meta(meta, result, "north")
    assert out["calibration"]["temperatures"] == {"F.GLAU": 1.0, "F.NOR": 1.5}
    assert out["thresholds"] == {"F.GLAU": 0.6} and out["version"] == "1.3+north"
    assert out["recalibration"]["base_version"] == "1.3" and meta["thresholds"] == {"F.GLAU": 0.4}
    assert list(repeats(np.array([1.0, 2.6, 0.2]))) == [0, 1, 1, 1, 2]
