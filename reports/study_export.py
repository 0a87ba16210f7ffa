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
from services.study.enrolment import Enrolment, enrolment
from services.study.protocol import Protocol, load_protocol
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
Unit of analysis: the eye (one record per eye of each visit), as the protocol names it; the
referral is also given per visit (a visit is referred when any eye is). Two eyes of a patient
are correlated: every per-eye figure carries a patient-level cluster bootstrap interval
(percentile, patients drawn with replacement with all their eyes). The interval method, the
replicates and the seed are the protocol's ([analysis]); an export run with others says the
protocol was overridden (verdict.csv, snapshot.json). The bootstrap keeps the verification
weights fixed in every replicate (the probabilities are estimated once, on all the data, not
again per replicate): conservative against a two-phase variance, which credits the
estimation of the phase-2 probabilities within strata (survey's twophase).
Reference standard: the arbitration panel's signed decision, for every case sent to it
(discordant model and grader, a grader in training, or drawn at random for quality control
among concordant cases with the stored inclusion probability). The eyes of the cases kept
from the panel and not drawn for QC did not receive it, by design (flow.csv: 'reference
standard not received', 'not verified by the panel (by design: concordant, not drawn for
QC)'), as the primary (weighted) analysis treats them; the naive analysis takes their
concordant grader's read as truth. An eye the model could not grade in such a case agreed
with nothing: its route is 'model ungradable, grader's read only', otherwise it is treated as
a concordant eye. A case a grader could not fully grade goes to the outcome queue (re-image,
slit lamp, exclude), never to the panel: neither of its eyes can be verified. The ungradable
eye has no read; its fellow eye keeps its read and its index-test result but has no reference
standard, whether model and grader agree on it or not (flow.csv: 'reference standard not received',
with the reason). Such never-verifiable eyes have verification probability 0 and weight 0.
Partial verification: every accuracy figure is given twice, in rows the column 'analysis'
names, the weighted one first. Weighted (Begg and Greenes 1983, inverse probability
weighting): only the panel-verified eyes, each weighted by 1 / the estimated probability that
its case was verified. The verification model is estimated over the eyes that could be
verified (concordant eyes eligible for the QC draw, eyes sent to the panel, decided or still
pending): within each stratum of the triage's design probability (1 for cases sent for
certain, the QC rate for concordant ones), the share of the stratum's cases the panel decided
(the two-phase design with phase-2 probabilities estimated within strata; cases still with
the panel are taken as missing at random within their stratum). The weighted figures stand
for the verifiable eyes, not for the never-verifiable ones of the outcome queue
(positivity). The primary analysis. Naive ("discrepant analysis"): the concordant read
accepted as the truth where the panel did not look, on the eyes the panel verified and the
eyes kept from it; biased upwards, shown for comparison.
Estimators and intervals, table by table:
- accuracy.csv: sensitivity, specificity, PPV, NPV, accuracy as ratios of (weighted) sums of
  the 2x2 cells; LR+ = sens / (1 - spec), LR- = (1 - sens) / spec; all with patient cluster
  bootstrap intervals. accuracy_wilson.csv and accuracy_clopper_pearson.csv: the naive
  figures with eyes as independent (Wilson score; Clopper-Pearson exact; log-method intervals
  for the LRs, Simel et al. 1991), for comparison with earlier reports.
- referral.csv: the referral per eye and per visit, ungradable counted as a referral
  (intention to diagnose) or excluded (complete case), for the model and each grader.
- auc.csv: weighted Mann-Whitney AUC (pairs weighted by the product of the eyes' weights,
  ties one half), for any disease (the disease risk: the highest level-1 disease
  probability) and per class; patient cluster bootstrap intervals; DeLong's interval (Sun and
  Xu 2014 algorithm) beside the naive one, in columns named *_eyes_independent: it takes
  the two eyes of a patient as independent.
- paired.csv: model minus the triaged grader in sensitivity and specificity on the same eyes,
  a ratio of weighted sums with a patient cluster bootstrap interval and, for every row
  (weighted ones included), a clustered test of no difference: cluster_bootstrap_p, the Wald
  test with the patient cluster-bootstrap standard error of the (weighted) difference. For the
  naive analysis also the exact McNemar test and Newcombe's hybrid score interval (1998,
  method 10), in columns named *_eyes_independent: both take the eyes as independent and are
  given for comparison with earlier reports only. p below 0.0001 is printed as <0.0001.
- agreement.csv: Cohen's kappa (model vs triaged grader; Fleiss-Cohen-Everitt interval beside
  the cluster bootstrap), Fleiss' kappa and Gwet's AC1 among graders where two or more read an
  eye; agreement needs no reference standard, so it uses every eye both read, unweighted.
