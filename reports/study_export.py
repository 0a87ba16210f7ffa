"""The study export: a frozen snapshot of the figures for one filter. Tidy CSVs (one per table,
byte-identical when the same data are exported again), an XLSX workbook (a sheet per table, the
methods, and the reporting checklist), an HTML report with the plots, and snapshot.json saying
what produced them (filter, models and thresholds, code and package versions, seeds)."""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import io
import json
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from jinja2 import Environment, FileSystemLoader, select_autoescape
from sqlalchemy import select
from sqlalchemy.orm import Session

from reports import study_plots
from services.db.models import ModelVersion
from services.statistics.accuracy import Interval
from services.study import tables as study_tables
from services.study.records import Filters, gather
from services.study.tables import Options

Row = dict[str, Any]
Progress = Callable[[str], None]
PACKAGES = (
    "eyescreen",
    "numpy",
    "scipy",
    "statsmodels",
    "scikit-learn",
    "matplotlib",
    "sqlalchemy",
)

METHODS = """\
Unit of analysis: the eye (one record per eye of each visit); visit-level referral refers a
visit when any eye is referred. Intervals account for two eyes per patient by a patient-level
cluster bootstrap where stated.
Reference standard: the arbitration panel's signed decision for every case sent to it
(discordant model and grader, an ungradable eye, a grader in training, or drawn at random for
quality control among concordant cases with the stored inclusion probability); otherwise the
concordant grader's read.
Naive estimates accept the concordant read as the truth ("discrepant analysis"), which biases
sensitivity and specificity upwards because the cases where model and grader agree are verified
only on a sample. Weighted estimates (Begg and Greenes 1983, inverse-probability weighting) use
only the verified cases, each weighted by the inverse of its stored inclusion probability; their
intervals come from a patient-level cluster bootstrap that redraws the sample of patients, and
with it which concordant cases were verified.
Proportions: Wilson score intervals (Clopper-Pearson exact intervals in the supplementary table);
the method is named in every row. Likelihood ratios: log-method intervals (Simel et al. 1991).
AUC: DeLong's variance by the fast midrank algorithm (Sun and Xu 2014), normal interval clipped
to [0, 1], and a patient-cluster bootstrap interval.
Model against grader on the same eyes: exact McNemar test separately in diseased and
non-diseased eyes; paired differences in sensitivity and specificity with Newcombe's hybrid
score interval (1998, method 10); Cohen's kappa with the Fleiss-Cohen-Everitt standard error;
Fleiss' kappa and Gwet's AC1 where several graders read the same eyes.
Ungradable photographs: analysed both as referrals (intention to diagnose) and excluded
(complete case).
Calibration: Brier score, calibration intercept (offset logistic model) and slope (logistic
regression on the logit of the risk), reliability diagram in ten equal-width bins. Decision
curve: net benefit (Vickers and Elkin 2006).
Top-3 reader comparison: a hit is any reference level-2 class among the reader's answers (the
model's three most probable classes; a grader's recorded level-2 findings).
Subgroups: site, model version, age band and sex are prespecified; camera is exploratory.
De-identification: keyed-hash pseudonyms (HMAC-SHA-256 with the installation's study key) for
patients, visits and graders; no names, birth dates or patient ids; age in bands; dates as days
since the first study in the export.
"""

CHECKLIST = [
    ("STARD 2015 2", "abstract-level figures", "referral.csv, accuracy.csv"),
    ("STARD 2015 9/10a", "index test and its version", "snapshot.json (models, thresholds)"),
    (
        "STARD 2015 10b",
        "reference standard and its rationale",
        "methods sheet; analysis_set.csv reference_route",
    ),
    (
        "STARD 2015 13a/13b",
        "blinding of index test and reference readers",
        "analysis_set.csv grader_blinded; methods",
    ),
    ("STARD 2015 14", "methods for estimating accuracy", "methods sheet"),
    ("STARD 2015 15", "handling of indeterminate results", "referral.csv ungradable column"),
    ("STARD 2015 16", "handling of missing data", "flow.csv (excluded)"),
    ("STARD 2015 19", "flow of participants", "flow.csv, report.html diagram"),
    ("STARD 2015 20", "baseline characteristics", "baseline.csv"),
    ("STARD 2015 23", "cross tabulation", "accuracy.csv tp/fp/fn/tn"),
    ("STARD 2015 24", "estimates with precision", "accuracy.csv, referral.csv, auc.csv"),
    ("STARD-AI", "algorithm version and poor-quality input", "snapshot.json; flow.csv gradable"),
    ("TRIPOD+AI 12/23", "calibration", "calibration.csv, reliability.csv"),
    ("TRIPOD+AI 23", "clinical utility", "decision_curve.csv"),
    ("TRIPOD+AI 23b / CONSORT-AI", "subgroups", "subgroups.csv"),
    ("CONSORT-AI 5(i)", "algorithm version", "snapshot.json"),
]


def _code_version() -> str:
    try:
        done = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
            check=False,
        )
        if done.returncode == 0:
            return done.stdout.strip()
    except OSError:
        pass
    return importlib.metadata.version("eyescreen")


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    """Columns in first-seen order, '\\n' line ends, values as given: the same rows give the
    same bytes."""
    columns: list[str] = []
    for row in rows:
        columns += [key for key in row if key not in columns]
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    path.write_text(out.getvalue(), encoding="utf-8")


