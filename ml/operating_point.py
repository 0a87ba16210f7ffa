"""Choosing a screening operating point on out-of-fold predictions, and measuring it honestly.

The referral refers an eye when any assessed disease class reaches its threshold or no normal
class does (``services.screening.decision.refers``). Over every assessed class's threshold, we
look for the highest specificity that keeps referral sensitivity at the target:

1. a greedy path from "refer nobody": at each step lower the one threshold that adds the most
   referred diseased eyes per referred normal eye, until the target is reached;
2. then raise each threshold as far as the target allows, until nothing moves.

Each rule is a column "refer if score >= cut": a disease class's probability, or minus the
normal probability (normal classes share one threshold; with the max-constraint a normal
parent's probability is at least its children's). Thresholds chosen on one set of patients
are measured on others (``nested_referral``), since figures on the set they were chosen on
flatter them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.statistics.proportions import wilson
from services.taxonomy.tree import Taxonomy

OFF = np.inf


@dataclass(frozen=True)
class ReferralProblem:
    """Per eye: each rule's score (refer if score >= cut) and whether a disease is present."""

    scores: np.ndarray  # (n_eyes, n_rules)
    diseased: np.ndarray  # (n_eyes,) bool
    rules: tuple[str, ...]  # disease codes, then "normal" if the taxonomy has normal classes


def diseased_eyes(taxonomy: Taxonomy, labels: np.ndarray) -> np.ndarray:
    """Per eye, whether any disease label holds ((n_eyes, codes) 0/1 labels in taxonomy order);
    not-assessed diseases count too: the referral must catch those eyes as well."""
    every_disease = [i for i, c in enumerate(taxonomy.codes) if not taxonomy.node(c).normal]
    return np.asarray(labels[:, every_disease].max(axis=1) > 0)


def referral_problem(
    taxonomy: Taxonomy,
    probs: np.ndarray,
    labels: np.ndarray,
    not_assessed: frozenset[str],
) -> ReferralProblem:
    """From constrained probabilities and 0/1 labels, both (n_eyes, codes in taxonomy order)."""
    codes = taxonomy.codes
    disease = [c for c in codes if not taxonomy.node(c).normal and c not in not_assessed]
    normal = [c for c in codes if taxonomy.node(c).normal and c not in not_assessed]
    columns = [probs[:, codes.index(c)] for c in disease]
    if normal:
        columns.append(-probs[:, [codes.index(c) for c in normal]].max(axis=1))
    rules = tuple(disease + (["normal"] if normal else []))
    return ReferralProblem(np.stack(columns, axis=1), diseased_eyes(taxonomy, labels), rules)


