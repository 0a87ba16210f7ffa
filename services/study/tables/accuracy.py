"""Per-class diagnostic accuracy of the model and of each grader, weighted (Begg-Greenes) and
naive, with patient-clustered intervals; the same naive figures with eyes taken as independent
(Wilson, Clopper-Pearson) as a supplement; the paper's weighted averages and top-3 accuracy."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from services.statistics.accuracy import Interval, TwoByTwo
from services.statistics.bootstrap import bootstrap_sums, percentile_columns
from services.study.records import EyeRecord
from services.study.tables.common import (
    ANALYSES,
    MODEL,
    NAIVE,
    Options,
    Row,
    assessed_classes,
    bootstrap_label,
    estimate_columns,
    num,
    reader_entries,
    reader_results,
    truth_weight,
    verification,
)
from services.taxonomy.tree import level_of_code, route_of_code

Target = tuple[str, str, str, Callable[[set[str]], bool]]
MEASURES = ("sensitivity", "specificity", "ppv", "npv", "accuracy", "lr_positive", "lr_negative")


def targets(records: Sequence[EyeRecord]) -> list[Target]:
    """Any disease (the referral) first, then every assessed class of levels 1 and 2."""
    found: list[Target] = [("referral", "", "any disease (referral)", bool)]
    for depth, _route, code, name in assessed_classes(records):
        found.append((f"level {depth}", code, name, _has(code)))
    return found


def _has(code: str) -> Callable[[set[str]], bool]:
    return lambda codes: code in codes


def _measures(cells: np.ndarray) -> dict[str, np.ndarray]:
    """The measures from (.., 4) arrays of weighted tp, fp, fn, tn."""
    tp, fp, fn, tn = (cells[..., k] for k in range(4))
    with np.errstate(invalid="ignore", divide="ignore"):
        sens, spec = tp / (tp + fn), tn / (tn + fp)
        return {
            "sensitivity": sens,
            "specificity": spec,
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
            "accuracy": (tp + tn) / (tp + fp + fn + tn),
            "lr_positive": sens / (1 - spec),
            "lr_negative": (1 - sens) / spec,
        }


def accuracy_table(records: Sequence[EyeRecord], options: Options) -> list[Row]:
    """Per reader, target and analysis (weighted first): the eyes' 2x2 table, its weighted
    cells, and every measure with a patient cluster-bootstrap interval. Eyes the reader could
    not grade are left out here (the referral table counts them as referrals too)."""
    n = len(records)
    analyses = {a: verification(records, a) for a in ANALYSES}
    routes = np.array([r.route for r in records])
    combos: list[tuple[str, Target, str, np.ndarray, np.ndarray]] = []
    columns: list[np.ndarray] = []
    truths = {
        (target[1], analysis): np.fromiter(
            (target[3](ref) for ref in analyses[analysis].reference), bool, n
        )
        for target in targets(records)
        for analysis in ANALYSES
    }
    for reader, (index, codes) in reader_entries(records).items():
        graded = np.array([c is not None for c in codes], dtype=bool)
        for target in targets(records):
            _level, code, _name, present = target
            said = np.array([c is not None and present(c) for c in codes], dtype=bool)
            eligible = graded & ((routes[index] == route_of_code(code)) if code else True)
            for analysis in ANALYSES:
                v = analyses[analysis]
                truth = truths[(code, analysis)][index]
                weight = np.where(eligible, v.weight[index], 0.0)
                used = weight > 0
                if not used.any():
                    continue
                cell = (~said) * 2 + (~truth)  # tp, fp, fn, tn
                block = np.zeros((n, 4))
                np.add.at(block, (index[used], cell[used]), weight[used])
                tally = np.bincount(cell[used], minlength=4)
                combos.append((reader, target, analysis, index[used], tally))
                columns.append(block)
    if not combos:
        return []
    matrix = np.hstack(columns)
    clusters = [r.patient_key for r in records]
    sums = bootstrap_sums(clusters, matrix, options.replicates, options.seed)
    point = matrix.sum(axis=0).reshape(len(combos), 4)
    estimates = _measures(point)
    boots = _measures(sums.reshape(options.replicates, len(combos), 4))
    intervals = {m: percentile_columns(boots[m]) for m in MEASURES}
    rows = []
    for j, (reader, (level, code, name, _), analysis, used, counts) in enumerate(combos):
        row: Row = {
            "reader": reader,
            "level": level,
            "code": code,
            "class": name,
            "analysis": analysis,
            "unit": "eye",
            "eyes": len(used),
            "patients": len({records[i].patient_key for i in used}),
            "tp": int(counts[0]),
            "fp": int(counts[1]),
            "fn": int(counts[2]),
            "tn": int(counts[3]),
            "tp_weighted": num(float(point[j, 0]), 2),
            "fp_weighted": num(float(point[j, 1]), 2),
            "fn_weighted": num(float(point[j, 2]), 2),
            "tn_weighted": num(float(point[j, 3]), 2),
        }
        for measure in MEASURES:
            row[measure] = num(float(estimates[measure][j]))
            row[f"{measure}_low"] = num(float(intervals[measure][0][j]))
            row[f"{measure}_high"] = num(float(intervals[measure][1][j]))
        row["interval"] = bootstrap_label(options)
        rows.append(row)
    return rows


def accuracy(primary: Sequence[Row], method: Interval) -> list[Row]:
    """Supplement: the naive analysis with eyes taken as independent, per reader, per class
    (levels 1 and 2) and for the referral: the 2x2 table (the primary table's naive counts)
    and its measures with the named interval (Wilson or Clopper-Pearson), for comparison with
    earlier reports."""
    rows = []
    for source in primary:
        if source["analysis"] != NAIVE:
            continue
        table = TwoByTwo(source["tp"], source["fp"], source["fn"], source["tn"])
        row: Row = {k: source[k] for k in ("reader", "level", "code", "class")} | {
            "analysis": f"{NAIVE}, eyes as independent",
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


def weighted_averages(records: Sequence[EyeRecord], options: Options) -> list[Row]:
    """Prevalence-weighted average sensitivity and specificity per level (the paper's summary):
    each class weighted by its reference positives; both analyses; cluster-bootstrap interval."""
    rows = []
    clusters = [r.patient_key for r in records]
    assessed = assessed_classes(records)
    for analysis in ANALYSES:
        for level in (1, 2):
            classes = [(route, code) for lvl, route, code, _ in assessed if lvl == level]
            terms = np.zeros((len(records), 4 * len(classes)))
            for i, record in enumerate(records):
                reference = truth_weight(record, analysis)
                if reference is None or not record.model_gradable:
                    continue
                for j, (route, code) in enumerate(classes):
                    if record.route == route:
                        truth, said = code in reference[0], code in record.model_codes
                        terms[i, 4 * j : 4 * j + 4] = reference[1] * np.array(
                            [truth, truth and said, not truth, not truth and not said], dtype=float
                        )
            sens, spec = _weighted_average(terms.sum(axis=0)[None, :])
            sums = bootstrap_sums(clusters, terms, options.replicates, options.seed)
            boot_sens, boot_spec = _weighted_average(sums)
            (s_low,), (s_high,) = percentile_columns(boot_sens[:, None])
            (p_low,), (p_high,) = percentile_columns(boot_spec[:, None])
            rows.append(
                {
                    "reader": MODEL,
                    "level": f"level {level}",
                    "analysis": analysis,
                    "weighting": "reference positives per class",
                    "sensitivity": num(float(sens[0])),
                    "sensitivity_low": num(float(s_low)),
                    "sensitivity_high": num(float(s_high)),
                    "specificity": num(float(spec[0])),
                    "specificity_low": num(float(p_low)),
                    "specificity_high": num(float(p_high)),
                    "interval": bootstrap_label(options),
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


def top3(records: Sequence[EyeRecord], options: Options) -> list[Row]:
    """Reader comparison: a hit is any reference level-2 class among the reader's (up to three)
    level-2 answers: the model's top three classes, a grader's recorded findings. Both
    analyses, patient cluster-bootstrap intervals."""
    hits_columns, totals_columns, labels = [], [], []
    for reader, results in reader_results(records).items():
        for analysis in ANALYSES:
            hits, totals = np.zeros(len(records)), np.zeros(len(records))
            index = {id(r): i for i, r in enumerate(records)}
            eyes = 0
            for record, codes in results:
                reference = truth_weight(record, analysis)
                if reference is None:
                    continue
                truth = {c for c in reference[0] if level_of_code(c) == 2}
                if not truth:
                    continue
                answers = (
                    set(record.top3)
                    if reader == MODEL
                    else set(sorted(c for c in (codes or set()) if level_of_code(c) == 2)[:3])
                )
                i = index[id(record)]
                hits[i] += reference[1] * bool(truth & answers)
                totals[i] += reference[1]
                eyes += 1
            if eyes:
                hits_columns.append(hits)
                totals_columns.append(totals)
                labels.append((reader, analysis, eyes, int((hits > 0).sum())))
    if not labels:
        return []
    from services.statistics.bootstrap import bootstrap_ratios

    ratios = bootstrap_ratios(
        [r.patient_key for r in records],
        np.column_stack(hits_columns),
        np.column_stack(totals_columns),
        options.replicates,
        options.seed,
    )
    return [
        {
            "reader": reader,
            "analysis": analysis,
            "eyes": eyes,
            "hits": hits,
            "top3_accuracy": num(estimate),
            "top3_accuracy_low": num(low),
            "top3_accuracy_high": num(high),
            "interval": bootstrap_label(options),
        }
        for (reader, analysis, eyes, hits), (estimate, low, high) in zip(
            labels, ratios, strict=True
        )
    ]
