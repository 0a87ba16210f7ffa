"""The study export from a small screening study in PostgreSQL: graders read, the panel
decides, the statistician downloads; the same data export to the same bytes, the workbook has
every sheet, the HTML report opens in a browser, and no patient identity leaves."""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import pytest
from openpyxl import load_workbook
from sqlalchemy import select

from reports.study_export import export, progress_steps
from services.db.models import ArbitrationCase, ArbitrationState
from services.study.protocol import DEFAULT, load_protocol
from services.study.records import Filters, study_key
from services.study.tables import Options
from tests.clinic import PASSWORD, open_clinic, other_read, read_form
from tests.conftest import require_binary

pytestmark = pytest.mark.integration
CSVS = (
    "flow",
    "index_results",
    "baseline",
    "target_conditions",
    "time_to_reference",
    "accuracy",
    "accuracy_wilson",
    "accuracy_clopper_pearson",
    "referral",
    "auc",
    "paired",
    "agreement",
    "subgroups",
    "calibration",
    "reliability",
    "decision_curve",
    "top3",
    "imrmc",
    "analysis_set",
    "weighted_averages",
    "endpoints",
    "verdict",
    "sample_size",
)


def _form(csrf: str, eyes: dict) -> dict:  # type: ignore[type-arg]
    return read_form(csrf, eyes, reading_ms="5000")


@pytest.fixture
def study(postgres_url: str, tmp_path: Path):  # type: ignore[no-untyped-def]
    with open_clinic(postgres_url, tmp_path, qc_sample_rate=0.5) as clinic:
        grader, csrf = clinic.login("grace")
        for number in range(8):
            case = clinic.case(patient_name=f"Secret^Name{number}")
            model = clinic.model(case)
            if number % 2:
                read = other_read(model)
            else:
                read = {
                    e: {"codes": [c for c in model.findings.get(e, []) if c.count(".") == 2]}
                    for e in "RL"
                }
            assert grader.post(f"/cases/{case}/read", data=_form(csrf, read)).status_code == 303
        arbiter, csrf_a = clinic.login("arthur")
        with clinic.runtime.sessions() as session:
            open_ids = session.scalars(
                select(ArbitrationCase.id).where(ArbitrationCase.state == ArbitrationState.OPEN)
            ).all()
        for number, arbitration in enumerate(open_ids):
            answer = arbiter.post(
                f"/arbitration/{arbitration}/vote",
                data={"csrf_token": csrf_a, "choice": "AB"[number % 2], "password": PASSWORD},
            )
            assert answer.status_code == 303, answer.text
        yield clinic


