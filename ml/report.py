"""Writing evaluation results: tables in the paper's layout (Markdown, CSV, JSON) and figures."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import asdict
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from ml.metrics import ClassMetrics

MEASURES = ("auc", "accuracy", "precision", "recall", "specificity")


def _fmt(value: float) -> str:
    return "–" if value != value else f"{value:.3f}"  # NaN-safe


def markdown_table(
    title: str,
    rows: list[ClassMetrics],
    names: dict[str, str],
    average: dict[str, float],
    not_assessed: frozenset[str] = frozenset(),
) -> str:
    lines = [
        f"### {title}",
        "",
        "| class | n | AUC | accuracy | precision | recall | specificity |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        mark = " (not assessed)" if r.code in not_assessed else ""
        lines.append(
            f"| {names[r.code]}{mark} | {r.support} | "
            + " | ".join(_fmt(getattr(r, m)) for m in MEASURES)
            + " |"
        )
    lines.append(
        "| **weighted average** (assessed classes) | | "
        + " | ".join(f"**{_fmt(average[m])}**" for m in MEASURES)
        + " |"
    )
    return "\n".join(lines) + "\n"


def write_csv(
    path: Path,
    model: str,
    level: int,
    rows: list[ClassMetrics],
    average: dict[str, float],
    append: bool = True,
) -> None:
    new = not path.exists() or not append
    with path.open("a" if append else "w", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["model", "level", "class", "support", *MEASURES])
        for r in rows:
            writer.writerow([model, level, r.code, r.support, *(getattr(r, m) for m in MEASURES)])
        writer.writerow([model, level, "weighted_average", "", *(average[m] for m in MEASURES)])


def write_json(path: Path, results: dict[str, Any]) -> None:
    """NaN (an undefined measure, e.g. AUC of a class with no positives) is written as null."""
    path.write_text(json_text(results) + "\n")


def json_text(obj: Any) -> str:
    """Strict JSON that R's jsonlite and other readers accept: an undefined measure (NaN, e.g.
    the specificity of a source without normal eyes) or an infinite one becomes null."""
    return json.dumps(_nan_to_none(obj), indent=2, default=float, allow_nan=False)


def _nan_to_none(obj: Any) -> Any:
    if isinstance(obj, ClassMetrics):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {k: _nan_to_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_nan_to_none(v) for v in obj]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    return obj


def plot_roc(
    path: Path, title: str, codes: list[str], names: dict[str, str], y: np.ndarray, p: np.ndarray
) -> None:
    fig, ax = plt.subplots(figsize=(6, 6))
    for i, code in enumerate(codes):
        if 0 < y[:, i].sum() < len(y):
            fpr, tpr, _ = roc_curve(y[:, i], p[:, i])
            ax.plot(fpr, tpr, label=names[code])
    ax.plot([0, 1], [0, 1], "k:", linewidth=0.8)
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=title)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(
    path: Path, title: str, codes: list[str], names: dict[str, str], y: np.ndarray, p: np.ndarray
) -> None:
    """Rows: true class (an image counts once per true class); columns: most probable class."""
    n = len(codes)
    matrix = np.zeros((n, n), dtype=int)
    predicted = p.argmax(axis=1)
    for true_row, pred in zip(y, predicted, strict=True):
        for t in np.flatnonzero(true_row):
            matrix[t, pred] += 1
    fig, ax = plt.subplots(figsize=(1.2 + 0.7 * n, 1.0 + 0.7 * n))
    ax.imshow(matrix, cmap="Blues")
    labels = [names[c][:18] for c in codes]
    ax.set_xticks(range(n), labels, rotation=45, ha="right", fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                str(matrix[i, j]),
                ha="center",
                va="center",
                fontsize=7,
                color="white" if matrix[i, j] > matrix.max() / 2 else "black",
            )
    ax.set(xlabel="predicted (top-1)", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(path: Path, y: np.ndarray, p: np.ndarray, bins: int = 10) -> None:
    y, p = y.ravel(), p.ravel()
    edges = np.linspace(0, 1, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    centres, observed = [], []
    for b in range(bins):
        mask = idx == b
        if mask.any():
            centres.append(p[mask].mean())
            observed.append(y[mask].mean())
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], "k:")
    ax.plot(centres, observed, "o-")
    ax.set(xlabel="predicted probability", ylabel="observed frequency", title="Reliability")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_referral(path: Path, results: dict[str, Any]) -> None:
    """Referral sensitivity against specificity per model, with 95 % intervals (per eye)."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    lowest = [1.0, 1.0]  # specificity, sensitivity: the axes zoom onto the points
    for model, result in results.items():
        eye = result.get("referral", {}).get("eye")
        if not eye or not eye["sensitivity"]["n"] or not eye["specificity"]["n"]:
            continue
        se, sp = eye["sensitivity"], eye["specificity"]
        lowest = [min(lowest[0], sp["low"]), min(lowest[1], se["low"])]
        ax.errorbar(
            sp["estimate"],
            se["estimate"],
            xerr=[[sp["estimate"] - sp["low"]], [sp["high"] - sp["estimate"]]],
            yerr=[[se["estimate"] - se["low"]], [se["high"] - se["estimate"]]],
            fmt="o",
            capsize=3,
            label=model,
        )
    ax.set(
        xlim=(max(0.0, lowest[0] - 0.1), 1.005),
        ylim=(max(0.0, lowest[1] - 0.1), 1.005),
        xlabel="specificity",
        ylabel="sensitivity",
    )
    ax.set_title("Referral per eye (95% Wilson intervals)")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
