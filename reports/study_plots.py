"""The study report's pictures: ROC curves with the readers' operating points, the reliability
diagram, the decision curve, the STARD flow diagram and the referral cross-tabulation."""

from __future__ import annotations

import base64
import io
import textwrap
from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from sklearn.metrics import roc_curve

from services.study.records import EyeRecord
from services.study.tables import MODEL, NAIVE, WEIGHTED, truth_weight
from services.taxonomy.tree import route_of_code

Row = dict[str, Any]


def _png(figure: Any) -> str:
    out = io.BytesIO()
    figure.tight_layout()  # one layout pass: bbox_inches="tight" would draw every figure twice
    figure.savefig(out, format="png", dpi=110, metadata={"Software": None})
    plt.close(figure)
    return base64.b64encode(out.getvalue()).decode()


def roc_figure(records: Sequence[EyeRecord], targets: Sequence[tuple[str, str]]) -> str | None:
    """The model's ROC curves, weighted (each verified eye by 1 / its inclusion probability),
    one panel per class: each grader's weighted operating point and the model's deployed
    threshold marked (intervals in the tables). One figure: one layout and one rasterisation."""
    panels = [p for p in (_roc_panel(records, code, name) for code, name in targets) if p]
    if not panels:
        return None
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    figure, grid = plt.subplots(rows, columns, figsize=(3.3 * columns, 3.3 * rows), squeeze=False)
    for axes in grid.flat[len(panels) :]:
        axes.axis("off")
    for axes, (name, fpr, tpr, deployed, graders) in zip(grid.flat, panels, strict=False):
        axes.plot(fpr, tpr, color="#1f6feb", label=MODEL)
        if deployed is not None:
            axes.plot([deployed[0]], [deployed[1]], "o", color="#1f6feb", label="deployed")
        for grader, (fp, sens) in graders.items():
            axes.plot([fp], [sens], "s", label=grader)
        axes.plot([0, 1], [0, 1], ":", color="grey")
        axes.set(xlim=(0, 1), ylim=(0, 1.02), title=name)
        axes.title.set_fontsize(9)
        axes.tick_params(labelsize=7)
    grid.flat[0].set(xlabel="1 - specificity", ylabel="sensitivity")
    grid.flat[0].legend(fontsize=6, loc="lower right")
    return _png(figure)


Panel = tuple[
    str, np.ndarray, np.ndarray, tuple[float, float] | None, dict[str, tuple[float, float]]
]


def _roc_panel(records: Sequence[EyeRecord], code: str, name: str) -> Panel | None:
    route = route_of_code(code)
    chosen = [
        (r, found)
        for r in records
        if r.route == route
        and r.model_gradable
        and code in r.probabilities
        and (found := truth_weight(r, WEIGHTED)) is not None
    ]
    truth = np.array([code in found[0] for _, found in chosen], dtype=bool)
    if not truth.any() or truth.all():
        return None
    weights = np.array([found[1] for _, found in chosen])
    scores = np.array([r.probabilities[code] for r, _ in chosen])
    fpr, tpr, _ = roc_curve(truth, scores, sample_weight=weights)
    threshold = chosen[0][0].thresholds.get(code)
    deployed = None
    if threshold is not None:
        deployed = _operating_point(scores >= threshold, truth, weights)
    graders: dict[str, tuple[float, float]] = {}
    for grader in sorted({g for r, _ in chosen for g in r.reads}):
        read = [
            (i, code in codes)
            for i, (r, _) in enumerate(chosen)
            if (codes := r.reads.get(grader)) is not None
        ]
        index = np.array([i for i, _ in read], dtype=int)
        if len(index) and truth[index].any() and (~truth[index]).any():
            said = np.array([s for _, s in read], dtype=bool)
            graders[grader] = _operating_point(said, truth[index], weights[index])
    return name, fpr, tpr, deployed, graders


def _operating_point(
    said: np.ndarray, truth: np.ndarray, weights: np.ndarray
) -> tuple[float, float]:
    """(1 - specificity, sensitivity), weighted."""
    sens = float((weights * (said & truth)).sum() / (weights * truth).sum())
    fp = float((weights * (said & ~truth)).sum() / (weights * ~truth).sum())
    return fp, sens


