"""The study statistics against R: epiR's epi.tests for the accuracy measures and their
intervals, pROC for the AUC and its DeLong interval. R is an independent implementation."""

from __future__ import annotations

import csv
import io
import subprocess
import tempfile

import numpy as np
import pytest

from services.statistics.accuracy import Interval, TwoByTwo
from services.statistics.roc import delong
from tests.conftest import require_binary

pytestmark = pytest.mark.integration

RSCRIPT = "/usr/bin/Rscript"
LINES = ",\n"  # R reads at most 4096 bytes a line from a script


def r(program: str) -> list[dict[str, str]]:
    """Run an R program (from a file: the data make it long); it writes a CSV to stdout."""
    require_binary(RSCRIPT)
    with tempfile.NamedTemporaryFile("w", suffix=".R") as script:
        script.write(program.replace(";", ";\n"))
        script.flush()
        done = subprocess.run(
            [RSCRIPT, "--vanilla", script.name],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert done.returncode == 0, done.stderr[-2000:]
    rows = list(csv.DictReader(io.StringIO(done.stdout)))
    assert rows, (done.stdout[-500:], done.stderr[-2000:])
    return rows


NAMES = {
    "se": "sensitivity",
    "sp": "specificity",
    "pv.pos": "ppv",
    "pv.neg": "npv",
    "diag.ac": "accuracy",
    "lr.pos": "lr_positive",
    "lr.neg": "lr_negative",
}


@pytest.mark.parametrize(
    ("method", "theirs"),
    [(Interval.WILSON, "wilson"), (Interval.CLOPPER_PEARSON, "clopper-pearson")],
)
def test_accuracy_measures_match_epir(method: Interval, theirs: str) -> None:
    tables = [TwoByTwo(90, 20, 10, 80), TwoByTwo(3, 41, 1, 455), TwoByTwo(47, 2, 0, 12)]
    for table in tables:
        rows = r(
            "suppressMessages(library(epiR));"
            f"cells <- c({table.tp}, {table.fp}, {table.fn}, {table.tn});"
            "t <- as.table(matrix(cells, nrow = 2, byrow = TRUE));"
            f"d <- epi.tests(t, method = '{theirs}', digits = 4, conf.level = 0.95)$detail;"
            "write.csv(d, stdout(), row.names = FALSE)"
        )
        ours = table.measures(method)
        for row in rows:
            name = NAMES.get(row["statistic"])
            if name is None or (name.startswith("lr") and not np.isfinite(ours[name].estimate)):
                continue
            mine = ours[name]
            for key, value in (
                ("estimate", row["est"]),
                ("low", row["lower"]),
                ("high", row["upper"]),
            ):
                if value in ("NA", "NaN", "Inf"):
                    continue
                assert getattr(mine, key) == pytest.approx(float(value), abs=1e-6), (
                    table,
                    name,
                    key,
                )


def test_auc_and_delong_interval_match_proc() -> None:
    rng = np.random.default_rng(7)
    for size, prevalence in ((60, 0.3), (400, 0.1), (1500, 0.5)):
        truth = rng.random(size) < prevalence
        scores = np.where(truth, rng.normal(0.9, 1, size), rng.normal(0, 1, size)).round(2)
        rows = r(
            "suppressMessages(library(pROC));"
            f"y <- c({LINES.join('1' if t else '0' for t in truth)});"
            f"x <- c({LINES.join(str(s) for s in scores)});"
            "o <- roc(y, x, direction = '<', levels = c(0, 1), quiet = TRUE);"
            "ci <- ci.auc(o, method = 'delong');"
            "d <- data.frame(low = ci[1], auc = ci[2], high = ci[3]);"
            "write.csv(d, stdout(), row.names = FALSE)"
        )
        ours = delong(scores, truth)
        assert ours.auc == pytest.approx(float(rows[0]["auc"]), abs=1e-9)
        assert ours.low == pytest.approx(float(rows[0]["low"]), abs=1e-9)
        assert ours.high == pytest.approx(float(rows[0]["high"]), abs=1e-9)


@pytest.fixture(scope="module")
def simulated():  # type: ignore[no-untyped-def]
    from bench.study_simulation import eye_records, simulate_visits

    return eye_records(simulate_visits(1500, 11))


def test_weighted_sensitivity_matches_survey_two_phase_design(simulated) -> None:  # type: ignore[no-untyped-def]
    """The Begg-Greenes sensitivity is survey's ratio estimator under the two-phase design
    built from analysis_set.csv alone: phase 1 the eyes that could be verified (verifiable =
    1; never-verifiable eyes of the outcome queue are not part of it), clustered by case;
    phase 2 the panel's verification, its probabilities estimated within the strata of the
    triage's design probability (twophase without probs). Our patient-bootstrap interval is
    as wide as survey's linearisation interval, to sampling error."""
    from services.study.tables import WEIGHTED, Options, accuracy_table, analysis_set

    lines = ["case,stratum,verified,diseased,found"]
    for row in analysis_set(simulated):
        if row["verifiable"] != "1":
            continue
        verified = row["weight"] != "0"
        graded = row["model_result"] != "UNGRADABLE"
        diseased = int(verified and graded and row["reference"] != "NONE")
        found = int(diseased and row["model_result"] == "positive")
        lines.append(
            f"{row['case']},{row['inclusion_probability']},{int(verified)},{diseased},{found}"
        )
    rows = r_csv(
        "\n".join(lines),
        "suppressMessages(library(survey));"
        "d <- read.csv(data);"
        "d$verified <- as.logical(d$verified);"
        "des <- twophase(id = list(~case, ~case), strata = list(NULL, ~stratum),"
        " subset = ~verified, data = d);"
        "s <- svyratio(~found, ~diseased, des);"
        "out <- data.frame(twophase = coef(s), twophase_se = SE(s));"
        "write.csv(out, stdout(), row.names = FALSE)",
    )
    ours = next(
        r
        for r in accuracy_table(simulated, Options(1000, 5))
        if r["reader"] == "model" and r["code"] == "" and r["analysis"] == WEIGHTED
    )
    assert float(ours["sensitivity"]) == pytest.approx(float(rows[0]["twophase"]), abs=5e-5)
    width = float(ours["sensitivity_high"]) - float(ours["sensitivity_low"])
    assert width / (2 * Z) == pytest.approx(float(rows[0]["twophase_se"]), rel=0.25)


def test_weighted_auc_matches_r_and_the_naive_one_proc(simulated) -> None:  # type: ignore[no-untyped-def]
    """The weighted Mann-Whitney AUC equals R's, written from its definition (pairs of a
    diseased and a healthy verified eye weighted by the product of their weights, ties one
    half; pROC has no weights); the naive any-disease AUC and its DeLong interval equal
    pROC's."""
    from services.study.tables import NAIVE, WEIGHTED, Options, auc, truth_weight
    from services.study.tables.common import disease_risk

    rows = {r["analysis"]: r for r in auc(simulated, Options(50, 1)) if r["code"] == ""}
    for analysis in (WEIGHTED, NAIVE):
        ys, xs, ws = [], [], []
        for record in simulated:
            found = truth_weight(record, analysis)
            if found is None or not record.model_gradable:
                continue
            ys.append("1" if found[0] else "0")
            xs.append(repr(disease_risk(record)))
            ws.append(repr(found[1]))
        theirs = r(
            "suppressMessages(library(pROC));"
            f"y <- c({LINES.join(ys)});"
            f"x <- c({LINES.join(xs)});"
            f"w <- c({LINES.join(ws)});"
            "p <- y == 1;"
            "above <- outer(x[p], x[!p], '>') + 0.5 * outer(x[p], x[!p], '==');"
            "pairs <- outer(w[p], w[!p]);"
            "weighted <- sum(above * pairs) / sum(pairs);"
            "o <- roc(y, x, direction = '<', levels = c(0, 1), quiet = TRUE);"
            "ci <- ci.auc(o, method = 'delong');"
            "write.csv(data.frame(weighted = weighted, low = ci[1], auc = ci[2], high = ci[3]),"
            " stdout(), row.names = FALSE)"
        )[0]
        assert float(rows[analysis]["auc"]) == pytest.approx(float(theirs["weighted"]), abs=5e-5)
        if analysis == NAIVE:
            assert float(rows[NAIVE]["auc"]) == pytest.approx(float(theirs["auc"]), abs=5e-5)
            assert float(rows[NAIVE]["delong_low_eyes_independent"]) == pytest.approx(
                float(theirs["low"]), abs=5e-5
            )
            assert float(rows[NAIVE]["delong_high_eyes_independent"]) == pytest.approx(
                float(theirs["high"]), abs=5e-5
            )


def test_weighted_paired_difference_and_its_clustered_test_match_survey(simulated) -> None:  # type: ignore[no-untyped-def]
    """Model minus grader in weighted sensitivity and specificity is survey's weighted mean of
    the per-eye difference in correctness under the patient-clustered design; our clustered
    test (Wald, patient-bootstrap standard error) agrees with survey's linearisation test."""
    from services.study.tables import WEIGHTED, Options, paired, truth_weight

    ours = {
        r["comparison"].split(":")[0]: r
        for r in paired(simulated, Options(1000, 5))
        if r["analysis"] == WEIGHTED
    }
    for measure, wanted in (("sensitivity", True), ("specificity", False)):
        lines = ["patient,w,d"]
        for record in simulated:
            found = truth_weight(record, WEIGHTED)
            if found is None or not record.model_gradable or record.triaged_read is None:
                continue
            if bool(found[0]) != wanted:
                continue
            model = record.model_referral == wanted
            grader = bool(record.triaged_read) == wanted
            lines.append(f"{record.patient_key},{found[1]!r},{int(model) - int(grader)}")
        theirs = r_csv(
            "\n".join(lines),
            "suppressMessages(library(survey));"
            "d <- read.csv(data);"
            "des <- svydesign(ids = ~patient, weights = ~w, data = d);"
            "m <- svymean(~d, des);"
            "est <- as.numeric(coef(m)); se <- as.numeric(SE(m));"
            "write.csv(data.frame(difference = est, se = se, p = 2 * pnorm(-abs(est / se))),"
            " stdout(), row.names = FALSE)",
        )[0]
        row = ours[measure]
        assert float(row["difference"]) == pytest.approx(float(theirs["difference"]), abs=5e-5)
        width = float(row["difference_high"]) - float(row["difference_low"])
        assert width / (2 * Z) == pytest.approx(float(theirs["se"]), rel=0.25)
        p = float(theirs["p"])
        if p < 1e-4:
            assert row["cluster_bootstrap_p"] == "<0.0001"
        else:
            assert float(row["cluster_bootstrap_p"]) == pytest.approx(p, abs=0.05, rel=0.5)
        assert "mcnemar_exact_p_eyes_independent" in row  # labelled: eyes as independent


Z = 1.959963984540054


def r_csv(data: str, program: str) -> list[dict[str, str]]:
    """Run an R program with ``data`` (CSV text) at the path in its variable ``data``."""
    with tempfile.NamedTemporaryFile("w", suffix=".csv") as file:
        file.write(data + "\n")
        file.flush()
        return r(f"data <- '{file.name}';" + program)