def test_export_is_reproducible_complete_and_de_identified(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key = study_key(tmp_path / "study.key")
    outs = []
    for attempt in range(2):
        out = tmp_path / f"export-{attempt}"
        steps: list[str] = []
        with study.runtime.sessions() as session:
            snapshot = export(
                session, Filters(), out, key, Options(replicates=50, seed=7), progress=steps.append
            )
        outs.append(out)
        assert len(steps) == progress_steps() == 22  # the CLI's progress bar total
    assert snapshot["eyes"] == 16 and snapshot["models"][0]["weights_sha256"]
    for name in CSVS:
        first, second = (o / f"{name}.csv" for o in outs)
        assert first.read_bytes() == second.read_bytes(), name
    flow = list(csv.DictReader((outs[0] / "flow.csv").open()))
    assert any(r["unit"] == "eye" and r["node"] == "E" and r["count"] == "16" for r in flow)
    assert "visits_total" not in flow[0]
    protocol = load_protocol()
    assert snapshot["protocol"]["sha256"] == protocol.sha256
    # the protocol fixes the bootstrap: 50 replicates and seed 7 override it, and it is said
    overridden = ["replicates 50 (protocol: 500)", "seed 7 (protocol: 20211)"]
    assert snapshot["protocol"]["overridden"] == overridden
    verdict = list(csv.DictReader((outs[0] / "verdict.csv").open()))
    assert len(verdict) == 1 and verdict[0]["protocol"] == "overridden: " + "; ".join(overridden)
    assert verdict[0]["all_co_primary_endpoints_met"] in ("yes", "no")
    assert snapshot["all_co_primary_endpoints_met"] == verdict[0]["all_co_primary_endpoints_met"]
    report_text = (outs[0] / "report.html").read_text()
    assert "All co-primary endpoints met: " + verdict[0]["all_co_primary_endpoints_met"] in (
        report_text
    )
    ends = list(csv.DictReader((outs[0] / "endpoints.csv").open()))
    assert all(r["indeterminate_eyes"] and r["describes"] for r in ends)
    assert (outs[0] / "imrmc.imrmc").read_text().count("BEGIN DATA:") == 1
    referral = (outs[0] / "referral.csv").read_text()
    assert "weighted (Begg-Greenes)" in referral and "naive" in referral
    everything = "".join(
        p.read_text(errors="replace") for p in outs[0].iterdir() if p.suffix != ".xlsx"
    )
    assert "Secret" not in everything and "P-" not in everything  # no names, no patient ids
    # the Fleiss-Cohen-Everitt interval takes eyes as independent: its columns say so, in the
    # CSV, the workbook and the HTML alike
    named = ("fce_low_eyes_independent", "fce_high_eyes_independent")
    agreement_header = (outs[0] / "agreement.csv").read_text().splitlines()[0].split(",")
    assert set(named) <= set(agreement_header) and "fce_low" not in agreement_header
    assert all(name in (outs[0] / "report.html").read_text() for name in named)
    workbook = load_workbook(outs[0] / "study.xlsx", read_only=True)
    sheet_header = next(workbook["agreement"].iter_rows(max_row=1, values_only=True))
    assert set(named) <= set(sheet_header) and "fce_low" not in sheet_header
    row_level = {"analysis_set", "imrmc"}  # in the CSVs, not the workbook, when both are written
    assert (set(CSVS) - row_level) | {"methods", "checklist", "row-level files"} == set(
        workbook.sheetnames
    )


def test_the_statistician_downloads_it_and_reads_the_report_in_a_browser(
    study, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    statistician, csrf = study.login("stan")
    assert statistician.get("/stats").status_code == 200
    grader, grader_csrf = study.login("grace")
    assert grader.post("/stats/export", data={"csrf_token": grader_csrf}).status_code == 403
    answer = statistician.post("/stats/export", data={"csrf_token": csrf, "site": ["NORTH"]})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip"
    archive = zipfile.ZipFile(io.BytesIO(answer.content))
    names = set(archive.namelist())
    assert {"report.html", "study.xlsx", "snapshot.json", "referral.csv"} <= names
    report = tmp_path / "report.html"
    report.write_bytes(archive.read("report.html"))
    require_binary("/usr/bin/chromium")
    from playwright.sync_api import sync_playwright

    from tests.integration.test_webapp_browser import ARTIFACTS, CHROMIUM, FLAGS

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(report.as_uri())
        assert page.locator("#flow").evaluate("img => img.naturalWidth") > 0
        assert page.locator("#flow-visits").evaluate("img => img.naturalWidth") > 0
        assert "indeterminate" in page.inner_text("#table-flow")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
        assert "agreement" not in page.inner_text("#table-paired").lower()
        assert page.locator("img.roc").count() >= 1
        assert "weighted (Begg-Greenes)" in page.inner_text("#table-referral")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "study-report.png"), full_page=True)
        browser.close()


def test_export_writes_only_the_formats_asked(study, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key = study_key(tmp_path / "study.key")
    out = tmp_path / "csv-only"
    steps: list[str] = []
    with study.runtime.sessions() as session:
        snapshot = export(
            session,
            Filters(),
            out,
            key,
            formats=("csv",),
            progress=steps.append,
        )
    assert len(steps) == progress_steps(("csv",))
    # without options the export runs the protocol's bootstrap, as registered
    assert snapshot["protocol"]["overridden"] == []
    verdict = list(csv.DictReader((out / "verdict.csv").open()))
    assert verdict[0]["protocol"] == "as registered" and "500 replicates" in verdict[0]["interval"]
    names = {p.name for p in out.iterdir()}
    assert "snapshot.json" in names and "accuracy.csv" in names
    assert "study.xlsx" not in names and "report.html" not in names
    assert snapshot["formats"] == ["csv"]
    with study.runtime.sessions() as session, pytest.raises(ValueError, match="formats"):
        export(session, Filters(), tmp_path / "x", key, formats=("pdf",))


def test_cli_export_takes_format_and_protocol(study, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from click.testing import CliRunner

    from eyescreen.cli import main

    protocol = tmp_path / "protocol.toml"
    protocol.write_text(
        DEFAULT.read_text().replace('version = "default"', 'version = "registered-1"')
    )
    monkeypatch.setenv("EYESCREEN_DATA_DIR", str(study.settings.data_dir))
    monkeypatch.setenv("EYESCREEN_DATABASE_URL", str(study.settings.database_url))
    out = tmp_path / "cli"
    result = CliRunner().invoke(
        main,
        [
            "stats",
            "export",
            str(out),
            "--format",
            "html",
            "--replicates",
            "20",
            "--protocol",
            str(protocol),
        ],
    )
    assert result.exit_code == 0, result.output
    steps = progress_steps(("html",))
    assert f"{steps}/{steps}" in result.output  # the progress bar's total is its steps
    assert {p.name for p in out.iterdir()} == {"report.html", "snapshot.json"}
    snapshot = json.loads((out / "snapshot.json").read_text())
    assert snapshot["protocol"]["version"] == "registered-1"
    assert snapshot["protocol"]["overridden"] == ["replicates 20 (protocol: 500)"]