def refer(scores: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Per eye: whether any rule reaches its cut."""
    return np.any(scores >= cuts[None, :], axis=1)


def _sensitivity(referred: np.ndarray, diseased: np.ndarray) -> float:
    return float(referred[diseased].mean()) if diseased.any() else 1.0


def _best_step(
    scores: np.ndarray, diseased: np.ndarray, referred: np.ndarray, cuts: np.ndarray
) -> tuple[int, float] | None:
    """The (rule, new cut) adding the most diseased eyes per normal eye (ties: more eyes)."""
    best: tuple[float, int, int, float] | None = None
    waiting = ~referred
    for j in range(scores.shape[1]):
        s, d = scores[waiting, j], diseased[waiting]
        keep = s < cuts[j]
        s, d = s[keep], d[keep]
        if s.size == 0:
            continue
        order = np.argsort(-s, kind="stable")
        s, d = s[order], d[order]
        gained, cost = np.cumsum(d), np.cumsum(~d)
        last_of_value = np.r_[s[1:] != s[:-1], True]  # a cut takes every tied eye
        idx = np.flatnonzero(last_of_value & (gained > 0))
        if idx.size == 0:
            continue
        ratio = gained[idx] / (cost[idx] + 1.0)
        k = idx[np.argmax(ratio)]
        candidate = (float(ratio.max()), int(gained[k]), j, float(s[k]))
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return None if best is None else (best[2], best[3])


def _raise_cuts(scores: np.ndarray, diseased: np.ndarray, cuts: np.ndarray, target: float) -> None:
    """Raise each cut to the highest value that keeps sensitivity >= target (in place)."""
    required = int(np.ceil(target * diseased.sum() - 1e-9))
    moved = True
    while moved:
        moved = False
        for j in range(scores.shape[1]):
            if cuts[j] == OFF:
                continue
            base = refer(np.delete(scores, j, axis=1), np.delete(cuts, j)) & diseased
            need = required - int(base.sum())
            if need <= 0:
                highest = OFF  # the other rules reach the target alone
            else:
                alone = np.sort(scores[diseased & ~base, j])[::-1]
                highest = float(alone[need - 1]) if need <= alone.size else cuts[j]
            if highest > cuts[j]:
                cuts[j], moved = highest, True


def search_cuts(problem: ReferralProblem, target: float) -> np.ndarray:
    """Cuts per rule (``OFF``: rule unused) reaching ``target`` sensitivity, specificity high."""
    scores, diseased = problem.scores, problem.diseased
    cuts = np.full(scores.shape[1], OFF)
    referred = np.zeros(len(diseased), dtype=bool)
    while _sensitivity(referred, diseased) < target:
        step = _best_step(scores, diseased, referred, cuts)
        if step is None:
            break
        j, value = step
        cuts[j] = value
        referred = refer(scores, cuts)
    _raise_cuts(scores, diseased, cuts, target)
    _report_unused(scores, cuts)
    return cuts


def _report_unused(scores: np.ndarray, cuts: np.ndarray) -> None:
    """A rule the referral does not need still reports its class where that changes no
    referral on these eyes: its cut just above the highest score of an unreferred eye (a
    disease is then shown present only on eyes referred anyway), not "never present"."""
    referred = refer(scores, cuts)
    for j in np.flatnonzero(cuts == OFF):
        if (~referred).any():
            cuts[j] = float(np.nextafter(scores[~referred, j].max(), np.inf))


def cuts_to_thresholds(
    taxonomy: Taxonomy, problem: ReferralProblem, cuts: np.ndarray, not_assessed: frozenset[str]
) -> dict[str, float]:
    """Per assessed class, the probability threshold that makes ``decide`` refer as the cuts do."""
    thresholds: dict[str, float] = {}
    for rule, cut in zip(problem.rules, cuts, strict=True):
        if rule != "normal":
            thresholds[rule] = 1.0 if cut == OFF else float(cut)
    normal = [c for c in taxonomy.codes if taxonomy.node(c).normal and c not in not_assessed]
    if normal:
        cut = cuts[problem.rules.index("normal")]
        # refer when -p >= cut, i.e. p <= -cut: "normal present" needs p just above -cut
        value = 0.0 if cut == OFF else float(np.nextafter(-cut, np.inf))
        thresholds.update(dict.fromkeys(normal, value))
    return thresholds


def referral_figures(
    referred: np.ndarray, diseased: np.ndarray, patients: Sequence[str] | None = None
) -> dict[str, Any]:
    """Sensitivity, specificity, PPV, NPV (Wilson 95 %) per eye, and per patient if given."""
    out = {"eye": _figures(referred, diseased)}
    if patients is not None:
        ids = np.asarray(patients)
        unique, index = np.unique(ids, return_inverse=True)
        per_referred = np.zeros(len(unique), dtype=bool)
        per_diseased = np.zeros(len(unique), dtype=bool)
        np.logical_or.at(per_referred, index, referred)
        np.logical_or.at(per_diseased, index, diseased)
        out["patient"] = _figures(per_referred, per_diseased)
    return out


def _figures(referred: np.ndarray, diseased: np.ndarray) -> dict[str, Any]:
    tp = int(np.sum(referred & diseased))
    fn = int(np.sum(~referred & diseased))
    fp = int(np.sum(referred & ~diseased))
    tn = int(np.sum(~referred & ~diseased))
    return {
        "sensitivity": wilson(tp, tp + fn).to_dict(),
        "specificity": wilson(tn, tn + fp).to_dict(),
        "ppv": wilson(tp, tp + fp).to_dict(),
        "npv": wilson(tn, tn + fn).to_dict(),
        "n_positive": tp + fn,
        "n_negative": tn + fp,
        "table": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }


def nested_referral(
    problem_for: Callable[[np.ndarray], ReferralProblem], folds: np.ndarray, target: float
) -> np.ndarray:
    """Each fold referred with cuts chosen on the other folds: an honest referral per eye.

    ``problem_for(train)`` gives the problem with everything fitted on the ``train`` eyes only
    (the calibration temperatures too), so the held-out fold's labels shape nothing."""
    referred = np.zeros(len(folds), dtype=bool)
    for fold in np.unique(folds):
        test = folds == fold
        problem = problem_for(~test)
        train = ReferralProblem(problem.scores[~test], problem.diseased[~test], problem.rules)
        referred[test] = refer(problem.scores[test], search_cuts(train, target))
    return referred
