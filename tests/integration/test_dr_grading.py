"""Diabetic retinopathy grading beside the taxonomy (issue 21): off unless a site turns it
on; where on, a grade per eye is recorded with the read, shown to the grader and the panel,
and exported with the analysis set."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from services.clinic.dr_grading import SCHEMES, DrGradeError, check_grade, describe
from services.db.models import CaseRead
from services.study.records import Filters, gather
from services.study.tables.datasets import analysis_set
from tests.clinic import OTHER_SITE, PASSWORD, open_clinic, other_read, read_form

pytestmark = pytest.mark.integration


def test_grades_are_checked_against_the_scheme() -> None:
    nhs, icdr = SCHEMES["nhs"], SCHEMES["icdr"]
    grade = check_grade(nhs, {"retinopathy": "R1", "maculopathy": "M0", "photocoagulation": True})
    assert grade == {"scheme": "nhs", "retinopathy": "R1", "maculopathy": "M0",
                     "photocoagulation": True}  # fmt: skip
    assert describe(grade) == "R1 M0 P"
    icdr_grade = check_grade(icdr, {"retinopathy": "moderate", "maculopathy": "absent"})
    assert describe(icdr_grade) == "moderate NPDR, DME absent"
    assert check_grade(nhs, {"retinopathy": "", "maculopathy": ""}) is None  # nothing given
    with pytest.raises(DrGradeError, match="maculopathy: one of M0, M1"):
        check_grade(nhs, {"retinopathy": "R1"})
    with pytest.raises(DrGradeError, match="not used at this site"):
        check_grade(None, {"retinopathy": "R1"})


def _form(csrf: str, eyes: dict, dr: dict[str, str] | None = None) -> dict:  # type: ignore[type-arg]
    form = read_form(csrf, eyes, reading_ms="1000")
    for eye in eyes:
        for field, value in (dr or {}).items():
            form[f"eye_{eye}_dr_{field}"] = value
    return form


def test_a_site_that_grades_dr_records_shows_and_exports_it(
    postgres_url: str, tmp_path: Path
) -> None:
    with open_clinic(postgres_url, tmp_path, dr_schemes="NORTH=nhs") as clinic:
        case = clinic.case()
        grader, csrf = clinic.login("grace")
        page = grader.get(f"/cases/{case}").text
        assert 'name="eye_R_dr_retinopathy"' in page and ">R3A<" in page
        bad = grader.post(
            f"/cases/{case}/read",
            data=_form(
                csrf, other_read(clinic.model(case)), {"retinopathy": "R9", "maculopathy": "M0"}
            ),
        )
        assert bad.status_code == 422 and "R0, R1, R2, R3A, R3S" in bad.text
        dr = {"retinopathy": "R2", "maculopathy": "M1", "photocoagulation": "1"}
        answer = grader.post(
            f"/cases/{case}/read", data=_form(csrf, other_read(clinic.model(case)), dr)
        )
        assert answer.status_code == 303, answer.text
        with clinic.runtime.sessions() as session:
            read = session.scalars(select(CaseRead)).one()
            assert read.eyes["R"]["dr"] == {
                "scheme": "nhs", "retinopathy": "R2", "maculopathy": "M1", "photocoagulation": True
            }  # fmt: skip
        assert "R2 M1 P" in grader.get(f"/cases/{case}").text  # shown with the grader's read
        arbiter, _ = clinic.login("arthur")
        queue = arbiter.get("/arbitration").text
        arbitration = queue.split('href="/arbitration/')[1].split('"')[0]
        panel_page = arbiter.get(f"/arbitration/{arbitration}").text
        assert 'id="grader-dr"' in panel_page and "R2 M1 P" in panel_page
        with clinic.runtime.sessions() as session:
            rows = analysis_set(gather(session, Filters(), b"k" * 32))
        assert {(r["eye"], r["dr_retinopathy"], r["dr_maculopathy"], r["dr_photocoagulation"])
                for r in rows} == {("R", "R2", "M1", "1"), ("L", "R2", "M1", "1")}  # fmt: skip

        # Off elsewhere: no DR fields at the other site, and a grade sent anyway is refused.
        other_case = clinic.case(site=OTHER_SITE)
        oscar, csrf_o = clinic.login("oscar")
        assert "_dr_retinopathy" not in oscar.get(f"/cases/{other_case}").text
        refused = oscar.post(
            f"/cases/{other_case}/read",
            data=_form(csrf_o, other_read(clinic.model(other_case)), dr),
        )
        assert refused.status_code == 422 and "not used at this site" in refused.text


def test_the_api_takes_a_dr_grade_where_the_site_grades_dr(
    postgres_url: str, tmp_path: Path
) -> None:
    with open_clinic(postgres_url, tmp_path, dr_schemes="NORTH=icdr") as clinic:
        case = clinic.case()
        grace, csrf = clinic.login("grace")
        page = grace.post("/account/token", data={"csrf_token": csrf, "password": PASSWORD})
        token = page.text.split('id="api-token">')[1].split("<")[0]
        dr = {"retinopathy": "severe", "maculopathy": "present"}
        body = {"study_instance_uid": clinic.study_uid(case), "eyes": {"R": {"dr": dr}, "L": {}}}
        made = clinic.client().post(
            "/api/reads", json=body, headers={"Authorization": f"Bearer {token}"}
        )
        assert made.status_code == 201, made.text
        with clinic.runtime.sessions() as session:
            eyes = session.scalars(select(CaseRead)).one().eyes
        assert eyes["R"]["dr"] == {"scheme": "icdr"} | dr and "dr" not in eyes["L"]
