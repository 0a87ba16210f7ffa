"""The study's tables from the analysis set (``services.study.records``): each a list of rows
(dicts with fixed keys, in a fixed order) so that the CSVs of a snapshot are the same to the
byte. One module per family of tables; this package names them all for the export.

May import: the shared kernel, ``services.study.records``."""

from services.study.tables.accuracy import accuracy, top3, weighted_averages
from services.study.tables.agreement import paired
from services.study.tables.calibration import calibration_rows
from services.study.tables.common import MODEL, POOLED, Options, Row, has_reference
from services.study.tables.datasets import analysis_set, imrmc
from services.study.tables.discrimination import auc
from services.study.tables.flow import baseline, flow
from services.study.tables.referral import referral
from services.study.tables.subgroups import subgroups

__all__ = [
    "MODEL",
    "POOLED",
    "Options",
    "Row",
    "accuracy",
    "analysis_set",
    "auc",
    "baseline",
    "calibration_rows",
    "flow",
    "has_reference",
    "imrmc",
    "paired",
    "referral",
    "subgroups",
    "top3",
    "weighted_averages",
]
