"""The referral (refer or not) of the model and the graders, naive and corrected for partial
verification (Begg-Greenes), with patient-bootstrap intervals."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from services.statistics.bootstrap import bootstrap_sums, percentile_columns
from services.statistics.verification import Case, naive, weighted
from services.study.records import VERIFIED, EyeRecord, disease
from services.study.tables.common import (
    MODEL,
    NAIVE,
    WEIGHTED,
    Options,
    Row,
    bootstrap_label,
    has_reference,
    num,
)


def _cases_for(
    records: Sequence[EyeRecord], reader: str, unit: str, ungradable_as_referral: bool
) -> list[tuple[int, Case]]:
    """Verification-bias cases for the referral: per eye, or per visit (any eye), each with
    its row: the record's index, or the visit's (in order of first appearance)."""
    rows = []
    for record in records:
        # Only the eye without a reference is left out: a fellow eye keeps its own.
        if not has_reference(record):
            continue
        if reader == MODEL:
            test = record.model_referral if record.model_gradable else ungradable_as_referral
            if not record.model_gradable and not ungradable_as_referral:
                continue
        else:
            codes = record.reads.get(reader)
            if reader not in record.reads:
                continue
            if codes is None and not ungradable_as_referral:
                continue
            test = True if codes is None else bool(codes)
        probability = record.verification_probability
        verified = record.reference_route in VERIFIED and probability is not None
        truth = disease(record.reference) if verified else None
        fallback = bool(disease(record.reference))
        rows.append(
            (
                record,
                Case(
                    bool(test),
                    truth,
                    float(probability or 1.0),  # used for verified eyes only
                    fallback,
                    record.patient_key,
                ),
            )
        )
    if unit == "eye":
        index = {id(r): i for i, r in enumerate(records)}
        return [(index[id(record)], case) for record, case in rows]
    order = _visit_order(records)
    visits: dict[str, list[Case]] = defaultdict(list)
    for record, case in rows:
        visits[record.case_key].append(case)
    merged = []
    for key, cases in visits.items():
        truths = [c.truth for c in cases]
        truth = None if any(t is None for t in truths) else any(bool(t) for t in truths)
        merged.append(
            (
                order[key],
                Case(
                    any(c.test for c in cases),
                    truth,
                    cases[0].probability,
                    any(c.fallback for c in cases),
                    cases[0].cluster,
                ),
            )
        )
    return merged


def _visit_order(records: Sequence[EyeRecord]) -> dict[str, int]:
    order: dict[str, int] = {}
    for record in records:
        order.setdefault(record.case_key, len(order))
    return order


def _rate_terms(cases: Sequence[Case], weighted: bool) -> np.ndarray:
    """Per case the four weighted counts sensitivity and specificity are ratios of: diseased,
    diseased and referred, healthy, healthy and not referred (weighted: verified cases only,
    by 1 / inclusion probability; naive: every case, the grader's read where unverified)."""
    terms = np.zeros((len(cases), 4))
    for i, case in enumerate(cases):
        if weighted and case.truth is None:
            continue
        truth = case.truth if case.truth is not None else case.fallback
        weight = 1 / case.probability if weighted else 1.0
        terms[i] = (
            weight * truth,
            weight * (truth and case.test),
            weight * (not truth),
            weight * (not truth and not case.test),
        )
    return terms


def referral(records: Sequence[EyeRecord], options: Options) -> list[Row]:
    """Referral sensitivity and specificity per reader and unit: the inverse-probability-
    weighted correction first, then the naive (discrepant) analysis, both with patient
    cluster-bootstrap intervals (one resampling of the patients for every row of a unit);
    ungradable counted as referral (intention to diagnose) or excluded (complete case)."""
    readers = [MODEL, *sorted({g for r in records for g in r.reads})]
    order = _visit_order(records)
    visit_patient = {r.case_key: r.patient_key for r in records}
    clusters = {
        "eye": [r.patient_key for r in records],
        "visit": [visit_patient[key] for key in order],
    }
    labels: dict[str, list[Row]] = {"eye": [], "visit": []}
    columns: dict[str, list[np.ndarray]] = {"eye": [], "visit": []}
    for reader in readers:
        for unit in ("eye", "visit"):
            for handling, as_referral in (
                ("ungradable = referral", True),
                ("ungradable excluded", False),
            ):
                indexed = _cases_for(records, reader, unit, as_referral)
                if not indexed:
                    continue
                cases = [case for _, case in indexed]
                rows = np.array([i for i, _ in indexed], dtype=int)
                for analysis, statistic in ((WEIGHTED, weighted), (NAIVE, naive)):
                    sens, spec = statistic(cases)
                    terms = np.zeros((len(clusters[unit]), 4))
                    np.add.at(terms, rows, _rate_terms(cases, weighted=statistic is weighted))
                    columns[unit].append(terms)
                    labels[unit].append(
                        {
                            "_seq": sum(len(v) for v in labels.values()),
                            "_k": len(labels[unit]),
                            "reader": reader,
                            "unit": unit,
                            "ungradable": handling,
                            "analysis": analysis,
                            "n": len(cases),
                            "verified": sum(c.truth is not None for c in cases),
                            "sensitivity": num(sens),
                            "specificity": num(spec),
                        }
                    )
    intervals: dict[str, list[tuple[float, float, float, float]]] = {}
    for unit, blocks in columns.items():
        if not blocks:
            intervals[unit] = []
            continue
        sums = bootstrap_sums(clusters[unit], np.hstack(blocks), options.replicates, options.seed)
        sums = sums.reshape(options.replicates, len(blocks), 4)
        with np.errstate(invalid="ignore", divide="ignore"):
            sens_low, sens_high = percentile_columns(sums[:, :, 1] / sums[:, :, 0])
            spec_low, spec_high = percentile_columns(sums[:, :, 3] / sums[:, :, 2])
        intervals[unit] = list(zip(sens_low, sens_high, spec_low, spec_high, strict=True))
    result = []
    for label in sorted((r for rows in labels.values() for r in rows), key=lambda r: r["_seq"]):
        s_low, s_high, p_low, p_high = intervals[label["unit"]][label["_k"]]
        row = {k: v for k, v in label.items() if not k.startswith("_")}
        result.append(
            {k: row[k] for k in ("reader", "unit", "ungradable", "analysis", "n", "verified")}
            | {
                "sensitivity": row["sensitivity"],
                "sensitivity_low": num(float(s_low)),
                "sensitivity_high": num(float(s_high)),
                "specificity": row["specificity"],
                "specificity_low": num(float(p_low)),
                "specificity_high": num(float(p_high)),
                "interval": bootstrap_label(options),
            }
        )
    return result
