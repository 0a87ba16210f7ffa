"""Per-class diagnostic accuracy of the model and of each grader, the paper's weighted
averages and top-3 accuracy."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from services.statistics.accuracy import Interval, TwoByTwo
from services.statistics.bootstrap import bootstrap_sums, percentile_interval
from services.study.records import EyeRecord
from services.study.tables.common import (
    MODEL,
    Options,
    Row,
    assessed_classes,
    estimate_columns,
    has_reference,
    num,
    reader_results,
)
from services.taxonomy.tree import level_of_code, route_of_code


def accuracy(records: Sequence[EyeRecord], method: Interval) -> list[Row]:
    """Per reader, per class (levels 1 and 2) and for the referral: the 2x2 table and its
    measures against the reference (naive: concordant reads accepted), eyes with a reference
    and a gradable result."""
    rows = []
    readers = reader_results(records)
    targets: list[tuple[str, str, str, Callable[[set[str]], bool]]] = [
        ("referral", "", "any disease (referral)", lambda codes: bool(codes))
    ]
    for depth, _route, code, name in assessed_classes(records):
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
                row |= estimate_columns(measure, estimate)
            rows.append(row)
    return rows


def _has(code: str) -> Callable[[set[str]], bool]:
    return lambda codes: code in codes


def weighted_averages(records: Sequence[EyeRecord], options: Options) -> list[Row]:
    """Prevalence-weighted average sensitivity and specificity per level (the paper's summary):
    each class weighted by its reference positives; cluster-bootstrap interval."""
    rows = []
    eyes = [r for r in records if has_reference(r) and r.model_gradable]
    for level in (1, 2):
        assessed = assessed_classes(records)
        classes = [(route, code) for lvl, route, code, _ in assessed if lvl == level]
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
                "sensitivity": num(float(sens[0])),
                "sensitivity_low": num(s_low),
                "sensitivity_high": num(s_high),
                "specificity": num(float(spec[0])),
                "specificity_low": num(p_low),
                "specificity_high": num(p_high),
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


def top3(records: Sequence[EyeRecord]) -> list[Row]:
    """Reader comparison: a hit is any reference level-2 class among the reader's (up to three)
    level-2 answers: the model's top three classes, a grader's recorded findings."""
    eyes = [
        r
        for r in records
        if has_reference(r) and any(level_of_code(c) == 2 for c in r.reference or set())
    ]
    rows = []
    for reader, results in reader_results(eyes).items():
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
            | estimate_columns("top3_accuracy", proportion(hits, total, estimate))
        )
    return rows
