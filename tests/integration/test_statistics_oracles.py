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