def reliability_figure(bins: Sequence[Row]) -> str | None:
    chosen = [
        b for b in bins if b["target"] == "any disease (referral)" and b["analysis"] == WEIGHTED
    ]
    if not chosen:
        return None
    figure, axes = plt.subplots(figsize=(4.2, 4.2))
    x = [float(b["mean_predicted"]) for b in chosen]
    y = [float(b["observed"]) for b in chosen]
    sizes = [int(b["eyes"]) for b in chosen]
    axes.scatter(x, y, s=[10 + 2 * s for s in sizes], color="#1f6feb")
    axes.plot([0, 1], [0, 1], ":", color="grey")
    axes.set(
        xlabel="mean predicted risk",
        ylabel="observed rate",
        title="Reliability: any disease (weighted)",
        xlim=(0, 1),
        ylim=(0, 1),
    )
    return _png(figure)


def decision_figure(curve: Sequence[Row]) -> str | None:
    curve = [r for r in curve if r["analysis"] == WEIGHTED]
    if not curve:
        return None
    figure, axes = plt.subplots(figsize=(5, 3.6))
    t = [float(r["threshold"]) for r in curve]
    for key, label in (
        ("model_risk", "model risk"),
        ("model_referral", "model referral"),
        ("refer_all", "refer all"),
        ("refer_none", "refer none"),
    ):
        axes.plot(t, [float(r[key]) if r[key] != "" else np.nan for r in curve], label=label)
    axes.set(xlabel="threshold probability", ylabel="net benefit", title="Decision curve")
    axes.legend(fontsize=7)
    return _png(figure)


def flow_figure(flow: Sequence[Row], unit: str = "eye") -> str:
    """The STARD flow diagram down to one unit as a tree: the patients (eligible, excluded
    with reasons, received the index test), for eyes the visits' box, then the unit's boxes:
    the index test's results, the reference standard received (how) or not (why), the final
    diagnosis; leaves side by side, each parent centred over its children, arrows along the
    branches."""
    nodes = [
        r
        for r in flow
        if r["unit"] in ("patient", unit)
        or (unit == "eye" and r["unit"] == "visit" and r["node"] == "V")
    ]
    drawn = {r["node"] for r in nodes}
    children: dict[str, list[Row]] = {}
    for row in nodes:
        children.setdefault(row["parent"] if row["parent"] in drawn else "", []).append(row)
    position: dict[str, tuple[float, int]] = {}
    leaves = 0

    def place(row: Row, depth: int) -> float:
        nonlocal leaves
        kids = children.get(row["node"], [])
        if kids:
            x = sum(place(kid, depth + 1) for kid in kids) / len(kids)
        else:
            x, leaves = float(leaves), leaves + 1
        position[row["node"]] = (x, depth)
        return x

    for root in children.get("", []):
        place(root, 0)
    depth = max((d for _, d in position.values()), default=0) + 1
    figure, axes = plt.subplots(figsize=(max(6.0, 1.25 * leaves), 1.15 * depth + 0.4))
    axes.axis("off")
    for row in nodes:
        x, d = position[row["node"]]
        if row["parent"] in drawn:
            px, pd = position[row["parent"]]
            axes.annotate(
                "",
                xy=(x, -d + 0.22),
                xytext=(px, -pd - 0.22),
                arrowprops={"arrowstyle": "->", "color": "grey", "lw": 0.8},
            )
        label = "\n".join(textwrap.wrap(str(row["label"]), 18))
        axes.text(
            x,
            -d,
            f"{label}\nn = {row['count']}",
            ha="center",
            va="center",
            fontsize=6.5,
            bbox={"boxstyle": "round", "facecolor": "#eef3fb", "edgecolor": "#1f6feb"},
        )
    axes.set_xlim(-0.7, max(leaves - 0.3, 0.7))
    axes.set_ylim(-depth + 0.45, 0.5)
    return _png(figure)


def referral_matrix(accuracy: Sequence[Row]) -> str | None:
    row = next(
        (
            r
            for r in accuracy
            if r["reader"] == MODEL and r["level"] == "referral" and r["analysis"] == NAIVE
        ),
        None,
    )
    if row is None:
        return None
    matrix = np.array([[row["tp"], row["fp"]], [row["fn"], row["tn"]]])
    figure, axes = plt.subplots(figsize=(3.6, 3.2))
    axes.imshow(matrix, cmap="Blues")
    for (i, j), value in np.ndenumerate(matrix):
        axes.text(j, i, str(value), ha="center", va="center", fontsize=12)
    axes.set_xticks([0, 1], ["disease", "no disease"])
    axes.set_yticks([0, 1], ["referred", "not referred"])
    axes.set_title("Model referral against the reference (eyes, naive)")
    return _png(figure)
