"""Model against grader on the same eyes (paired differences in sensitivity and specificity,
weighted and naive, each with a patient-clustered interval and test; McNemar's test and
Newcombe's interval, which take the eyes as independent, beside the naive ones), and
agreement (Cohen's kappa model vs grader, Fleiss' kappa and Gwet's AC1 among graders), each in
columns of its own, with patient cluster-bootstrap intervals."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from services.statistics.bootstrap import (
    bootstrap_sums,
    bootstrap_wald_p,
    percentile_columns,
    ratio_replicates,
)
from services.statistics.paired import (
    cohen_kappa,
    fleiss_kappa,
    gwet_ac1,
    mcnemar_exact,
    newcombe_paired,
)
from services.study.records import EyeRecord
from services.study.tables.common import (
    ANALYSES,
    NAIVE,
    Options,
    Row,
    bootstrap_label,
    num,
    pvalue,
    truth_weight,
)

INDEPENDENT = "eyes_independent"  # the suffix of a column whose method takes eyes as independent


def paired(records: Sequence[EyeRecord], options: Options) -> list[Row]:
    """Model minus the triaged grader in sensitivity (diseased eyes) and specificity (healthy
    eyes), referral, on the eyes both graded; the weighted analysis first."""
    labels: list[Row] = []
    numerators, denominators = [], []
    for analysis in ANALYSES:
        for wanted in (True, False):
            difference = np.zeros(len(records))
            total = np.zeros(len(records))
            cells = [0, 0, 0, 0]  # both right, only model, only grader, neither
            for i, record in enumerate(records):
                reference = truth_weight(record, analysis)
                if reference is None or not record.model_gradable or record.triaged_read is None:
                    continue
                if bool(reference[0]) != wanted:
                    continue
                model = record.model_referral == wanted
                grader = bool(record.triaged_read) == wanted
                cells[(not model) * 2 + (not grader) if model == grader else 1 + (not model)] += 1
                difference[i] = reference[1] * (model - grader)
                total[i] = reference[1]
            both, only_model, only_grader, neither = cells
            row: Row = {
                "comparison": f"{'sensitivity' if wanted else 'specificity'}: model - grader",
                "analysis": analysis,
                "eyes": sum(cells),
                "both_correct": both,
                "only_model": only_model,
                "only_grader": only_grader,
                "neither": neither,
            }
            if analysis == NAIVE:  # eyes as independent: comparison with earlier reports
                newcombe = newcombe_paired(both, only_model, only_grader, neither)
                row |= {
                    f"newcombe_low_{INDEPENDENT}": num(newcombe.low),
                    f"newcombe_high_{INDEPENDENT}": num(newcombe.high),
                    f"mcnemar_exact_p_{INDEPENDENT}": pvalue(
                        mcnemar_exact(both, only_model, only_grader, neither)
                    ),
                }
            labels.append(row)
            numerators.append(difference)
            denominators.append(total)
    estimates, replicates = ratio_replicates(
        [r.patient_key for r in records],
        np.column_stack(numerators),
        np.column_stack(denominators),
        options.replicates,
        options.seed,
    )
    lows, highs = percentile_columns(replicates)
    columns = tuple(
        f"{c}_{INDEPENDENT}" for c in ("newcombe_low", "newcombe_high", "mcnemar_exact_p")
    )
    return [
        {k: v for k, v in label.items() if k not in columns}
        | {
            "difference": num(float(estimate)),
            "difference_low": num(float(low)),
            "difference_high": num(float(high)),
            "interval": bootstrap_label(options),
            # the difference against 0 with the patient-clustered standard error
            "cluster_bootstrap_p": pvalue(bootstrap_wald_p(float(estimate), replicates[:, j])),
        }
        | {k: label.get(k, "") for k in columns}
        for j, (label, estimate, low, high) in enumerate(
            zip(labels, estimates, lows, highs, strict=True)
        )
    ]


def agreement(records: Sequence[EyeRecord], options: Options) -> list[Row]:
    """Agreement on the referral, which needs no reference standard: every eye both read."""
    clusters = [r.patient_key for r in records]
    rows = [_cohen(records, clusters, options)]
    ratings = np.zeros((len(records), 2))
    for i, record in enumerate(records):
        reads = [c for c in record.reads.values() if c is not None]
        if len(reads) >= 2:
            ratings[i] = (sum(not c for c in reads), sum(bool(c) for c in reads))
    several = ratings.sum(axis=1) >= 2
    if several.any():
        sums = bootstrap_sums(clusters, _rating_terms(ratings), options.replicates, options.seed)
        for name, statistic, function in (
            ("Fleiss' kappa", _fleiss, fleiss_kappa),
            ("Gwet's AC1", _ac1, gwet_ac1),
        ):
            low, high = percentile_columns(statistic(sums)[:, None])
            rows.append(
                {
                    "statistic": name,
                    "between": "graders (eyes with two or more gradable reads)",
                    "eyes": int(several.sum()),
                    "estimate": num(function(ratings[several])),
                    "low": num(float(low[0])),
                    "high": num(float(high[0])),
                    "interval": bootstrap_label(options),
                }
            )
    return rows


def _cohen(records: Sequence[EyeRecord], clusters: list[str], options: Options) -> Row:
    """Cohen's kappa, model vs triaged grader: Fleiss-Cohen-Everitt interval (eyes as
    independent) and the patient cluster bootstrap (the primary interval)."""
    cells = np.zeros((len(records), 4))
    for i, record in enumerate(records):
        if record.model_gradable and record.triaged_read is not None:
            cells[i, 2 * int(record.model_referral) + int(bool(record.triaged_read))] = 1
    table = cells.sum(axis=0).reshape(2, 2)
    kappa = cohen_kappa(table.astype(int).tolist())
    sums = bootstrap_sums(clusters, cells, options.replicates, options.seed)
    low, high = percentile_columns(_kappa(sums)[:, None])
    return {
        "statistic": "Cohen's kappa",
        "between": "model and the triaged grader",
        "eyes": kappa.n,
        "estimate": num(kappa.kappa),
        "low": num(float(low[0])),
        "high": num(float(high[0])),
        "interval": bootstrap_label(options),
        # Fleiss-Cohen-Everitt: eyes taken as independent, named so like every such column
        f"fce_low_{INDEPENDENT}": num(kappa.low),
        f"fce_high_{INDEPENDENT}": num(kappa.high),
    }


def _kappa(sums: np.ndarray) -> np.ndarray:
    n = sums.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = sums / n[:, None]
        observed = p[:, 0] + p[:, 3]
        expected = (p[:, 0] + p[:, 1]) * (p[:, 0] + p[:, 2]) + (p[:, 2] + p[:, 3]) * (
            p[:, 1] + p[:, 3]
        )
        return np.asarray((observed - expected) / (1 - expected))


def _rating_terms(ratings: np.ndarray) -> np.ndarray:
    """Per eye with two or more reads: 1, its pairwise agreement, n_healthy, n_referred, n,
    and each category's share of its reads (the sums Fleiss' kappa and AC1 are made of)."""
    raters = ratings.sum(axis=1)
    keep = raters >= 2
    with np.errstate(invalid="ignore", divide="ignore"):
        agree = np.where(keep, (ratings * (ratings - 1)).sum(axis=1) / (raters * (raters - 1)), 0.0)
        shares = np.where(keep[:, None], ratings / raters[:, None], 0.0)
    counts = np.where(keep[:, None], ratings, 0.0)
    return np.column_stack([keep.astype(float), agree, counts, np.where(keep, raters, 0), shares])


def _fleiss(sums: np.ndarray) -> np.ndarray:
    subjects, agree, healthy, referred, raters = (sums[:, k] for k in range(5))
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = agree / subjects
        expected = (healthy / raters) ** 2 + (referred / raters) ** 2
        return np.asarray((observed - expected) / (1 - expected))


def _ac1(sums: np.ndarray) -> np.ndarray:
    subjects, agree = sums[:, 0], sums[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = agree / subjects
        pi = sums[:, 5:7] / subjects[:, None]
        chance = (pi * (1 - pi)).sum(axis=1)  # k - 1 = 1 for two categories
        return np.asarray((observed - chance) / (1 - chance))