- calibration.csv, reliability.csv, decision_curve.csv: Brier score, calibration intercept
  (offset logistic model) and slope (logistic regression on the logit of the risk) with
  frequency weights, each with a patient cluster bootstrap interval (the Brier score's
  exact; intercept and slope by the one-step bootstrap: one Newton step from the point
  estimate on each replicate's score and information, which the tests check against
  refitting every replicate); reliability in ten equal-width bins (weighted means); net
  benefit with weighted true and false positive shares (Vickers and Elkin 2006).
- subgroups.csv: referral sensitivity and specificity in the protocol's prespecified and
  exploratory subgroups, both analyses, cluster bootstrap intervals.
- top3.csv: a hit is any reference level-2 class among the reader's answers (the model's
  three most probable classes; a grader's recorded level-2 findings); both analyses.
- weighted_averages.csv: per level, sensitivity and specificity averaged over classes
  weighted by their reference positives; both analyses.
- report.html ROC curves: weighted (roc curve of the verified eyes with their weights), every
  class in one figure, each grader's weighted operating point and the deployed threshold.
- endpoints.csv: each protocol endpoint against its goal by the bound the protocol names;
  the referral's sensitivity and specificity (co-primary) both with the protocol's one
  handling of ungradable eyes (default: intention to diagnose, an ungradable eye counts as a
  referral), each followed by a secondary row with the other handling; beside each, the
  reader's indeterminate (ungradable) eyes, their share of the eyes, how many of them could
  never be verified, and the eyes the estimate describes: a weighted estimate describes the
  verifiable eyes, not the never-verifiable ones (which the intention-to-diagnose row cannot
  count as referred). verdict.csv: whether all co-primary endpoints met their goals (yes/no),
  by the protocol's interval, and whether the protocol's bootstrap was overridden.
  sample_size.csv: the protocol's justification at the planned and the observed prevalence,
  per eye multiplied by the design effect 1 + (m - 1) rho of the eyes of a patient (m eyes
  per patient with the condition, rho the one-way ANOVA intra-patient correlation of the
  model's result among them, estimated on the naive truth: the eyes with a reference, the
  concordant read accepted) and by Kish's design effect of unequal weights, 1 + CV^2 of the
  endpoint analysis' weights among the eyes with (without) the condition.
- target_conditions.csv: the eyes counted and their share, then the weighted counts (the eyes
  they stand for) and the weighted share, each share beside its own counts.
