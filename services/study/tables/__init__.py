"""The study's tables from the analysis set (``services.study.records``): each a list of rows
(dicts with fixed keys, in a fixed order) so that the CSVs of a snapshot are the same to the
byte. One module per family of tables; this package names them all for the export.

May import: the shared kernel, ``services.study.eye``, ``services.study.records``,
``services.study.enrolment``, ``services.study.protocol``."""

from services.study.tables.accuracy import accuracy, accuracy_table, top3, weighted_averages
from services.study.tables.agreement import agreement, paired
from services.study.tables.calibration import calibration_rows
from services.study.tables.common import (
    ANALYSES,
    MODEL,
    NAIVE,
    POOLED,
    WEIGHTED,
    Options,
    Row,
    has_reference,
    truth_weight,
)
from services.study.tables.datasets import CODES_NOTE, analysis_set, imrmc, imrmc_text
from services.study.tables.discrimination import auc
from services.study.tables.endpoints import endpoints, sample_size, verdict
from services.study.tables.flow import (
    baseline,
    flow,
    index_results,
    target_conditions,
    time_to_reference,
)
from services.study.tables.referral import referral
from services.study.tables.subgroups import subgroups

__all__ = [
    "ANALYSES",
    "CODES_NOTE",
    "MODEL",
    "NAIVE",
    "POOLED",
    "WEIGHTED",
    "Options",
    "Row",
    "accuracy",
    "accuracy_table",
    "agreement",
    "analysis_set",
    "auc",
    "baseline",
    "calibration_rows",
    "endpoints",
    "flow",
    "has_reference",
    "imrmc",
    "imrmc_text",
    "index_results",
    "paired",
    "referral",
    "sample_size",
    "subgroups",
    "target_conditions",
    "time_to_reference",
    "top3",
    "truth_weight",
    "verdict",
    "weighted_averages",
]
