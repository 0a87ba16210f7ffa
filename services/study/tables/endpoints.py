"""Each endpoint of the protocol against its performance goal, and the sample size the
protocol's justification implies, at the planned and at the observed prevalence."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace

from services.study.protocol import Endpoint, Protocol
from services.study.tables.common import NAIVE, WEIGHTED, Row, num


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


def sample_size(protocol: Protocol, accuracy: Sequence[Row], enrolled_eyes: int) -> list[Row]:
    """The protocol's sample-size justification and what it implies for the observed
    (weighted) prevalence of the endpoint's target."""
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
    planned_total = math.ceil(needed / share(size.prevalence))
    observed_total = math.ceil(needed / share(observed)) if observed == observed else None
    return [
        {
            "endpoint": endpoint.name,
            "goal": num(endpoint.goal),
            "expected": num(size.expected),
            "alpha_one_sided": num(size.alpha),
            "power": num(size.power),
            "units_with_condition_needed": needed,
            "prevalence_planned": num(size.prevalence),
            "units_needed_planned": planned_total,
            "prevalence_observed_weighted": num(observed),
            "units_needed_observed": "" if observed_total is None else observed_total,
            "units_enrolled": enrolled_eyes,
            "unit": protocol.analysis_unit,
            "note": "units are eyes clustered in patients: the design effect of two eyes "
            "per patient raises the need (see the patient-clustered intervals)",
        }
    ]
