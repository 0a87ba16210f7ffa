"""What every table shares: the row type, the reader names, the export's options, which eyes
have a reference standard, number formatting and the classes assessed."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from services.statistics.accuracy import Estimate
from services.study.records import VERIFIED, EyeRecord, ReferenceRoute
from services.taxonomy.tree import load_taxonomy

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
    """The model's risk of any disease in an eye: its highest level-1 disease probability."""
    taxonomy = load_taxonomy(record.route)
    values = [record.probabilities.get(n.code, 0.0) for n in taxonomy.level(1) if not n.normal]
    return max(values, default=0.0)
