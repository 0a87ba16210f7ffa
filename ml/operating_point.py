"""Choosing a screening operating point on out-of-fold predictions, and measuring it honestly.

The referral refers an eye when any assessed disease class reaches its threshold or no normal
class does (``services.screening.decision.refers``). Over every assessed class's threshold, we
look for the highest specificity that keeps referral sensitivity at the target:

1. a greedy path from "refer nobody": at each step lower the one threshold that adds the most
   referred diseased eyes per referred normal eye, until the target is reached;
2. then raise each threshold as far as the target allows, until nothing moves.

With a floor, every source (camera, hospital) must reach it too: one pooled target can be met
while a source whose disease the model reads worse stays far below it. The greedy path then
goes on, counting only the diseased eyes of the sources still below their floor, and no
threshold is raised past what any source's floor allows.

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
    sources: np.ndarray | None = None  # (n_eyes,) where each eye was photographed, for floors

    def rows(self, chosen: np.ndarray) -> ReferralProblem:
        """The same problem on some eyes only (a boolean mask or indices)."""
        sources = None if self.sources is None else self.sources[chosen]
        return ReferralProblem(self.scores[chosen], self.diseased[chosen], self.rules, sources)

    def with_sources(self, sources: Sequence[str] | np.ndarray) -> ReferralProblem:
        return ReferralProblem(self.scores, self.diseased, self.rules, np.asarray(sources))


@dataclass(frozen=True)
class _Requirement:
    """Referred diseased eyes needed: ``count`` of those where ``members`` holds."""

    members: np.ndarray  # (n_eyes,) bool, diseased eyes of this pool only
    count: int

    def missing(self, referred: np.ndarray) -> int:
        return self.count - int(np.sum(referred & self.members))


def _requirements(
    problem: ReferralProblem, target: float, floor: float | None
) -> list[_Requirement]:
    """The pooled target, and with a floor one requirement per source with diseased eyes."""
    diseased = problem.diseased
    needed = [_Requirement(diseased, _count(target, int(diseased.sum())))]
    if floor is None:
        return needed
    if problem.sources is None:
        raise ValueError("a per-source sensitivity floor needs each eye's source")
    for source in np.unique(problem.sources):
        members = diseased & (problem.sources == source)
        if members.any():
            needed.append(_Requirement(members, _count(floor, int(members.sum()))))
    return needed


def _count(fraction: float, n: int) -> int:
    return int(np.ceil(fraction * n - 1e-9))


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


def _best_step(
    scores: np.ndarray,
    diseased: np.ndarray,
    wanted: np.ndarray,
    referred: np.ndarray,
    cuts: np.ndarray,
) -> tuple[int, float] | None:
    """The (rule, new cut) adding the most wanted diseased eyes per normal eye (ties: more)."""
    best: tuple[float, int, int, float] | None = None
    waiting = ~referred
    for j in range(scores.shape[1]):
        s, d, w = scores[waiting, j], diseased[waiting], wanted[waiting]
        keep = s < cuts[j]
        s, d, w = s[keep], d[keep], w[keep]
        if s.size == 0:
            continue
        order = np.argsort(-s, kind="stable")
        s, d, w = s[order], d[order], w[order]
        gained, cost = np.cumsum(w), np.cumsum(~d)
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


def _raise_cuts(scores: np.ndarray, cuts: np.ndarray, needed: list[_Requirement]) -> None:
    """Raise each cut to the highest value that keeps every requirement met (in place)."""
    moved = True
    while moved:
        moved = False
        for j in range(scores.shape[1]):
            if cuts[j] == OFF:
                continue
            base = refer(np.delete(scores, j, axis=1), np.delete(cuts, j))
            highest = min(_highest_cut(scores[:, j], base, r, cuts[j]) for r in needed)
            if highest > cuts[j]:
                cuts[j], moved = highest, True


def _highest_cut(column: np.ndarray, base: np.ndarray, need: _Requirement, current: float) -> float:
    """The highest cut of one rule that still meets ``need``, given the eyes the other rules
    refer (``base``); ``OFF`` when they meet it alone."""
    missing = need.missing(base)
    if missing <= 0:
        return OFF
    alone = np.sort(column[need.members & ~base])[::-1]
    return float(alone[missing - 1]) if missing <= alone.size else current


def search_cuts(problem: ReferralProblem, target: float, floor: float | None = None) -> np.ndarray:
    """Cuts per rule (``OFF``: rule unused) reaching ``target`` sensitivity, and ``floor`` in
    every source if given, with specificity high."""
    scores, diseased = problem.scores, problem.diseased
    needed = _requirements(problem, target, floor)
    cuts = np.full(scores.shape[1], OFF)
    referred = np.zeros(len(diseased), dtype=bool)
    while short := [r for r in needed if r.missing(referred) > 0]:
        # the pooled target first; then only the diseased eyes of sources below their floor
        pooled_first = short[0] is needed[0]
        wanted = short[0].members if pooled_first else np.any([r.members for r in short], axis=0)
        step = _best_step(scores, diseased, wanted, referred, cuts)
        if step is None:
            break
        j, value = step
        cuts[j] = value
        referred = refer(scores, cuts)
    _raise_cuts(scores, cuts, needed)
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
        out["patient"] = _figures(*any_eye_per_patient(patients, referred, diseased))
    return out


def any_eye_per_patient(patients: Sequence[str], *per_eye: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each per-eye flag per patient: true when it holds for any of the patient's eyes."""
    unique, index = np.unique(np.asarray(patients), return_inverse=True)
    merged = []
    for values in per_eye:
        flags = np.zeros(len(unique), dtype=bool)
        np.logical_or.at(flags, index, values)
        merged.append(flags)
    return tuple(merged)


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
    problem_for: Callable[[np.ndarray], ReferralProblem],
    folds: np.ndarray,
    target: float,
    floor: float | None = None,
) -> np.ndarray:
    """Each fold referred with cuts chosen on the other folds: an honest referral per eye.

    ``problem_for(train)`` gives the problem with everything fitted on the ``train`` eyes only
    (the calibration temperatures too), so the held-out fold's labels shape nothing."""
    referred = np.zeros(len(folds), dtype=bool)
    for fold in np.unique(folds):
        test = folds == fold
        problem = problem_for(~test)
        cuts = search_cuts(problem.rows(~test), target, floor)
        referred[test] = refer(problem.scores[test], cuts)
    return referred
