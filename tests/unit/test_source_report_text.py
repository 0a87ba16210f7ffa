"""What a statistician reads of ``cross-validate-sources``: JSON that strict readers (R's
jsonlite) accept, the worst source chosen by a stated rule, and tables that say what made them."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest

from ml.generalisation import _worst, markdown
from ml.report import json_text
from services.statistics.proportions import wilson


def _reject(constant: str) -> None:
    raise ValueError(f"not JSON: {constant}")


def test_undefined_measures_are_null_not_nan() -> None:
    """A source without normal eyes has no specificity: Python wrote NaN, which R rejects."""
    report = {
        "specificity": wilson(0, 0).to_dict(),
        "auc": np.float32("nan"),
        "ratio": [math.inf, np.float64(0.5)],
    }
    parsed = json.loads(json_text(report), parse_constant=_reject)
    assert parsed["specificity"]["estimate"] is None and parsed["specificity"]["n"] == 0
    assert parsed["auc"] is None and parsed["ratio"] == [None, 0.5]


def _block(sens: tuple[int, int], spec: tuple[int, int], auc: float | None) -> dict[str, Any]:
    eye = {
        "sensitivity": wilson(*sens).to_dict(),
        "specificity": wilson(*spec).to_dict(),
        "n_positive": sens[1],
        "n_negative": spec[1],
    }
    return {"eye": eye, "patient": eye, "referral_auc": auc, "level2_weighted_auc": auc}


def _report() -> dict[str, Any]:
    held = {"small": _block((6, 6), (0, 6), 0.4), "large": _block((19, 19), (0, 19), 0.6)}
    report = {
        "samples": 50,
        "patients": 40,
        "groups": 40,
        "folds": 5,
        "target_sensitivity": 0.95,
        "pooled": _block((20, 25), (10, 25), 0.9),
        "per_source": {
            "small": _block((5, 6), (3, 6), 0.8),
            "large": _block((15, 19), (9, 19), 0.9),
        },
        "source_held_out": held,
        "site_recalibrated": {"large": _block((18, 19), (12, 19), 0.6) | {"calibration_eyes": 15}},
        "thresholds_for_held_out_source": "the other sources' out-of-fold predictions",
        "recipe": "frozen",
        "backbone": "efficientnet_lite2",
        "image_size": 320,
        "photographs_per_source": 600,
        "not_assessed": ["F.ON.ON"],
        "warnings": ["F.NOR.NOR (normal) has fewer than 30 eyes here and is not assessed"],
    }
    report["worst_source"] = _worst(report)
    return report


def test_a_tie_goes_to_the_source_surer_to_be_bad() -> None:
    """0/19 normals not referred is worse evidence than 0/6: both 0.000, the larger first."""
    assert _worst(_report())["source"] == "large"


@pytest.fixture
def table() -> str:
    return markdown(_report())


def test_the_table_says_what_made_it(table: str) -> None:
    assert table.startswith("**Warning: F.NOR.NOR (normal)")
    assert "Settings: recipe frozen; efficientnet_lite2 at 320 px; about 600 photographs" in table
    assert "not assessed: F.ON.ON" in table
    assert "*Worst source held out*: the held-out source whose lower" in table


def test_aucs_are_per_eye_only(table: str) -> None:
    rows = [line.split(" | ") for line in table.splitlines() if line.startswith("| pooled")]
    eye, patient = rows
    assert eye[2] == "eye" and eye[5] == "0.900"
    assert patient[2] == "patient" and patient[5].strip() == ""
