"""Row-level files for analysis elsewhere: the analysis set (one row per eye, every class
probability at full precision, every grader's read, explicit missing codes) and the iMRMC
input in the layout iMRMC reads."""

from __future__ import annotations

from collections.abc import Sequence

from services.study.records import VERIFIED, EyeRecord
from services.study.tables.common import (
    MODEL,
    WEIGHTED,
    Row,
    disease_risk,
    has_reference,
    truth_weight,
)
from services.taxonomy.tree import load_taxonomy

# Codes that tell a healthy eye from a missing value, in every column that holds diagnoses.
HEALTHY = "NONE"  # read or decided: no disease
UNGRADABLE = "UNGRADABLE"  # the reader looked and could not grade the photograph
MISSING = "NA"  # no value: not read, not decided, not applicable, unknown
CODES_NOTE = (
    f"diagnosis columns: level-1/2 codes separated by ';', {HEALTHY} = no disease, "
    f"{UNGRADABLE} = could not be graded, {MISSING} = missing (no read, no reference, unknown); "
    f"probabilities written at full precision (repr of the float), {MISSING} when the model "
    "could not grade the eye; inclusion_probability: the triage's design probability of "
    "the case going to the panel (its stratum), 0 for an eye that could never be verified; "
    "verification_probability: the estimated probability that its case was verified; weight: "
    "the eye's weight in the weighted analysis (0 when not verified)"
)


def codes_text(codes: set[str] | None, ungradable: bool = False) -> str:
    if ungradable:
        return UNGRADABLE
    if codes is None:
        return MISSING
    return ";".join(sorted(codes)) if codes else HEALTHY


def _flag(value: bool | None) -> str:
    return MISSING if value is None else str(int(value))


def _full(value: float) -> str:
    return repr(float(value)) if value == value else MISSING  # nan is missing


def analysis_set(records: Sequence[EyeRecord]) -> list[Row]:
    """The de-identified record per eye, for the statisticians' own analyses."""
    graders = sorted({g for r in records for g in r.reads})
    classes = sorted(
        {code for route in {r.route for r in records} for code in load_taxonomy(route).codes}
    )
    rows = []
    for r in records:
        row: Row = {
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
            "model_result": (
                UNGRADABLE
                if not r.model_gradable
                else ("positive" if r.model_referral else "negative")
            ),
            # an ungradable eye's referral is indeterminate: missing, not 1
            "model_referral": int(r.model_referral) if r.model_gradable else MISSING,
            "model_codes": codes_text(r.model_codes) if r.model_gradable else UNGRADABLE,
            "disease_risk": _full(disease_risk(r)),
            "grader_reads": len(r.reads),
            "triaged_read": (
                codes_text(r.triaged_read)
                if r.triaged_read is not None
                else (UNGRADABLE if r.reference_route.name == "UNGRADABLE" else MISSING)
            ),
            "reference_route": r.reference_route.value,
            "reference_verified": _flag(
                None if not has_reference(r) else r.reference_route in VERIFIED
            ),
            "reference": codes_text(r.reference) if has_reference(r) else MISSING,
            "inclusion_probability": _full(r.inclusion_probability)
            if r.inclusion_probability is not None
            else MISSING,
            "verifiable": _flag(
                None if r.inclusion_probability is None else r.inclusion_probability > 0
            ),
            "verification_probability": _full(r.verification_probability)
            if r.verification_probability is not None
            else MISSING,
            "weight": _full(weighted[1]) if (weighted := truth_weight(r, WEIGHTED)) else "0",
            "grader_blinded": _flag(r.blind),
            "dr_scheme": (r.dr_grade or {}).get("scheme", MISSING),
            "dr_retinopathy": (r.dr_grade or {}).get("retinopathy", MISSING),
            "dr_maculopathy": (r.dr_grade or {}).get("maculopathy", MISSING),
            "dr_photocoagulation": _flag((r.dr_grade or {}).get("photocoagulation")),
        }
        for number, grader in enumerate(graders, start=1):
            read = r.reads.get(grader, set()) if grader in r.reads else None
            row[f"grader_{number}"] = grader
            row[f"grader_{number}_read"] = codes_text(
                read, ungradable=grader in r.reads and read is None
            )
            row[f"grader_{number}_blinded"] = _flag(r.read_blinded.get(grader))
        for code in classes:
            value = r.probabilities.get(code) if r.model_gradable else None
            row[f"p_{code}"] = MISSING if value is None else _full(value)
        rows.append(row)
    return rows


IMRMC_SCALE = 100  # iMRMC reads ratings on a scale; risks become 0-100, reads 0 or 100


def imrmc(records: Sequence[EyeRecord]) -> list[Row]:
    """Input for iMRMC: readerID, caseID, modalityID, score; the truth rows (reader and
    modality ``truth``) first. The reference is the naive one (iMRMC has no weights)."""
    eyes = [r for r in records if has_reference(r) and r.model_gradable]
    rows: list[Row] = []
    for r in eyes:
        rows.append(
            {
                "readerID": "truth",
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
                "score": repr(IMRMC_SCALE * disease_risk(r)),
            }
        )
        for grader, codes in sorted(r.reads.items()):
            if codes is not None:
                rows.append(
                    {
                        "readerID": grader,
                        "caseID": f"{r.case_key}:{r.eye}",
                        "modalityID": "grader",
                        "score": IMRMC_SCALE * int(bool(codes)),
                    }
                )
    return rows


def imrmc_text(rows: Sequence[Row]) -> str:
    """The iMRMC input file: free header lines, ``BEGIN DATA:``, then comma-separated rows;
    the header says whether the design is fully crossed (every reader read every case in
    every modality), which iMRMC's variance estimate assumes unless told otherwise."""
    cases = {r["caseID"] for r in rows if r["readerID"] == "truth"}
    by_reader: dict[tuple[str, str], set[str]] = {}
    for row in rows:
        if row["readerID"] != "truth":
            by_reader.setdefault((row["readerID"], row["modalityID"]), set()).add(row["caseID"])
    modalities = sorted({m for _, m in by_reader})
    crossed = all(seen == cases for seen in by_reader.values()) and all(
        {r for r, m in by_reader if m == modality} == {r for r, _ in by_reader}
        for modality in modalities
    )
    header = [
        "eyescreen study export: iMRMC input (one case per eye; truth from the reference "
        "standard, concordant reads accepted)",
        f"scores: model disease risk x {IMRMC_SCALE}; graders' binary reads as 0 or {IMRMC_SCALE}",
        f"NR: {len({r for r, _ in by_reader})}",
        f"N0: {sum(1 for r in rows if r['readerID'] == 'truth' and r['score'] == 0)}",
        f"N1: {sum(1 for r in rows if r['readerID'] == 'truth' and r['score'] == 1)}",
        f"NM: {len(modalities)}",
        "design: fully crossed"
        if crossed
        else (
            "design: NOT fully crossed (readers differ between modalities and read different "
            "cases): use iMRMC's split-plot or unbalanced analysis"
        ),
        "BEGIN DATA:",
    ]
    body = [f"{r['readerID']},{r['caseID']},{r['modalityID']},{r['score']}" for r in rows]
    return "\n".join(header + body) + "\n"
