"""The referral operating point: search on a synthetic out-of-fold set, and Wilson intervals."""

import numpy as np
import pytest

from ml.crossval import flat_levels, split_levels
from ml.operating_point import (
    cuts_to_thresholds,
    nested_referral,
    refer,
    referral_figures,
    referral_problem,
    search_cuts,
)
from ml.pipeline import constrained
from services.screening.decision import OperatingPoint, ProbabilityScale, decide
from services.statistics.proportions import wilson
from services.taxonomy.tree import load_taxonomy

DISEASES = ("F.GLAU.GLAU", "F.VRD.RVAS", "F.LENS.CAT")
NOT_ASSESSED = frozenset({"F.VRD.OPT", "F.VRD.RDET", "F.VRD.RDEG"})


def synthetic_oof(n: int = 1500, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, constrained probabilities and folds: diseases separable to different degrees,
    and noisy scores on the classes without data (which must not decide anything)."""
    tree = load_taxonomy("fundus")
    rng = np.random.default_rng(seed)
    codes = tree.codes
    labels = np.zeros((n, len(codes)))
    for i in range(n):
        leaf = DISEASES[i % 3] if rng.random() < 0.5 else "F.NOR.NOR"
        for code in [leaf, *tree.ancestors(leaf)]:
            labels[i, codes.index(code)] = 1
    signal = {"F.GLAU.GLAU": 0.25, "F.VRD.RVAS": 0.45, "F.LENS.CAT": 0.6, "F.NOR.NOR": 0.35}
    probs = rng.random(labels.shape) * 0.6
    for code, strength in signal.items():
        j = codes.index(code)
        probs[:, j] += strength * labels[:, j]
    probs = np.clip(probs, 0, 1)
    probs = flat_levels(constrained(split_levels(probs, tree), tree, NOT_ASSESSED))
    return labels, probs, rng.integers(0, 5, n)


@pytest.mark.parametrize("target", [0.85, 0.9, 0.95])
def test_search_reaches_the_target_and_beats_one_shared_threshold(target: float) -> None:
    tree = load_taxonomy("fundus")
    labels, probs, _ = synthetic_oof()
    problem = referral_problem(tree, probs, labels, NOT_ASSESSED)
    assert not set(problem.rules) & NOT_ASSESSED
    referred = refer(problem.scores, search_cuts(problem, target))
    figures = referral_figures(referred, problem.diseased)["eye"]
    assert figures["sensitivity"]["estimate"] >= target
    # the naive rule: one threshold shared by every disease class, lowered to the target
    disease_max = problem.scores[:, :-1].max(axis=1)
    cut = np.sort(disease_max[problem.diseased])[
        int(np.floor((1 - target) * problem.diseased.sum()))
    ]
    naive = disease_max >= cut
    naive_specificity = 1 - naive[~problem.diseased].mean()
    assert figures["specificity"]["estimate"] >= naive_specificity


def test_thresholds_make_the_service_refer_exactly_as_the_search() -> None:
    tree = load_taxonomy("fundus")
    labels, probs, _ = synthetic_oof(600, seed=3)
    problem = referral_problem(tree, probs, labels, NOT_ASSESSED)
    cuts = search_cuts(problem, 0.95)
    point = OperatingPoint(
        cuts_to_thresholds(tree, problem, cuts, NOT_ASSESSED),
        NOT_ASSESSED,
        ProbabilityScale.CALIBRATED,
    )
    assert not set(point.thresholds) & NOT_ASSESSED
    expected = refer(problem.scores, cuts)
    for i in range(len(probs)):
        row = dict(zip(tree.codes, probs[i], strict=True))
        assert decide(tree, row, point).referral == expected[i]


def test_nested_figures_are_measured_on_held_out_folds() -> None:
    tree = load_taxonomy("fundus")
    labels, probs, folds = synthetic_oof()
    problem = referral_problem(tree, probs, labels, NOT_ASSESSED)
    seen: list[int] = []

    def problem_for(train: np.ndarray):  # type: ignore[no-untyped-def]
        seen.append(int(train.sum()))
        return problem

    nested = nested_referral(problem_for, folds, 0.95)
    assert len(seen) == 5 and all(n < len(folds) for n in seen)  # fitted without the held out
    figures = referral_figures(nested, problem.diseased, [str(i // 2) for i in range(len(folds))])
    # near the target, but not forced to it (chosen elsewhere); patient level has half the units
    assert 0.9 <= figures["eye"]["sensitivity"]["estimate"] <= 1.0
    assert figures["patient"]["n_positive"] + figures["patient"]["n_negative"] == len(folds) // 2


@pytest.mark.parametrize(
    ("successes", "n", "low", "high"),
    # Newcombe (1998), Statistics in Medicine 17:857, Table I, method 3 (Wilson score)
    [
        (81, 263, 0.2553, 0.3662),
        (15, 148, 0.0624, 0.1605),
        (0, 20, 0.0, 0.1611),
        (1, 29, 0.0061, 0.1718),
    ],
)
def test_wilson_interval_matches_published_values(
    successes: int, n: int, low: float, high: float
) -> None:
    value = wilson(successes, n)
    assert value.low == pytest.approx(low, abs=1e-4)
    assert value.high == pytest.approx(high, abs=1e-4)


def test_wilson_refuses_impossible_counts() -> None:
    with pytest.raises(ValueError):
        wilson(5, 3)
    assert np.isnan(wilson(0, 0).estimate)
