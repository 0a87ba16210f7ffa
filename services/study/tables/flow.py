"""The STARD flow diagram as a tree (participants, then the index test's result, then whether
the reference standard was received and how, then the final diagnosis), in visits and in eyes;
the index test's results with indeterminate ones counted; baseline characteristics; the
distribution of the target conditions (STARD 21) and the time from index test to reference
(STARD 22)."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np

from services.study.enrolment import Enrolment
from services.study.records import VERIFIED, EyeRecord, ReferenceRoute
from services.study.tables.common import (
    ANALYSES,
    MODEL,
    Row,
    assessed_classes,
    has_reference,
    num,
    verification,
)
from services.taxonomy.tree import route_of_code

INDEX_RESULTS = ("positive", "negative", "indeterminate (ungradable)")


def _index_result(records: Sequence[EyeRecord]) -> str:
    """Positive when any eye is referred on a gradable photograph, indeterminate when none is
    and an eye could not be graded, negative otherwise."""
    if any(r.model_gradable and r.model_referral for r in records):
        return "positive"
    if any(not r.model_gradable for r in records):
        return "indeterminate (ungradable)"
    return "negative"


# The reference standard is the panel's decision, as in the primary (weighted) analysis: the
# eyes the triage kept from the panel did not receive it, by design (the naive analysis takes
# their grader's read as truth: the methods say so).
NOT_VERIFIED_BY_DESIGN = {
    ReferenceRoute.CONCORDANT: "not verified by the panel (by design: concordant, not drawn "
    "for QC)",
    ReferenceRoute.MODEL_UNGRADABLE_NOT_SENT: "not verified by the panel (by design: model "
    "ungradable, not drawn for QC)",
}


def _reference_branch(records: Sequence[EyeRecord]) -> tuple[str, str]:
    """(received or not, how or why not): a unit receives the reference standard, the panel's
    decision, when every eye of it did; otherwise the first reason among its eyes."""
    missing = [
        r.reference_route
        for r in records
        if r.reference_route not in VERIFIED or r.reference is None
    ]
    if missing:
        reason = sorted(missing, key=list(ReferenceRoute).index)[0]
        return "not received", NOT_VERIFIED_BY_DESIGN.get(reason, reason.value)
    return "received", "panel"


def flow(records: Sequence[EyeRecord], enrolment: Enrolment | None = None) -> list[Row]:
    """The flow tree, one row per box: unit, node id, parent id, stage, label, count. Within a
    unit every box's count is the sum of its children's; the units join in one chain, from
    the patients who received the index test to their visits, and from the visits to their
    eyes (two each, those without an index-test result a box of their own); tests check it."""
    patients = len({r.patient_key for r in records})
    rows = _participants(patients, enrolment)
    visits: dict[str, list[EyeRecord]] = defaultdict(list)
    for record in records:
        visits[record.case_key].append(record)
    rows += _tree("visit", "V", rows[-1]["node"], list(visits.values()), "visits of these patients")
    missing = sum(max(0, 2 - len({r.eye for r in eyes})) for eyes in visits.values())
    rows += [
        _box("eye", "E", "V", "eyes", "eyes of these visits (two each)", len(records) + missing),
        _box(
            "eye",
            "E.1",
            "E",
            "excluded",
            "excluded: no index-test result (eye not photographed, or no model result)",
            missing,
        ),
    ]
    rows += _tree("eye", "E.2", "E", [[r] for r in records], "eyes: received the index test")
    return rows


def _box(unit: str, node: str, parent: str, stage: str, label: str, count: int) -> Row:
    return {
        "unit": unit,
        "node": node,
        "parent": parent,
        "stage": stage,
        "label": label,
        "count": count,
    }


def _participants(patients: int, enrolment: Enrolment | None) -> list[Row]:
    """The patient boxes: eligible, excluded with reasons, received the index test; without
    an enrolment (records made elsewhere) the flow starts from the patients photographed."""
    if enrolment is None:
        return [
            _box(
                "patient",
                "P",
                "",
                "participants",
                "patients photographed with an index-test result (no worklist: eligibility "
                "recorded outside this software)",
                patients,
            )
        ]
    return [
        _box(
            "patient",
            "P",
            "",
            "eligible",
            f"patients eligible: expected on the worklist ({enrolment.expected}) or "
            f"photographed without a worklist entry ({enrolment.walk_in})",
            enrolment.eligible,
        ),
        _box(
            "patient",
            "P.1",
            "P",
            "excluded",
            "excluded: expected, not photographed (no study arrived)",
            enrolment.not_photographed,
        ),
        _box(
            "patient",
            "P.2",
            "P",
            "excluded",
            "excluded: photographed, no index-test result in this export (no model result, "
            "or outside its filter)",
            enrolment.no_index_result,
        ),
        _box("patient", "P.3", "P", "participants", "patients: received the index test", patients),
    ]


def _tree(unit: str, root: str, parent: str, units: list[list[EyeRecord]], title: str) -> list[Row]:
    counts: Counter[tuple[str, ...]] = Counter()
    for members in units:
        index = _index_result(members)
        received, how = _reference_branch(members)
        path: tuple[str, ...] = (index, received, how)
        if received == "received":
            diseased = any(bool(r.reference) for r in members)
            path += ("final diagnosis: target condition" if diseased else "final diagnosis: none",)
        for depth in range(1, len(path) + 1):
            counts[path[:depth]] += 1
    for result in INDEX_RESULTS:  # STARD shows every result box, empty ones too
        counts[(result,)] = counts.get((result,), 0)
    rows: list[Row] = [_box(unit, root, parent, "index test", title, len(units))]
    stages = ("index test result", "reference standard", "how / why not", "final diagnosis")
    ids: dict[tuple[str, ...], str] = {(): root}
    order = [*INDEX_RESULTS, "received", "not received"]
    for path in sorted(counts, key=lambda p: (len(p), [_rank(order, x) for x in p])):
        parent_id = ids[path[:-1]]
        siblings = sum(1 for other in ids if len(other) == len(path) and other[:-1] == path[:-1])
        ids[path] = f"{parent_id}.{siblings + 1}"
        label = path[-1] if len(path) != 2 else f"reference standard {path[-1]}"
        rows.append(_box(unit, ids[path], parent_id, stages[len(path) - 1], label, counts[path]))
    return rows


def _rank(order: list[str], value: str) -> tuple[int, str]:
    return (order.index(value) if value in order else len(order), value)


def index_results(records: Sequence[EyeRecord]) -> list[Row]:
    """Every reader's results on the eyes, indeterminate (ungradable) ones counted, not
    dropped (STARD 15 and 19); for the model, how many of those its guard found unlike its
    training photographs (not assessable by this model)."""
    tallies: dict[str, Counter[str]] = defaultdict(Counter)
    not_assessable = 0  # the model's indeterminate results its guard gave
    for record in records:
        model = (
            "indeterminate (ungradable)"
            if not record.model_gradable
            else ("positive" if record.model_referral else "negative")
        )
        tallies[MODEL][model] += 1
        not_assessable += record.model_unfamiliar
        for grader, codes in record.reads.items():
            result = (
                "indeterminate (ungradable)"
                if codes is None
                else "positive"
                if codes
                else "negative"
            )
            tallies[grader][result] += 1
    rows = []
    for reader in sorted(tallies, key=lambda r: (r != MODEL, r)):
        tally = tallies[reader]
        total = sum(tally.values())
        rows.append(
            {
                "reader": reader,
                "eyes": total,
                "positive": tally["positive"],
                "negative": tally["negative"],
                "indeterminate": tally["indeterminate (ungradable)"],
                "indeterminate_share": num(tally["indeterminate (ungradable)"] / total),
                # of the indeterminate: photographs unlike the model's training set (its guard)
                "indeterminate_not_assessable": not_assessable if reader == MODEL else 0,
            }
        )
    return rows


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


def target_conditions(records: Sequence[EyeRecord]) -> list[Row]:
    """STARD 21: how the target conditions are distributed among the eyes with a reference:
    the eyes counted and their share, then the weighted counts and the share they give (the
    verifiable population's, verification corrected), each beside its own counts."""
    rows = []
    classes = [("referral", "", "any disease")] + [
        (f"level {level}", code, name) for level, _route, code, name in assessed_classes(records)
    ]
    routes = np.array([r.route for r in records])
    for analysis in ANALYSES:
        v = verification(records, analysis)
        for level, code, name in classes:
            eligible = (v.weight > 0) & ((routes == route_of_code(code)) if code else True)
            present = (
                np.array([code in ref if code else bool(ref) for ref in v.reference], dtype=bool)
                & eligible
            )
            total = float(v.weight[eligible].sum())
            found = float(v.weight[present].sum())
            rows.append(
                {
                    "level": level,
                    "code": code,
                    "class": name,
                    "analysis": analysis,
                    # the eyes counted, and their share: what was seen
                    "eyes_with_condition": int(present.sum()),
                    "eyes": int(eligible.sum()),
                    "share_of_eyes": num(
                        present.sum() / eligible.sum() if eligible.any() else np.nan
                    ),
                    # the weighted counts (eyes they stand for) and the estimated share
                    "eyes_with_condition_weighted": num(found, 1),
                    "eyes_weighted": num(total, 1),
                    "share_weighted": num(found / total if total else np.nan),
                }
            )
    return rows


def time_to_reference(records: Sequence[EyeRecord]) -> list[Row]:
    """STARD 22: hours from the model's result to the reference standard (the grader's read
    for concordant eyes, the panel's decision otherwise)."""
    groups: dict[str, list[float]] = defaultdict(list)
    for record in records:
        if not has_reference(record) or record.index_at is None or record.reference_at is None:
            continue
        hours = (record.reference_at - record.index_at).total_seconds() / 3600
        groups[record.reference_route.value].append(hours)
        groups["all"].append(hours)
    rows = []
    for route in sorted(groups, key=lambda g: (g != "all", g)):
        values = np.array(groups[route])
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        rows.append(
            {
                "reference": route,
                "eyes": len(values),
                "median_hours": num(float(median), 1),
                "q1_hours": num(float(q1), 1),
                "q3_hours": num(float(q3), 1),
                "max_hours": num(float(values.max()), 1),
                "negative": int((values < 0).sum()),
            }
        )
    return rows
