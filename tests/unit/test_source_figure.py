"""The picture of the per-source readings: which rows it draws, and that a source with eyes of
one kind only (no specificity) is drawn without failing."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from PIL import Image

from ml.source_figure import draw_sources, figure_rows


def _proportion(successes: int, n: int) -> dict[str, Any]:
    estimate = successes / n if n else 0.0
    return {
        "successes": successes,
        "n": n,
        "estimate": estimate,
        "low": max(0.0, estimate - 0.1),
        "high": min(1.0, estimate + 0.1),
    }


def _block(sens: tuple[int, int], spec: tuple[int, int]) -> dict[str, Any]:
    eye = {
        "sensitivity": _proportion(*sens),
        "specificity": _proportion(*spec),
        "n_positive": sens[1],
        "n_negative": spec[1],
    }
    return {"eye": eye, "patient": eye}


def _report(held_out_specificity: int) -> dict[str, Any]:
    return {
        "pooled": _block((120, 150), (70, 97)),
        "per_source": {"odir": _block((40, 48), (60, 97)), "eyepacs": _block((84, 102), (0, 0))},
        "source_held_out": {
            "odir": _block((48, 48), (held_out_specificity, 97)),
            "eyepacs": _block((25, 102), (0, 0)),
        },
        "site_recalibrated": {"odir": _block((45, 48), (70, 97))},
    }


def test_rows_follow_the_readings_each_source_has_worst_source_first() -> None:
    rows = figure_rows({"frozen": _report(4)})
    assert [(s, k) for s, k, _ in rows] == [
        ("all sources", "pooled"),
        ("odir", "per_source"),  # held out: specificity 4/97, worse than eyepacs' 25/102
        ("odir", "source_held_out"),
        ("odir", "site_recalibrated"),
        ("eyepacs", "per_source"),
        ("eyepacs", "source_held_out"),  # all diseased: never recalibrated at the site
    ]
    assert "48 diseased, 97 normal eyes" in rows[2][2]
    later = figure_rows({"frozen": _report(60)})  # odir held out now better than eyepacs
    assert [s for s, _, _ in later][1] == "eyepacs"


def test_two_recipes_in_one_picture(tmp_path: Path) -> None:
    out = draw_sources({"frozen": _report(4), "last-block": _report(30)}, tmp_path / "s.png")
    with Image.open(out) as picture:
        assert picture.format == "PNG" and picture.width > 800 and picture.height > 200
