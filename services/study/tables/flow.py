"""The flow of eyes through the study and the baseline characteristics (STARD)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from services.study.records import EyeRecord, ReferenceRoute
from services.study.tables.common import (
    Row,
    has_reference,
    num,
)


def flow(records: Sequence[EyeRecord]) -> list[Row]:
    """STARD flow counts, in eyes (and visits)."""
    routes = Counter(r.reference_route for r in records)
    rows = [
        ("photographed", len(records)),
        ("gradable for the model", sum(r.model_gradable for r in records)),
        (
            "not assessable by the model (unlike its training photographs)",
            sum(r.model_unfamiliar for r in records),
        ),
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
                    "share": num(count / len(first)),
                }
            )
    return rows
