"""Each endpoint of the protocol against its performance goal, and the sample size the
protocol's justification implies, at the planned and at the observed prevalence."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from services.study.eye import EyeRecord
from services.study.protocol import Endpoint, Protocol
from services.study.tables.common import NAIVE, WEIGHTED, Row, has_reference, num


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
    protocol: Protocol, accuracy: Sequence[Row], auc: Sequence[Row], referral: Sequence[Row] = ()
) -> list[Row]:
    """Per endpoint: the estimate and interval, the goal, the test and its result; with the
    protocol's handling of ungradable eyes, then the other one as a secondary row."""
    rows = []
    for stated in protocol.endpoints:
        for endpoint, kind in _variants(stated):
            rows.append(_judged(endpoint, kind, protocol, accuracy, auc, referral))
    return rows


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
    within-patient correlation of the endpoint's outcome, both estimated from the data."""
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
    effect = 1.0
    if protocol.analysis_unit == "eye" and math.isfinite(rho):
        effect = 1 + (per_patient - 1) * rho
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
            "design_effect": num(effect),
            "units_with_condition_needed": clustered,
            "prevalence_planned": num(size.prevalence),
            "units_needed_planned": planned_total,
            "prevalence_observed_weighted": num(observed),
            "units_needed_observed": "" if observed_total is None else observed_total,
            "units_enrolled": len(records),
            "unit": protocol.analysis_unit,
            "note": "eyes are clustered in patients: the need for independent units is "
            "multiplied by the design effect 1 + (m - 1) rho (m eyes per patient with the "
            "condition, rho the one-way ANOVA intra-patient correlation of the model's "
            "result among them, on the eyes with a reference)",
        }
    ]


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