- analysis_set.csv: model_referral is NA (missing) for an eye the model could not grade.
Indeterminate results: index_results.csv counts each reader's positive, negative and
ungradable eyes; flow.csv places them in the STARD diagram.
Flow (STARD 19): the patients eligible are those expected for screening on the department's
worklist in the export's sites and days, and those photographed without a worklist entry;
excluded with reasons (expected but not photographed; photographed without an index-test
result in the export); the patients who received the index test lead to their visits, and
the visits to their eyes (two each, the eyes without an index-test result a box of their
own). Within a unit every box is the sum of its children.
Missing values: see the codes in analysis_set.csv (NONE healthy, UNGRADABLE, NA missing);
an unknown blinding is NA, not 0.
De-identification: keyed-hash pseudonyms (HMAC-SHA-256 with the installation's study key) for
patients, visits and graders; no names, birth dates or patient ids; age in bands; dates as days
since the first study in the export.
"""

CHECKLIST = [
    (
        "STARD 2015 2",
        "abstract-level figures",
        "verdict.csv, endpoints.csv, referral.csv, accuracy.csv",
    ),
    ("STARD 2015 4/26", "objectives, protocol", "protocol (sha256 in snapshot.json)"),
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
    ("STARD 2015 15", "handling of indeterminate results", "index_results.csv; referral.csv"),
    ("STARD 2015 16", "handling of missing data", "flow.csv (reasons); analysis_set codes"),
    ("STARD 2015 17", "analyses of variability (subgroups)", "subgroups.csv (protocol)"),
    ("STARD 2015 18", "intended sample size", "sample_size.csv"),
    ("STARD 2015 19", "flow of participants", "flow.csv, report.html diagram"),
    ("STARD 2015 20", "baseline characteristics", "baseline.csv"),
    ("STARD 2015 21a/21b", "distribution of target conditions", "target_conditions.csv"),
    ("STARD 2015 22", "time between index test and reference", "time_to_reference.csv"),
    ("STARD 2015 23", "cross tabulation", "accuracy.csv tp/fp/fn/tn"),
    ("STARD 2015 24", "estimates with precision", "accuracy.csv, referral.csv, auc.csv"),
    (
        "STARD 2015 25",
        "adverse events from the index test or reference",
        "not recorded by this software: report from the study's safety log",
    ),
    ("STARD-AI", "algorithm version and poor-quality input", "snapshot.json; index_results.csv"),
    ("TRIPOD+AI 12/23", "calibration", "calibration.csv, reliability.csv"),
    ("TRIPOD+AI 23", "clinical utility", "decision_curve.csv"),
    ("TRIPOD+AI 23b / CONSORT-AI", "subgroups", "subgroups.csv"),
    ("CONSORT-AI 5(i)", "algorithm version", "snapshot.json"),
]

FORMATS = ("csv", "xlsx", "html")
ROW_LEVEL = ("analysis_set", "imrmc")  # one row per eye or per read

# The columns the HTML report shows of the wide tables (the CSVs carry them all), so that each
# fits the page.
BRIEF = {
    "accuracy": [
        "reader",
        "level",
        "class",
        "analysis",
        "eyes",
        "tp",
        "fp",
        "fn",
        "tn",
        "sensitivity",
        "sensitivity_low",
        "sensitivity_high",
        "specificity",
        "specificity_low",
        "specificity_high",
        "ppv",
        "npv",
    ],
}


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


def csv_text(rows: Sequence[Row]) -> str:
    """Columns in first-seen order, '\\n' line ends, values as given: the same rows give the
    same bytes."""
    columns: list[str] = []
    seen: set[str] = set()
    for row in rows:
        for key in row:
            if key not in seen:
                seen.add(key)
                columns.append(key)
    out = io.StringIO()
    writer = csv.DictWriter(out, columns, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def write_csv(path: Path, rows: Sequence[Row]) -> None:
    path.write_text(csv_text(rows), encoding="utf-8")


# The tables build_tables reports progress for, in order (the last three come from one step).
TABLE_STEPS = (
    "flow",
    "index_results",
    "baseline",
    "target_conditions",
    "time_to_reference",
    "accuracy",
    "accuracy_wilson",
    "accuracy_clopper_pearson",
    "referral",
    "weighted_averages",
    "auc",
    "paired",
    "agreement",
    "subgroups",
    "top3",
    "imrmc",
    "analysis_set",
    "calibration",
)


def progress_steps(formats: Sequence[str] = FORMATS) -> int:
    """How many times ``export`` calls its progress: reading the database, each table step,
    and one per format written (a progress bar's total)."""
    return 1 + len(TABLE_STEPS) + len(set(formats))


def build_tables(
    records: Sequence[Any],
    options: Options,
    protocol: Protocol,
    progress: Progress,
    enrolled: Enrolment | None = None,
) -> dict[str, list[Row]]:
    tables: dict[str, list[Row]] = {}
    steps: list[tuple[str, Callable[[], Any]]] = [
        ("flow", lambda: study_tables.flow(records, enrolled)),
        ("index_results", lambda: study_tables.index_results(records)),
        ("baseline", lambda: study_tables.baseline(records)),
        ("target_conditions", lambda: study_tables.target_conditions(records)),
        ("time_to_reference", lambda: study_tables.time_to_reference(records)),
        ("accuracy", lambda: study_tables.accuracy_table(records, options)),
        ("accuracy_wilson", lambda: study_tables.accuracy(tables["accuracy"], Interval.WILSON)),
        (
            "accuracy_clopper_pearson",
            lambda: study_tables.accuracy(tables["accuracy"], Interval.CLOPPER_PEARSON),
        ),
        ("referral", lambda: study_tables.referral(records, options)),
        ("weighted_averages", lambda: study_tables.weighted_averages(records, options)),
        ("auc", lambda: study_tables.auc(records, options)),
        ("paired", lambda: study_tables.paired(records, options)),
        ("agreement", lambda: study_tables.agreement(records, options)),
        ("subgroups", lambda: study_tables.subgroups(records, protocol, options)),
        ("top3", lambda: study_tables.top3(records, options)),
        ("imrmc", lambda: study_tables.imrmc(records)),
        ("analysis_set", lambda: study_tables.analysis_set(records)),
    ]
    assert [name for name, _ in steps] == list(TABLE_STEPS[:-1])  # the bar's total counts them
    for name, make in steps:
        progress(name)
        tables[name] = make()
    progress("calibration")
    tables["calibration"], tables["reliability"], tables["decision_curve"] = (
        study_tables.calibration_rows(records, options)
    )
    tables["endpoints"] = study_tables.endpoints(
        protocol, tables["accuracy"], tables["auc"], tables["referral"], records
    )
    tables["verdict"] = study_tables.verdict(protocol, tables["endpoints"], options)
    tables["sample_size"] = study_tables.sample_size(protocol, tables["accuracy"], records)
    return tables


def export(
    session: Session,
    filters: Filters,
    out: Path,
    key: bytes,
    options: Options | None = None,
    identified: bool = False,
    progress: Progress = lambda step: None,
    protocol: Protocol | None = None,
    formats: Sequence[str] = FORMATS,
) -> dict[str, Any]:
    """Write the export into ``out`` (created) in the formats asked (CSV, XLSX, HTML; all by
    default; snapshot.json always); returns the snapshot description. Without ``options`` the
    protocol's bootstrap (replicates, seed) is used; other options are an override the
    export states (verdict.csv, snapshot.json)."""
    unknown = set(formats) - set(FORMATS)
    if unknown or not formats:
        raise ValueError(f"export formats are {', '.join(FORMATS)}; not {sorted(unknown)}")
    protocol = protocol or load_protocol()
    options = options or Options(protocol.replicates, protocol.seed)
    out.mkdir(parents=True, exist_ok=True)
    progress("reading the database")
    records = gather(session, filters, key, identified)
    enrolled = enrolment(session, filters, key, records, identified)
    tables = build_tables(records, options, protocol, progress, enrolled)
    texts = {name: csv_text(rows) for name, rows in tables.items()}
    imrmc = study_tables.imrmc_text(tables["imrmc"])
    if "csv" in formats:
        progress("writing CSV")
        for name, text in texts.items():
            (out / f"{name}.csv").write_text(text, encoding="utf-8")
        (out / "imrmc.imrmc").write_text(imrmc, encoding="utf-8")
    snapshot = {
        "filters": {
            k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in asdict(filters).items()
        },
        "identified": identified,
        "eyes": len(records),
        "models": _models(session, records),
        "protocol": {
            "title": protocol.title,
            "version": protocol.version,
            "source": protocol.source,
            "sha256": protocol.sha256,
            "interval": protocol.interval,
            "overridden": protocol.overridden(options.replicates, options.seed),
        },
        "all_co_primary_endpoints_met": tables["verdict"][0]["all_co_primary_endpoints_met"],
        "code_version": _code_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "seeds": {"bootstrap": options.seed},
        "bootstrap_replicates": options.replicates,
        "key_fingerprint": hashlib.sha256(key).hexdigest()[:12],
        "formats": sorted(formats),
        "csv_sha256": {
            f"{name}.csv": hashlib.sha256(text.encode()).hexdigest()
            for name, text in sorted(texts.items())
        },
    }
    (out / "snapshot.json").write_text(json.dumps(snapshot, indent=2, sort_keys=True) + "\n")
    if "xlsx" in formats:
        progress("writing XLSX")
        # The row-level tables are files for statistical software, not sheets to read: when the
        # CSVs are written the workbook points at them (a third of the export's time otherwise).
        sheets = {k: v for k, v in tables.items() if "csv" not in formats or k not in ROW_LEVEL}
        write_workbook(out / "study.xlsx", sheets, snapshot)
    if "html" in formats:
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
    lines = [*METHODS.splitlines(), "", study_tables.CODES_NOTE, ""]
    for i, line in enumerate(lines):
        methods.write(i, 0, line)
    methods.write(len(lines), 0, json.dumps(snapshot, sort_keys=True))
    missing = [name for name in ROW_LEVEL if name not in tables]
    if missing:
        files = workbook.add_worksheet("row-level files")
        files.write(0, 0, "row-level data (one row per eye or read) are in these files:", bold)
        for i, name in enumerate(missing, start=1):
            files.write(i, 0, f"{name}.csv")
    checklist = workbook.add_worksheet("checklist")
    checklist.write_row(0, 0, ["item", "what", "where in this export"], bold)
    for i, item in enumerate(CHECKLIST, start=1):
        checklist.write_row(i, 0, list(item))
    workbook.close()


def write_html(
    path: Path, records: Sequence[Any], tables: dict[str, list[Row]], snapshot: dict[str, Any]
) -> None:
    targets = [
        (row["code"], f"{row['class']} (level {row['level']})")
        for row in tables["auc"]
        if row["code"] and row["analysis"] == study_tables.WEIGHTED
    ]
    picture = study_plots.roc_figure(records, targets)
    rocs = [("every class (weighted)", picture)] if picture else []
    environment = Environment(
        loader=FileSystemLoader(Path(__file__).parent / "templates"), autoescape=select_autoescape()
    )
    html = environment.get_template("study_report.html.j2").render(
        snapshot=snapshot,
        tables=tables,
        methods=METHODS,
        checklist=CHECKLIST,
        flow=study_plots.flow_figure(tables["flow"], "eye"),
        flow_visits=study_plots.flow_figure(tables["flow"], "visit"),
        codes_note=study_tables.CODES_NOTE,
        brief=BRIEF,
        matrix=study_plots.referral_matrix(tables["accuracy"]),
        reliability=study_plots.reliability_figure(tables["reliability"]),
        decision=study_plots.decision_figure(tables["decision_curve"]),
        rocs=rocs,
    )
    path.write_text(html, encoding="utf-8")
