"""Row-level files for analysis elsewhere: the iMRMC input and the analysis set."""

from __future__ import annotations

from collections.abc import Sequence

from services.study.records import EyeRecord
from services.study.tables.common import (
    MODEL,
    Row,
    disease_risk,
    has_reference,
    num,
)


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
                "score": num(disease_risk(r)),
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


def _flag(value: object) -> int | str:
    return "" if value is None else int(bool(value))


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
            "disease_risk": num(disease_risk(r)),
            "grader_reads": len(r.reads),
            "triaged_read": "" if r.triaged_read is None else ";".join(sorted(r.triaged_read)),
            "reference_route": r.reference_route.value,
            "reference": "" if r.reference is None else ";".join(sorted(r.reference)),
            "inclusion_probability": num(r.inclusion_probability),
            "grader_blinded": int(r.blind),
            "dr_scheme": (r.dr_grade or {}).get("scheme", ""),
            "dr_retinopathy": (r.dr_grade or {}).get("retinopathy", ""),
            "dr_maculopathy": (r.dr_grade or {}).get("maculopathy", ""),
            "dr_photocoagulation": _flag((r.dr_grade or {}).get("photocoagulation")),
        }
        for r in records
    ]
