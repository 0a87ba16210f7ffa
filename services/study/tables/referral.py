"""The referral (refer or not) of the model and the graders, naive and corrected for partial
verification (Begg-Greenes), with patient-bootstrap intervals."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

import numpy as np

from services.statistics.bootstrap import bootstrap_sums, percentile_interval
from services.statistics.verification import Case, naive, weighted
from services.study.records import VERIFIED, EyeRecord, ReferenceRoute, disease
from services.study.tables.common import (
    MODEL,
    Options,
    Row,
    num,
)


def _cases_for(
    records: Sequence[EyeRecord], reader: str, unit: str, ungradable_as_referral: bool
) -> list[Case]:
    """Verification-bias cases for the referral: per eye, or per visit (any eye)."""
    rows = []
    for record in records:
        if record.inclusion_probability is None or (
            record.triaged_read is None and record.reference is None
        ):
            continue
        if record.reference_route in (ReferenceRoute.PANEL_PENDING, ReferenceRoute.UNGRADABLE):
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
        verified = record.reference_route in VERIFIED
        truth = disease(record.reference) if verified else None
        fallback = bool(disease(record.triaged_read))
        rows.append(
            (
                record,
                Case(
                    bool(test),
                    truth,
                    float(record.inclusion_probability),
                    fallback,
                    record.patient_key,
                ),
            )
        )
    if unit == "eye":
        return [case for _, case in rows]
    visits: dict[str, list[Case]] = defaultdict(list)
    for record, case in rows:
        visits[record.case_key].append(case)
    merged = []
    for cases in visits.values():
        truths = [c.truth for c in cases]
        truth = None if any(t is None for t in truths) else any(bool(t) for t in truths)
        merged.append(
            Case(
                any(c.test for c in cases),
                truth,
                cases[0].probability,
                any(c.fallback for c in cases),
                cases[0].cluster,
            )
        )
    return merged


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
    """Referral sensitivity and specificity per reader and unit: naive (discrepant analysis)
    beside the inverse-probability-weighted correction, both with cluster-bootstrap intervals;
    ungradable counted as referral (intention to diagnose) or excluded (complete case)."""
    rows = []
    readers = [MODEL, *sorted({g for r in records for g in r.reads})]
    for reader in readers:
        for unit in ("eye", "visit"):
            for handling, as_referral in (
                ("ungradable = referral", True),
                ("ungradable excluded", False),
            ):
                cases = _cases_for(records, reader, unit, as_referral)
                if not cases:
                    continue
                for analysis, statistic in (
                    ("naive", naive),
                    ("weighted (Begg-Greenes)", weighted),
                ):
                    sens, spec = statistic(cases)
                    sums = bootstrap_sums(
                        [c.cluster for c in cases],
                        _rate_terms(cases, weighted=statistic is weighted),
                        options.replicates,
                        options.seed,
                    )
                    with np.errstate(invalid="ignore", divide="ignore"):
                        s_low, s_high = percentile_interval(sums[:, 1] / sums[:, 0])
                        p_low, p_high = percentile_interval(sums[:, 3] / sums[:, 2])
                    rows.append(
                        {
                            "reader": reader,
                            "unit": unit,
                            "ungradable": handling,
                            "analysis": analysis,
                            "n": len(cases),
                            "verified": sum(c.truth is not None for c in cases),
                            "sensitivity": num(sens),
                            "sensitivity_low": num(s_low),
                            "sensitivity_high": num(s_high),
                            "specificity": num(spec),
                            "specificity_low": num(p_low),
                            "specificity_high": num(p_high),
                            "interval": f"cluster bootstrap by patient, {options.replicates} "
                            f"replicates, seed {options.seed}",
                        }
                    )
    return rows