def build_tables(
    records: Sequence[Any], options: Options, progress: Progress
) -> dict[str, list[Row]]:
    tables: dict[str, list[Row]] = {}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("flow", lambda: study_tables.flow(records)),
        ("baseline", lambda: study_tables.baseline(records)),
        ("accuracy", lambda: study_tables.accuracy(records, Interval.WILSON)),
        (
            "accuracy_clopper_pearson",
            lambda: study_tables.accuracy(records, Interval.CLOPPER_PEARSON),
        ),
        ("referral", lambda: study_tables.referral(records, options)),
        ("weighted_averages", lambda: study_tables.weighted_averages(records, options)),
        ("auc", lambda: study_tables.auc(records, options)),
        ("paired", lambda: study_tables.paired(records)),
        ("subgroups", lambda: study_tables.subgroups(records)),
        ("top3", lambda: study_tables.top3(records)),
        ("imrmc", lambda: study_tables.imrmc(records)),
        ("analysis_set", lambda: study_tables.analysis_set(records)),
    ]
    for name, make in steps:
        progress(name)
        tables[name] = make()
    progress("calibration")
    tables["calibration"], tables["reliability"], tables["decision_curve"] = (
        study_tables.calibration_rows(records)
    )
    return tables


def export(
    session: Session,
    filters: Filters,
    out: Path,
    key: bytes,
    options: Options | None = None,
    identified: bool = False,
    progress: Progress = lambda step: None,
) -> dict[str, Any]:
    """Write the export into ``out`` (created); returns the snapshot description."""
    options = options or Options()
    out.mkdir(parents=True, exist_ok=True)
    progress("reading the database")
    records = gather(session, filters, key, identified)
    tables = build_tables(records, options, progress)
    progress("writing CSV")
    for name, rows in tables.items():
        write_csv(out / f"{name}.csv", rows)
    snapshot = {
        "filters": {
            k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(filters).items()
        },
        "identified": identified,
        "eyes": len(records),
        "models": _models(session, records),
        "code_version": _code_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "seeds": {"bootstrap": options.seed},
        "bootstrap_replicates": options.replicates,
        "key_fingerprint": hashlib.sha256(key).hexdigest()[:12],
        "csv_sha256": {
            f"{name}.csv": hashlib.sha256((out / f"{name}.csv").read_bytes()).hexdigest()
            for name in sorted(tables)
        },
    }
    (out / "snapshot.json").write_text(json.dumps(snapshot, indent=2, sort_keys=True) + "\n")
    progress("writing XLSX")
    write_workbook(out / "study.xlsx", tables, snapshot)
    progress("drawing plots and writing HTML")
    write_html(out / "report.html", records, tables, snapshot)
    return snapshot


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _models(session: Session, records: Sequence[Any]) -> list[dict[str, Any]]:
    used = sorted({r.model_version for r in records})
    models = []
    for row in session.scalars(select(ModelVersion).order_by(ModelVersion.id)):
        if f"{row.name} {row.version}" in used:
            thresholds: dict[str, float] = next(
                (r.thresholds for r in records if r.model_version == f"{row.name} {row.version}"),
                {},
            )
            models.append(
                {
                    "name": row.name,
                    "version": row.version,
                    "route": row.route,
                    "weights_sha256": row.weights_sha256,
                    "thresholds": thresholds,
                }
            )
    return models


def write_workbook(path: Path, tables: dict[str, list[Row]], snapshot: dict[str, Any]) -> None:
    import xlsxwriter

    workbook = xlsxwriter.Workbook(str(path), {"strings_to_numbers": True})
    bold = workbook.add_format({"bold": True})
    for name, rows in tables.items():
        sheet = workbook.add_worksheet(name[:31])
        columns: list[str] = []
        for row in rows:
            columns += [k for k in row if k not in columns]
        sheet.write_row(0, 0, columns, bold)
        for i, row in enumerate(rows, start=1):
            sheet.write_row(i, 0, [row.get(c, "") for c in columns])
    methods = workbook.add_worksheet("methods")
    for i, line in enumerate(METHODS.splitlines()):
        methods.write(i, 0, line)
    methods.write(len(METHODS.splitlines()) + 1, 0, json.dumps(snapshot, sort_keys=True))
    checklist = workbook.add_worksheet("checklist")
    checklist.write_row(0, 0, ["item", "what", "where in this export"], bold)
    for i, item in enumerate(CHECKLIST, start=1):
        checklist.write_row(i, 0, list(item))
    workbook.close()


def write_html(
    path: Path, records: Sequence[Any], tables: dict[str, list[Row]], snapshot: dict[str, Any]
) -> None:
    rocs = []
    for row in tables["auc"]:
        picture = study_plots.roc_figure(records, row["code"], row["class"])
        if picture:
            rocs.append((row["class"], picture))
    environment = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape()
    )
    html = environment.get_template("study_report.html.j2").render(
        snapshot=snapshot,
        tables=tables,
        methods=METHODS,
        checklist=CHECKLIST,
        flow=study_plots.flow_figure(tables["flow"]),
        matrix=study_plots.referral_matrix(tables["accuracy"]),
        reliability=study_plots.reliability_figure(tables["reliability"]),
        decision=study_plots.decision_figure(tables["decision_curve"]),
        rocs=rocs,
    )
    path.write_text(html, encoding="utf-8")
