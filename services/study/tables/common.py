"""What every table shares: the row type, the reader names, the export's options, which eyes
have a reference standard, number formatting and the classes assessed."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.statistics.accuracy import Estimate
from services.study.eye import NOT_SENT
from services.study.records import VERIFIED, EyeRecord
from services.taxonomy.tree import load_taxonomy

Row = dict[str, Any]


MODEL = "model"


POOLED = "graders pooled"


@dataclass(frozen=True)
class Options:
    replicates: int = 500  # bootstrap replicates
    seed: int = 20211


WEIGHTED = "weighted (Begg-Greenes)"
NAIVE = "naive"
ANALYSES = (WEIGHTED, NAIVE)  # the weighted (unbiased) analysis first, in every table


def truth_weight(record: EyeRecord, analysis: str) -> tuple[set[str], float] | None:
    """The eye's reference and its weight in an analysis, None when it has no part in it.

    Weighted (Begg and Greenes 1983, inverse probability weighting): only eyes the panel
    verified, each weighted by 1 / the estimated probability that its case was verified
    (``services.study.verification``), so that the verified sample stands for every eye that
    could have been verified; eyes that never could (outcome queue) have no weight. Naive
    ("discrepant analysis"): every eye with a reference, the concordant grader's read accepted
    as truth where the panel did not look."""
    if record.reference is None:
        return None
    if record.reference_route in VERIFIED:
        if analysis == NAIVE:
            return record.reference, 1.0
        probability = record.verification_probability
        return (record.reference, 1.0 / probability) if probability else None
    if record.reference_route in NOT_SENT and analysis == NAIVE:
        return record.reference, 1.0
    return None


@dataclass(frozen=True)
class Verification:
    """One analysis over all records at once: each record's weight (0 when it has no part in
    the analysis) and reference (empty then)."""

    weight: np.ndarray
    reference: list[set[str]]


def verification(records: Sequence[EyeRecord], analysis: str) -> Verification:
    weights, references = np.zeros(len(records)), []
    for i, record in enumerate(records):
        found = truth_weight(record, analysis)
        if found is not None:
            weights[i] = found[1]
        references.append(found[0] if found is not None else set())
    return Verification(weights, references)


def reader_entries(
    records: Sequence[EyeRecord],
) -> dict[str, tuple[np.ndarray, list[set[str] | None]]]:
    """``reader_results`` as arrays: per reader, the records' indices and the codes read."""
    index = {id(r): i for i, r in enumerate(records)}
    return {
        reader: (np.array([index[id(r)] for r, _ in pairs], dtype=int), [c for _, c in pairs])
        for reader, pairs in reader_results(records).items()
    }


def bootstrap_label(options: Options) -> str:
    return f"patient cluster bootstrap ({options.replicates} replicates, seed {options.seed})"


def pvalue(value: float | None) -> str:
    """A p-value as journals print it: four decimals, and '<0.0001' below that."""
    if value is None or not math.isfinite(value):
        return ""
    return "<0.0001" if value < 1e-4 else f"{value:.4f}"


def has_reference(record: EyeRecord) -> bool:
    return record.reference is not None and (
        record.reference_route in NOT_SENT or record.reference_route in VERIFIED
    )


def num(value: float | int | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def estimate_columns(prefix: str, estimate: Estimate) -> Row:
    return {
        prefix: num(estimate.estimate),
        f"{prefix}_low": num(estimate.low),
        f"{prefix}_high": num(estimate.high),
    }


def reader_results(
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


def assessed_classes(records: Sequence[EyeRecord]) -> list[tuple[int, str, str, str]]:
    routes = sorted({r.route for r in records})
    found = []
    for route in routes:
        taxonomy = load_taxonomy(route)
        for level in (1, 2):
            for node in taxonomy.level(level):
                if not node.normal:
                    found.append((level, route, node.code, node.name))
    return found


def disease_risk(record: EyeRecord) -> float:
    """The model's risk of any disease in an eye: its highest level-1 disease probability
    (nan when the model could not grade the eye: missing, not healthy)."""
    if not record.model_gradable:
        return math.nan
    taxonomy = load_taxonomy(record.route)
    values = [record.probabilities.get(n.code, 0.0) for n in taxonomy.level(1) if not n.normal]
    return max(values, default=0.0)
