"""One picture of ``eyescreen cross-validate-sources``: per eye, each source's referral
sensitivity and specificity with 95 % Wilson intervals, as the pooled model reads it, with the
source held out, and held out then recalibrated at the site; one colour per recipe.

A reader sees at once which source fails and on which side (missed disease or referred normals),
which the tables bury in numbers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from ml.generalisation import held_out_severity

READINGS = (
    ("per_source", "pooled nested CV"),
    ("source_held_out", "held out"),
    ("site_recalibrated", "held out, recalibrated"),
)
MEASURES = ("sensitivity", "specificity")
TARGET_SPECIFICITY = 0.85


def figure_rows(reports: dict[str, dict[str, Any]]) -> list[tuple[str, str, str]]:
    """(source, reading key, label) for every row drawn, top to bottom: all sources pooled,
    then each source, worst held out first (by the first recipe)."""
    first = next(iter(reports.values()))
    rows = [("all sources", "pooled", _label("all sources", "pooled nested CV", first["pooled"]))]
    held_out = first["source_held_out"]
    for source in sorted(first["per_source"], key=lambda s: held_out_severity(held_out[s])):
        for key, label in READINGS:
            if any(source in report.get(key, {}) for report in reports.values()):
                block = next(r[key][source] for r in reports.values() if source in r.get(key, {}))
                rows.append((source, key, _label(source, label, block)))
    return rows


def _label(source: str, reading: str, block: dict[str, Any]) -> str:
    eye = block["eye"]
    return f"{source}: {reading}\n{eye['n_positive']} diseased, {eye['n_negative']} normal eyes"


def _error_bar(value: dict[str, Any]) -> list[list[float]]:
    # Wilson bounds can miss the estimate by rounding at 0 or 1; a bar is never negative.
    estimate = value["estimate"]
    return [[max(0.0, estimate - value["low"])], [max(0.0, value["high"] - estimate)]]


def draw_sources(reports: dict[str, dict[str, Any]], out: Path) -> Path:
    """Write the picture of one or more recipes' reports (same folds) to ``out`` (PNG)."""
    rows = figure_rows(reports)
    fig, axes = plt.subplots(
        1, 2, figsize=(12, 0.45 * len(rows) * max(1, len(reports)) ** 0.5 + 1.8), sharey=True
    )
    colours = plt.get_cmap("tab10")
    spread = 0.6 / max(1, len(reports))
    for column, measure in enumerate(MEASURES):
        ax = axes[column]
        for r, (name, report) in enumerate(reports.items()):
            labelled = False
            for i, (source, key, _) in enumerate(rows):
                block = report["pooled"] if key == "pooled" else report.get(key, {}).get(source)
                if block is None:
                    continue
                if not block["eye"][measure]["n"]:
                    if r == 0:
                        missing = "normal" if measure == "specificity" else "diseased"
                        ax.text(0.5, i, f"no {missing} eyes", ha="center", color="grey")
                    continue
                value = block["eye"][measure]
                y = i + (r - (len(reports) - 1) / 2) * spread
                ax.errorbar(
                    value["estimate"],
                    y,
                    xerr=_error_bar(value),
                    fmt="o",
                    color=colours(r),
                    markersize=4,
                    capsize=2,
                    label=None if labelled else f"recipe: {name}",
                )
                labelled = True
        ax.axvline(0.95 if measure == "sensitivity" else TARGET_SPECIFICITY, color="grey", ls=":")
        ax.set_xlim(-0.02, 1.02)
        aim = "0.95" if column == 0 else f"{TARGET_SPECIFICITY:.2f}"
        ax.set_title(f"dotted line: the aim, {measure} {aim}", fontsize=9)
        ax.set_xlabel(f"referral {measure} per eye (95 % Wilson)")
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(range(len(rows)), [label for _, _, label in rows])
    axes[0].invert_yaxis()
    for i in range(1, len(rows)):
        if rows[i][0] != rows[i - 1][0]:
            for ax in axes:
                ax.axhline(i - 0.5, color="lightgrey", lw=0.8)
    handles, labels = axes[0].get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), loc="upper center", ncol=len(unique), frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
