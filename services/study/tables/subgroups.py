"""Referral accuracy in the prespecified subgroups."""

from __future__ import annotations

from collections.abc import Sequence

from services.statistics.accuracy import Interval, TwoByTwo
from services.study.records import EyeRecord
from services.study.tables.common import (
    Row,
    estimate_columns,
    has_reference,
)

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
                | estimate_columns("sensitivity", measures["sensitivity"])
                | estimate_columns("specificity", measures["specificity"])
            )
    return rows
