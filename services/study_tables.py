"""The study's tables from the analysis set (``services.study``): each a list of rows (dicts
with fixed keys, in a fixed order) so that the CSVs of a snapshot are the same to the byte."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.statistics.accuracy import Estimate, Interval, TwoByTwo
from services.statistics.bootstrap import bootstrap_auc, bootstrap_sums, percentile_interval
from services.statistics.calibration import calibration, net_benefit, reliability
from services.statistics.paired import (
    cohen_kappa,
    fleiss_kappa,
    gwet_ac1,
    mcnemar_exact,
    newcombe_paired,
)
from services.statistics.roc import delong
from services.statistics.verification import Case, naive, weighted
from services.study import VERIFIED, EyeRecord, ReferenceRoute, disease
from services.taxonomy import level_of_code, load_taxonomy, route_of_code

Row = dict[str, Any]
MODEL = "model"
POOLED = "graders pooled"


@dataclass(frozen=True)
class Options:
    replicates: int = 500  # bootstrap replicates
    seed: int = 20211


def has_reference(record: EyeRecord) -> bool:
    return record.reference is not None and (
        record.reference_route == ReferenceRoute.CONCORDANT or record.reference_route in VERIFIED
    )


def _num(value: float | int | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _estimate(prefix: str, estimate: Estimate) -> Row:
    return {
        prefix: _num(estimate.estimate),
        f"{prefix}_low": _num(estimate.low),
        f"{prefix}_high": _num(estimate.high),
    }


def flow(records: Sequence[EyeRecord]) -> list[Row]:
    """STARD flow counts, in eyes (and visits)."""
    routes = Counter(r.reference_route for r in records)
    rows = [
        ("photographed", len(records)),
        ("gradable for the model", sum(r.model_gradable for r in records)),
        ("index test result (model)", sum(r.model_gradable for r in records)),
        ("read by a grader", sum(bool(r.reads) for r in records)),
    ]
    rows += [(f"reference: {route.value}", routes.get(route, 0)) for route in ReferenceRoute]
    rows += [
        ("with a reference standard", sum(has_reference(r) for r in records)),
        ("excluded: no reference standard", sum(not has_reference(r) for r in records)),
    ]
    visits = len({r.case_key for r in records})
    return [{"step": step, "eyes": count, "visits_total": visits} for step, count in rows]


def baseline(records: Sequence[EyeRecord]) -> list[Row]:
    """Patients (first visit in the export) by age band, sex, site and camera."""
    first: dict[str, EyeRecord] = {}
    for record in records:
        first.setdefault(record.patient_key, record)
    rows = []
    for attribute in ("age_band", "sex", "site", "camera"):
        counts = Counter(getattr(r, attribute) for r in first.values())
        for value, count in sorted(counts.items()):
            rows.append(
                {
                    "characteristic": attribute,
                    "value": value,
                    "patients": count,
                    "share": _num(count / len(first)),
                }
            )
    return rows


def _reader_results(
    records: Sequence[EyeRecord],
) -> dict[str, list[tuple[EyeRecord, set[str] | None]]]:
    """Per reader, (eye, codes read or None for ungradable) for the eyes that reader read."""
    readers: dict[str, list[tuple[EyeRecord, set[str] | None]]] = defaultdict(list)
    for record in records:
        readers[MODEL].append((record, record.model_codes if record.model_gradable else None))
        for grader, codes in sorted(record.reads.items()):
            readers[grader].append((record, codes))
            readers[POOLED].append((record, codes))
    return dict(sorted(readers.items(), key=lambda kv: (kv[0] != MODEL, kv[0] == POOLED, kv[0])))


def _classes(records: Sequence[EyeRecord]) -> list[tuple[int, str, str, str]]:
    routes = sorted({r.route for r in records})
    found = []
    for route in routes:
        taxonomy = load_taxonomy(route)
        for level in (1, 2):
            for node in taxonomy.level(level):
                if not node.normal:
                    found.append((level, route, node.code, node.name))
    return found


def accuracy(records: Sequence[EyeRecord], method: Interval) -> list[Row]:
    """Per reader, per class (levels 1 and 2) and for the referral: the 2x2 table and its
    measures against the reference (naive: concordant reads accepted), eyes with a reference
    and a gradable result."""
    rows = []
    readers = _reader_results(records)
    targets: list[tuple[str, str, str, Callable[[set[str]], bool]]] = [
        ("referral", "", "any disease (referral)", lambda codes: bool(codes))
    ]
    for depth, _route, code, name in _classes(records):
        targets.append((f"level {depth}", code, name, _has(code)))
    for reader, results in readers.items():
        for level, code, name, present in targets:
            pairs = [
                (present(codes), present(record.reference or set()))
                for record, codes in results
                if codes is not None
                and has_reference(record)
                and (not code or route_of_code(code) == record.route)
            ]
            if not pairs:
                continue
            table = TwoByTwo.of([t for t, _ in pairs], [d for _, d in pairs])
            row: Row = {
                "reader": reader,
                "level": level,
                "code": code,
                "class": name,
                "method": method.value,
                "tp": table.tp,
                "fp": table.fp,
                "fn": table.fn,
                "tn": table.tn,
            }
            for measure, estimate in table.measures(method).items():
                row |= _estimate(measure, estimate)
            rows.append(row)
    return rows


def _has(code: str) -> Callable[[set[str]], bool]:
    return lambda codes: code in codes


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
                            "sensitivity": _num(sens),
                            "sensitivity_low": _num(s_low),
                            "sensitivity_high": _num(s_high),
                            "specificity": _num(spec),
                            "specificity_low": _num(p_low),
                            "specificity_high": _num(p_high),
                            "interval": f"cluster bootstrap by patient, {options.replicates} "
                            f"replicates, seed {options.seed}",
                        }
                    )
    return rows


def weighted_averages(records: Sequence[EyeRecord], options: Options) -> list[Row]:
    """Prevalence-weighted average sensitivity and specificity per level (the paper's summary):
    each class weighted by its reference positives; cluster-bootstrap interval."""
    rows = []
    eyes = [r for r in records if has_reference(r) and r.model_gradable]
    for level in (1, 2):
        classes = [(route, code) for lvl, route, code, _ in _classes(records) if lvl == level]
        terms = np.zeros((len(eyes), 4 * len(classes)))
        for i, record in enumerate(eyes):
            for j, (route, code) in enumerate(classes):
                if record.route == route:
                    truth, said = code in (record.reference or set()), code in record.model_codes
                    terms[i, 4 * j : 4 * j + 4] = (
                        truth,
                        truth and said,
                        not truth,
                        not truth and not said,
                    )
        sens, spec = _weighted_average(terms.sum(axis=0)[None, :])
        sums = bootstrap_sums(
            [r.patient_key for r in eyes], terms, options.replicates, options.seed
        )
        boot_sens, boot_spec = _weighted_average(sums)
        s_low, s_high = percentile_interval(boot_sens)
        p_low, p_high = percentile_interval(boot_spec)
        rows.append(
            {
                "reader": MODEL,
                "level": f"level {level}",
                "weighting": "reference positives per class",
                "sensitivity": _num(float(sens[0])),
                "sensitivity_low": _num(s_low),
                "sensitivity_high": _num(s_high),
                "specificity": _num(float(spec[0])),
                "specificity_low": _num(p_low),
                "specificity_high": _num(p_high),
            }
        )
    return rows


def _weighted_average(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows of per-class (positives, true positives, negatives, true negatives) to the
    positives-weighted average sensitivity and specificity over classes with both."""
    pos, tp, neg, tn = (sums[:, k::4] for k in range(4))
    usable = (pos > 0) & (neg > 0)
    weight = np.where(usable, pos, 0.0)
    sens = np.where(usable, tp / np.where(pos > 0, pos, 1), 0.0)
    spec = np.where(usable, tn / np.where(neg > 0, neg, 1), 0.0)
    total = weight.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (weight * sens).sum(axis=1) / total, (weight * spec).sum(axis=1) / total


def auc(records: Sequence[EyeRecord], options: Options) -> list[Row]:
    """The model's AUC per class with DeLong's interval and a patient-cluster bootstrap."""
    rows = []
    for level, route, code, name in _classes(records):
        eyes = [
            r for r in records if r.route == route and has_reference(r) and code in r.probabilities
        ]
        truth = np.array([code in (r.reference or set()) for r in eyes])
        if not truth.any() or truth.all():
            continue
        scores = np.array([r.probabilities[code] for r in eyes])
        result = delong(scores, truth)

        low, high = bootstrap_auc(
            scores, truth, [r.patient_key for r in eyes], options.replicates, options.seed
        )
        rows.append(
            {
                "level": level,
                "code": code,
                "class": name,
                "positives": result.positives,
                "negatives": result.negatives,
                "auc": _num(result.auc),
                "delong_low": _num(result.low),
                "delong_high": _num(result.high),
                "bootstrap_low": _num(low),
                "bootstrap_high": _num(high),
            }
        )
    return rows


def paired(records: Sequence[EyeRecord]) -> list[Row]:
    """Model against the triaged grader read on the same eyes (referral), verified eyes."""
    eyes = [
        r for r in records if has_reference(r) and r.model_gradable and r.triaged_read is not None
    ]
    rows = []
    for _group, wanted in (("diseased", True), ("non-diseased", False)):
        chosen = [r for r in eyes if bool(r.reference) == wanted]
        model_right = [r.model_referral == wanted for r in chosen]
        grader_right = [bool(r.triaged_read) == wanted for r in chosen]
        both = sum(m and g for m, g in zip(model_right, grader_right, strict=True))
        only_model = sum(m and not g for m, g in zip(model_right, grader_right, strict=True))
        only_grader = sum(g and not m for m, g in zip(model_right, grader_right, strict=True))
        neither = len(chosen) - both - only_model - only_grader
        difference = newcombe_paired(both, only_model, only_grader, neither)
        rows.append(
            {
                "comparison": f"{'sensitivity' if wanted else 'specificity'}: model - grader",
                "eyes": len(chosen),
                "both_correct": both,
                "only_model": only_model,
                "only_grader": only_grader,
                "neither": neither,
                "difference": _num(difference.estimate),
                "newcombe_low": _num(difference.low),
                "newcombe_high": _num(difference.high),
                "mcnemar_exact_p": _num(mcnemar_exact(both, only_model, only_grader, neither)),
            }
        )
    table = [[0, 0], [0, 0]]
    for r in eyes:
        table[int(r.model_referral)][int(bool(r.triaged_read))] += 1
    kappa = cohen_kappa(table)
    rows.append(
        {
            "comparison": "Cohen's kappa, referral, model vs grader",
            "eyes": kappa.n,
            "difference": _num(kappa.kappa),
            "newcombe_low": _num(kappa.low),
            "newcombe_high": _num(kappa.high),
        }
    )
    several = [r for r in records if len([c for c in r.reads.values() if c is not None]) >= 2]
    if several:
        ratings = np.array(
            [
                [
                    sum(not c for c in r.reads.values() if c is not None),
                    sum(bool(c) for c in r.reads.values() if c is not None),
                ]
                for r in several
            ]
        )
        rows.append(
            {
                "comparison": "Fleiss' kappa, referral, graders",
                "eyes": len(several),
                "difference": _num(fleiss_kappa(ratings)),
            }
        )
        rows.append(
            {
                "comparison": "Gwet's AC1, referral, graders",
                "eyes": len(several),
                "difference": _num(gwet_ac1(ratings)),
            }
        )
    return rows


def disease_risk(record: EyeRecord) -> float:
    """The model's risk of any disease in an eye: its highest level-1 disease probability."""
    taxonomy = load_taxonomy(record.route)
    values = [record.probabilities.get(n.code, 0.0) for n in taxonomy.level(1) if not n.normal]
    return max(values, default=0.0)


def calibration_rows(records: Sequence[EyeRecord]) -> tuple[list[Row], list[Row], list[Row]]:
    """Calibration per class and for any disease; reliability bins; decision curve."""
    summary, bins, curve = [], [], []
    targets = [("any disease", "", disease_risk)] + [
        (name, code, lambda r, c=code: r.probabilities.get(c, math.nan))
        for level, route, code, name in _classes(records)
    ]
    for name, code, risk in targets:
        eyes = [
            r
            for r in records
            if has_reference(r)
            and r.model_gradable
            and (not code or route_of_code(code) == r.route)
        ]
        if not eyes:
            continue
        p = np.array([risk(r) for r in eyes])
        y = np.array(
            [(code in (r.reference or set())) if code else bool(r.reference) for r in eyes]
        )
        fitted = calibration(p, y)
        summary.append(
            {
                "target": name,
                "code": code,
                "eyes": fitted.n,
                "events": fitted.events,
                "brier": _num(fitted.brier),
                "intercept": _num(fitted.intercept),
                "slope": _num(fitted.slope),
            }
        )
        for predicted, observed, count in reliability(p, y):
            bins.append(
                {
                    "target": name,
                    "code": code,
                    "mean_predicted": _num(predicted),
                    "observed": _num(observed),
                    "eyes": count,
                }
            )
        if not code:
            prevalence = float(y.mean())
            for threshold in np.round(np.arange(0.05, 0.55, 0.05), 2):
                t = float(threshold)
                curve.append(
                    {
                        "threshold": _num(t, 2),
                        "model_risk": _num(net_benefit(p, y, t)),
                        "model_referral": _num(
                            net_benefit(np.array([float(r.model_referral) for r in eyes]), y, t)
                        ),
                        "refer_all": _num(prevalence - (1 - prevalence) * t / (1 - t)),
                        "refer_none": _num(0.0),
                    }
                )
    return summary, bins, curve


SUBGROUPS = (
    ("site", "prespecified"),
    ("model_version", "prespecified"),
    ("age_band", "prespecified"),
    ("sex", "prespecified"),
    ("camera", "exploratory"),
)


def subgroups(records: Sequence[EyeRecord]) -> list[Row]:
    rows = []
    for attribute, kind in SUBGROUPS:
        for value in sorted({getattr(r, attribute) for r in records}):
            chosen = [
                r
                for r in records
                if getattr(r, attribute) == value and has_reference(r) and r.model_gradable
            ]
            if not chosen:
                continue
            table = TwoByTwo.of(
                [r.model_referral for r in chosen], [bool(r.reference) for r in chosen]
            )
            measures = table.measures(Interval.WILSON)
            rows.append(
                {
                    "subgroup": attribute,
                    "value": value,
                    "analysis": kind,
                    "eyes": len(chosen),
                    "tp": table.tp,
                    "fp": table.fp,
                    "fn": table.fn,
                    "tn": table.tn,
                }
                | _estimate("sensitivity", measures["sensitivity"])
                | _estimate("specificity", measures["specificity"])
            )
    return rows


def top3(records: Sequence[EyeRecord]) -> list[Row]:
    """Reader comparison: a hit is any reference level-2 class among the reader's (up to three)
    level-2 answers: the model's top three classes, a grader's recorded findings."""
    eyes = [
        r
        for r in records
        if has_reference(r) and any(level_of_code(c) == 2 for c in r.reference or set())
    ]
    rows = []
    for reader, results in _reader_results(eyes).items():
        hits = total = 0
        for record, codes in results:
            truth = {c for c in record.reference or set() if level_of_code(c) == 2}
            answers = (
                set(record.top3)
                if reader == MODEL
                else {c for c in (codes or set()) if level_of_code(c) == 2}
            )
            hits += bool(truth & set(sorted(answers)[:3] if reader != MODEL else answers))
            total += 1
        estimate = Interval.WILSON
        from services.statistics.accuracy import proportion

        rows.append(
            {"reader": reader, "eyes": total, "hits": hits}
            | _estimate("top3_accuracy", proportion(hits, total, estimate))
        )
    return rows


def imrmc(records: Sequence[EyeRecord]) -> list[Row]:
    """Input for iMRMC: readerID, caseID, modalityID, score; truth rows first."""
    eyes = [r for r in records if has_reference(r) and r.model_gradable]
    rows: list[Row] = []
    for r in eyes:
        rows.append(
            {
                "readerID": "-1",
                "caseID": f"{r.case_key}:{r.eye}",
                "modalityID": "truth",
                "score": int(bool(r.reference)),
            }
        )
    for r in eyes:
        rows.append(
            {
                "readerID": MODEL,
                "caseID": f"{r.case_key}:{r.eye}",
                "modalityID": "model",
                "score": _num(disease_risk(r)),
            }
        )
        for grader, codes in sorted(r.reads.items()):
            if codes is not None:
                rows.append(
                    {
                        "readerID": grader,
                        "caseID": f"{r.case_key}:{r.eye}",
                        "modalityID": "grader",
                        "score": int(bool(codes)),
                    }
                )
    return rows


def analysis_set(records: Sequence[EyeRecord]) -> list[Row]:
    """The de-identified record per eye, for the statisticians' own analyses."""
    return [
        {
            "case": r.case_key,
            "patient": r.patient_key,
            "eye": r.eye,
            "site": r.site,
            "camera": r.camera,
            "route": r.route,
            "model_version": r.model_version,
            "age_band": r.age_band,
            "sex": r.sex,
            "study_day": r.study_day,
            "model_gradable": int(r.model_gradable),
            "model_referral": int(r.model_referral),
            "model_codes": ";".join(sorted(r.model_codes)),
            "disease_risk": _num(disease_risk(r)),
            "grader_reads": len(r.reads),
            "triaged_read": "" if r.triaged_read is None else ";".join(sorted(r.triaged_read)),
            "reference_route": r.reference_route.value,
            "reference": "" if r.reference is None else ";".join(sorted(r.reference)),
            "inclusion_probability": _num(r.inclusion_probability),
            "grader_blinded": int(r.blind),
        }
        for r in records
    ]
