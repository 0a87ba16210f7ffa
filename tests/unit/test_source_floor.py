"""A per-source sensitivity floor at the operating point: one pooled target can leave a source
whose disease the model reads worse far below it (ODIR's glaucoma at 0.73 in model 1.4)."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ml.crossval import flat_levels, point_from_predictions, split_levels
from ml.data import Sample
from ml.oof_file import load_out_of_fold, save_out_of_fold
from ml.operating_point import OFF, refer, referral_problem, search_cuts
from ml.pipeline import constrained
from services.taxonomy.tree import load_taxonomy

NOT_ASSESSED = frozenset({"F.VRD.OPT", "F.VRD.RDET", "F.VRD.RDEG", "F.VRD.REF", "F.VRD.MAC"})
ROOT = Path(__file__).resolve().parents[2]


def two_sources(n: int = 2000, seed: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels, raw probabilities and sources: source "easy" has vascular disease the model
    reads well; source "hard" has glaucoma it reads poorly, and fewer diseased eyes, so the
    pooled target is met mostly by "easy"'s eyes."""
    tree = load_taxonomy("fundus")
    rng = np.random.default_rng(seed)
    codes = tree.codes
    labels = np.zeros((n, len(codes)))
    sources = np.where(np.arange(n) % 3 == 0, "hard", "easy")
    for i in range(n):
        if sources[i] == "easy":
            leaf = "F.VRD.RVAS" if rng.random() < 0.75 else "F.NOR.NOR"
        else:
            leaf = "F.GLAU.GLAU" if rng.random() < 0.35 else "F.NOR.NOR"
        for code in [leaf, *tree.ancestors(leaf)]:
            labels[i, codes.index(code)] = 1
    probs = rng.random(labels.shape) * 0.5
    for code, strength in {"F.VRD.RVAS": 0.5, "F.GLAU.GLAU": 0.2, "F.NOR.NOR": 0.3}.items():
        j = codes.index(code)
        probs[:, j] += strength * labels[:, j]
    return labels, np.clip(probs, 0.001, 0.999), sources


def problem_of(labels: np.ndarray, probs: np.ndarray, sources: np.ndarray):  # type: ignore[no-untyped-def]
    tree = load_taxonomy("fundus")
    constrained_probs = flat_levels(constrained(split_levels(probs, tree), tree, NOT_ASSESSED))
    return referral_problem(tree, constrained_probs, labels, NOT_ASSESSED).with_sources(sources)


def sensitivity(referred: np.ndarray, diseased: np.ndarray, rows: np.ndarray) -> float:
    return float(referred[diseased & rows].mean())


def test_the_floor_lifts_the_worst_source_at_a_cost_in_specificity() -> None:
    labels, probs, sources = two_sources()
    problem = problem_of(labels, probs, sources)
    pooled_only = refer(problem.scores, search_cuts(problem, 0.9))
    floored = refer(problem.scores, search_cuts(problem, 0.9, floor=0.9))
    hard = sources == "hard"
    # the pooled target alone leaves the hard source below the floor (else the test proves
    # nothing) ...
    assert sensitivity(pooled_only, problem.diseased, hard) < 0.85
    # ... the floor brings every source to it, and the pooled target still holds
    for source in ("easy", "hard"):
        assert sensitivity(floored, problem.diseased, sources == source) >= 0.9
    assert floored[problem.diseased].mean() >= 0.9
    # it costs healthy eyes referred, never saves them
    assert floored[~problem.diseased].mean() >= pooled_only[~problem.diseased].mean()


def test_no_cut_can_rise_without_breaking_a_requirement() -> None:
    labels, probs, sources = two_sources(900, seed=4)
    problem = problem_of(labels, probs, sources)
    cuts = search_cuts(problem, 0.9, floor=0.9)
    referred = refer(problem.scores, cuts)
    needed = [(problem.diseased, 0.9)] + [
        (problem.diseased & (sources == s), 0.9) for s in ("easy", "hard")
    ]
    for j in range(len(cuts)):  # rules that only report their class refer nobody alone
        off = cuts.copy()
        off[j] = OFF
        if np.array_equal(refer(problem.scores, off), referred):
            cuts = off
    moved = 0
    for j in np.flatnonzero(cuts != OFF):
        # the smallest raise of this cut that changes any referral
        for value in np.unique(problem.scores[problem.scores[:, j] >= cuts[j], j]):
            raised = cuts.copy()
            raised[j] = np.nextafter(value, np.inf)
            after = refer(problem.scores, raised)
            if not np.array_equal(after, referred):
                moved += 1
                assert any(after[m].mean() < share for m, share in needed), f"rule {j} rose"
                break
    assert moved >= 1


def test_a_floor_needs_each_eyes_source() -> None:
    labels, probs, sources = two_sources(300)
    problem = problem_of(labels, probs, sources)
    bare = type(problem)(problem.scores, problem.diseased, problem.rules)
    with pytest.raises(ValueError, match="source"):
        search_cuts(bare, 0.9, floor=0.9)


def test_saved_out_of_fold_predictions_give_the_nested_figures_again(tmp_path: Path) -> None:
    tree = load_taxonomy("fundus")
    labels, probs, sources = two_sources(600, seed=2)
    folds = np.arange(len(labels)) % 5
    samples = [
        Sample(
            Path(f"{i}.png"),
            f"p{i // 2}",
            "left" if i % 2 else "right",
            frozenset(c for c, v in zip(tree.codes, labels[i], strict=True) if v),
            str(sources[i]),
        )
        for i in range(len(labels))
    ]
    path = tmp_path / "run.oof.npz"
    save_out_of_fold(path, samples, tree, split_levels(probs, tree), folds, NOT_ASSESSED)
    oof = load_out_of_fold(path, tree)
    assert np.array_equal(oof.labels, labels) and np.allclose(oof.raw, probs)
    point = point_from_predictions(
        tree, oof.labels, oof.raw, oof.folds, oof.patients, oof.sources, oof.not_assessed, 0.9, 0.9
    )
    assert point["source_sensitivity_floor"] == 0.9
    assert set(point["cross_validated_by_source"]) == {"easy", "hard"}
    without = point["cross_validated_by_source_without_the_floor"]["hard"]["sensitivity"]
    assert (
        point["cross_validated_by_source"]["hard"]["sensitivity"]["estimate"] > without["estimate"]
    )
    script = ["scripts/operating_point_floors.py", str(path), "--target", "0.9", "--floor", "0.9"]
    result = subprocess.run(
        [sys.executable, *script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    printed = json.loads(result.stdout)
    assert printed["floor 0.90"]["by_source"] == json.loads(
        json.dumps(point["cross_validated_by_source"])
    )
    assert "| floor 0.90 | eye, hard |" in result.stderr
