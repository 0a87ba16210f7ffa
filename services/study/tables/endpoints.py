"""Each endpoint of the protocol against its performance goal, with the indeterminate eyes
beside it, the overall verdict on the co-primary endpoints, and the sample size the
protocol's justification implies, at the planned and at the observed prevalence."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from services.study.eye import EyeRecord
from services.study.protocol import Endpoint, Protocol
from services.study.tables.common import (
    NAIVE,
    WEIGHTED,
    Options,
    Row,
    has_reference,
    num,
    verification,
)


def _analysis(endpoint: Endpoint) -> str:
    return WEIGHTED if endpoint.analysis == "weighted" else NAIVE


def _find(
    endpoint: Endpoint,
    accuracy: Sequence[Row],
    auc: Sequence[Row],
    referral: Sequence[Row] = (),
    unit: str = "eye",
) -> Row | None:
    """The row that answers the endpoint: the referral table for the referral's sensitivity
    and specificity (its rows name the handling of ungradable eyes), the AUC table for an
    AUC, the accuracy table otherwise."""
    code = "" if endpoint.target == "referral" else endpoint.target
    if endpoint.handles_ungradable:
        handling = f"ungradable {'= referral' if endpoint.ungradable == 'referral' else 'excluded'}"
        return next(
            (
                r
                for r in referral
                if r["reader"] == endpoint.reader
                and r["unit"] == unit
                and r["ungradable"] == handling
                and r["analysis"] == _analysis(endpoint)
            ),
            None,
        )
    if endpoint.measure == "auc":
        return next(
            (r for r in auc if r["code"] == code and r["analysis"] == _analysis(endpoint)), None
        )
    return next(
        (
            r
            for r in accuracy
            if r["reader"] == endpoint.reader
            and r["code"] == code
            and r["analysis"] == _analysis(endpoint)
        ),
        None,
    )


def _variants(endpoint: Endpoint) -> list[tuple[Endpoint, str]]:
    """The endpoint as the protocol states it, and where the protocol's handling of ungradable
    eyes applies, the other handling as a secondary row (a sensitivity analysis)."""
    found = [(endpoint, endpoint.kind)]
    if endpoint.handles_ungradable:
        other = "excluded" if endpoint.ungradable == "referral" else "referral"
        found.append(
            (
                replace(endpoint, ungradable=other),
                f"secondary (ungradable {other}: sensitivity analysis)",
            )
        )
    return found


def endpoints(
    protocol: Protocol,
    accuracy: Sequence[Row],
    auc: Sequence[Row],
    referral: Sequence[Row] = (),
    records: Sequence[EyeRecord] = (),
) -> list[Row]:
    """Per endpoint: the estimate and interval, the goal, the test and its result; with the
    protocol's handling of ungradable eyes, then the other one as a secondary row; beside
    each, the reader's indeterminate (ungradable) eyes, how many of them could never be
    verified, and which eyes the estimate describes."""
    rows = []
    for stated in protocol.endpoints:
        for endpoint, kind in _variants(stated):
            row = _judged(endpoint, kind, protocol, accuracy, auc, referral)
            rows.append(row | _indeterminate(endpoint, records))
    return rows


def _indeterminate(endpoint: Endpoint, records: Sequence[EyeRecord]) -> Row:
    """The reader's indeterminate eyes among all eyes with an index-test result, those of them
    outside the verifiable population, and the population the estimate describes: the
    weighted analysis stands for the verifiable eyes only (positivity)."""
    read = [r for r in records if endpoint.reader == "model" or endpoint.reader in r.reads]
    ungradable = [
        r
        for r in read
        if (
            not r.model_gradable if endpoint.reader == "model" else r.reads[endpoint.reader] is None
        )
    ]
    # outside the verifiable population: no estimated probability of verification
    never = sum(r.verification_probability is None for r in ungradable)
    outside = sum(r.verification_probability is None for r in read)
    if endpoint.analysis == "weighted":
        describes = (
            f"the verifiable eyes ({len(read) - outside} of {len(read)}): the {outside} "
            f"never verifiable ({never} of them indeterminate) are outside the estimate"
        )
    else:
        describes = "the eyes with a reference, the concordant read taken as truth"
    return {
        "indeterminate_eyes": len(ungradable),
        "indeterminate_share": num(len(ungradable) / len(read)) if read else "",
        "indeterminate_never_verifiable": never,
        "describes": describes,
    }


def verdict(protocol: Protocol, rows: Sequence[Row], options: Options) -> list[Row]:
    """The study's answer: whether every co-primary endpoint met its goal, by the protocol's
    interval, and whether the analysis ran as the protocol fixed it (replicates, seed)."""
    primary = [r for r in rows if r["kind"] == "primary"]
    met = [r for r in primary if r["result"] == "met"]
    overridden = protocol.overridden(options.replicates, options.seed)
    return [
        {
            "all_co_primary_endpoints_met": "yes" if primary and len(met) == len(primary) else "no",
            "co_primary_endpoints": len(primary),
            "met": len(met),
            "not_met": "; ".join(
                f"{r['endpoint']} ({r['result']})" for r in primary if r not in met
            ),
            "interval": f"{protocol.interval} ({options.replicates} replicates, "
            f"seed {options.seed})",
            "protocol": "overridden: " + "; ".join(overridden) if overridden else "as registered",
        }
    ]


def _judged(
    endpoint: Endpoint,
    kind: str,
    protocol: Protocol,
    accuracy: Sequence[Row],
    auc: Sequence[Row],
    referral: Sequence[Row],
) -> Row:
    found = _find(endpoint, accuracy, auc, referral, protocol.analysis_unit)
    measure = endpoint.measure
    estimate = low = high = ""
    if found is not None:
        estimate, low, high = found[measure], found[f"{measure}_low"], found[f"{measure}_high"]
    bound = low if endpoint.bound == "lower" else high
    if bound == "":
        result = "not estimable"
    elif endpoint.bound == "lower":
        result = "met" if float(bound) > endpoint.goal else "not met"
    else:
        result = "met" if float(bound) < endpoint.goal else "not met"
    sign = ">" if endpoint.bound == "lower" else "<"
    return {
        "endpoint": endpoint.name,
        "kind": kind,
        "reader": endpoint.reader,
        "target": endpoint.target,
        "measure": measure,
        "analysis": _analysis(endpoint),
        "unit": protocol.analysis_unit,
        "ungradable": endpoint.ungradable or "not applicable",
        "estimate": estimate,
        "low": low,
        "high": high,
        "goal": num(endpoint.goal),
        "test": f"{endpoint.bound} bound of the 95 % interval {sign} {endpoint.goal}",
        "result": result,
    }


def sample_size(
    protocol: Protocol, accuracy: Sequence[Row], records: Sequence[EyeRecord]
) -> list[Row]:
    """The protocol's sample-size justification and what it implies for the observed
    (weighted) prevalence of the endpoint's target; per eye, inflated by the design effect of
    the eyes of a patient, 1 + (m - 1) rho, with m the mean eyes per patient and rho the
    within-patient correlation of the endpoint's outcome, both estimated from the data (rho on
    the naive truth: the panel verifies too few eyes to estimate it on its own), and by Kish's
    design effect of the unequal verification weights, 1 + CV^2."""
    size = protocol.sample_size
    if size is None:
        return []
    endpoint = next(e for e in protocol.endpoints if e.name == size.endpoint)
    needed = size.positives_needed(endpoint.goal)
    code = "" if endpoint.target == "referral" else endpoint.target
    found = next(
        (
            r
            for r in accuracy
            if r["reader"] == endpoint.reader
            and r["code"] == code
            and r["analysis"] == _analysis(endpoint)
        ),
        None,
    )  # the target's (weighted) prevalence among the eyes of the analysis
    observed = math.nan
    if found is not None:
        cells = [float(found[f"{c}_weighted"]) for c in ("tp", "fp", "fn", "tn")]
        if sum(cells):
            observed = (cells[0] + cells[2]) / sum(cells)
    share = (
        (lambda p: p) if endpoint.measure in ("sensitivity", "npv", "auc") else (lambda p: 1 - p)
    )
    per_patient, rho = _clustering(records, code, endpoint.measure != "specificity")
    clustering = 1.0
    if protocol.analysis_unit == "eye" and math.isfinite(rho):
        clustering = 1 + (per_patient - 1) * rho
    kish = _kish(records, code, endpoint.measure != "specificity", _analysis(endpoint))
    effect = clustering * kish
    clustered = math.ceil(needed * effect)
    planned_total = math.ceil(clustered / share(size.prevalence))
    observed_total = math.ceil(clustered / share(observed)) if observed == observed else None
    return [
        {
            "endpoint": endpoint.name,
            "goal": num(endpoint.goal),
            "expected": num(size.expected),
            "alpha_one_sided": num(size.alpha),
            "power": num(size.power),
            "units_with_condition_needed_independent": needed,
            "eyes_per_patient": num(per_patient),
            "intra_patient_correlation": num(rho),
            "design_effect_clustering": num(clustering),
            "design_effect_unequal_weights": num(kish),
            "design_effect": num(effect),
            "units_with_condition_needed": clustered,
            "prevalence_planned": num(size.prevalence),
            "units_needed_planned": planned_total,
            "prevalence_observed_weighted": num(observed),
            "units_needed_observed": "" if observed_total is None else observed_total,
            "units_enrolled": len(records),
            "unit": protocol.analysis_unit,
            "note": "eyes are clustered in patients and weighted unequally: the need for "
            "independent units is multiplied by the design effect of clustering 1 + (m - 1) rho "
            "(m eyes per patient with the condition, rho the one-way ANOVA intra-patient "
            "correlation of the model's result among them, estimated on the naive truth: the "
            "eyes with a reference, the concordant read taken as truth) and by Kish's design "
            "effect of unequal weights 1 + CV^2 of the endpoint analysis' weights among the "
            "eyes with (without) the condition",
        }
    ]


def _kish(records: Sequence[EyeRecord], code: str, diseased: bool, analysis: str) -> float:
    """Kish's design effect of unequal weights, 1 + CV^2 = n sum(w^2) / sum(w)^2 (population
    CV), over the weights of the eyes with (``diseased``) or without the target condition in
    the analysis (1 in the naive one: every weight is 1)."""
    v = verification(records, analysis)
    present = np.array([code in ref if code else bool(ref) for ref in v.reference], dtype=bool)
    weights = v.weight[(v.weight > 0) & (present == diseased)]
    if not len(weights):
        return 1.0
    return float(len(weights) * (weights**2).sum() / weights.sum() ** 2)


def _clustering(records: Sequence[EyeRecord], code: str, diseased: bool) -> tuple[float, float]:
    """(mean eyes per patient, intra-patient correlation) of the model's referral among the
    eyes with (``diseased``) or without the target condition, by the one-way ANOVA
    estimator (Fleiss 1981), clipped to [0, 1]."""
    groups: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if not has_reference(record) or not record.model_gradable or record.reference is None:
            continue
        present = code in record.reference if code else bool(record.reference)
        if present == diseased:
            positive = code in record.model_codes if code else record.model_referral
            groups[record.patient_key].append(float(positive))
    sizes = np.array([len(g) for g in groups.values()], dtype=float)
    total, k = float(sizes.sum()), len(sizes)
    if k < 2 or total <= k:
        return (total / k if k else math.nan), math.nan
    values = [np.array(g) for g in groups.values()]
    grand = float(np.concatenate(values).mean())
    between = sum(len(v) * (v.mean() - grand) ** 2 for v in values) / (k - 1)
    within = sum(float(((v - v.mean()) ** 2).sum()) for v in values) / (total - k)
    n0 = (total - float((sizes**2).sum()) / total) / (k - 1)
    denominator = between + (n0 - 1) * within
    rho = (between - within) / denominator if denominator > 0 else math.nan
    return total / k, float(np.clip(rho, 0.0, 1.0)) if math.isfinite(rho) else math.nan
