"""Two models' referrals of the same eyes, compared as paired data.

Two evaluations on the same photographs are not independent samples: the question "does the
new model refer more diseased eyes than the old one" is answered by the eyes on which they
disagree (exact McNemar), with Newcombe's paired interval for the difference. Sensitivity is
compared on the diseased, specificity on the healthy; per eye (eyes of one patient counted as
independent, and labelled so) and per patient (referred if any eye is), pooled and per source.

``eyescreen evaluate`` writes each eye's referral to ``referrals.csv``; ``--paired-with`` reads
an earlier evaluation's file and adds this comparison.
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ml.data import Sample
from ml.operating_point import any_eye_per_patient
from services.statistics.paired import mcnemar_exact, newcombe_paired

FIELDS = ("source", "patient_id", "eye", "photograph", "diseased", "referred", "not_assessable")


@dataclass(frozen=True)
class Referrals:
    """Per eye, in one order: where it came from and what was decided."""

    keys: list[tuple[str, str, str, str]]  # source, patient, eye, photograph file name
    diseased: np.ndarray
    referred: np.ndarray


def write_referrals(
    path: Path,
    samples: Sequence[Sample],
    diseased: np.ndarray,
    referred: np.ndarray,
    unfamiliar: np.ndarray,
) -> None:
    """One row per photograph: the file's name only (no folder of this machine)."""
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(FIELDS)
        for sample, sick, sent, odd in zip(samples, diseased, referred, unfamiliar, strict=True):
            where = (sample.source, sample.patient_id, eye_label(sample), sample.path.name)
            writer.writerow([*where, int(sick), int(sent), int(odd)])


def eye_label(sample: Sample) -> str:
    """The eye as the manifest named it; blank where it named none (the sample then carries
    its file as the eye, which may be a folder of this machine)."""
    return "" if Path(sample.eye).name == sample.path.name else sample.eye


def read_referrals(path: Path) -> Referrals:
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    if not rows or set(FIELDS) - set(rows[0]):
        raise ValueError(f"{path}: not a referrals file (columns {', '.join(FIELDS)})")
    return Referrals(
        keys=[(r["source"], r["patient_id"], r["eye"], r["photograph"]) for r in rows],
        diseased=np.array([r["diseased"] == "1" for r in rows]),
        referred=np.array([r["referred"] == "1" for r in rows]),
    )


def aligned(this: Referrals, other: Referrals) -> tuple[Referrals, np.ndarray]:
    """``other``'s referrals in ``this``'s order; both must cover the same photographs."""
    index = {key: i for i, key in enumerate(other.keys)}
    missing = [k for k in this.keys if k not in index]
    if missing or len(index) != len(this.keys):
        raise ValueError(
            f"the two evaluations are not of the same photographs ({len(this.keys)} and "
            f"{len(other.keys)}; {len(missing)} of the first not in the second)"
        )
    order = np.array([index[k] for k in this.keys])
    if not np.array_equal(other.diseased[order], this.diseased):
        raise ValueError("the two evaluations label the same photographs differently")
    return this, other.referred[order]


def _one(success_this: np.ndarray, success_other: np.ndarray) -> dict[str, Any]:
    both = int(np.sum(success_this & success_other))
    only_this = int(np.sum(success_this & ~success_other))
    only_other = int(np.sum(~success_this & success_other))
    neither = int(np.sum(~success_this & ~success_other))
    n = both + only_this + only_other + neither
    difference = newcombe_paired(both, only_this, only_other, neither)
    return {
        "n": n,
        "this": (both + only_this) / n if n else None,
        "other": (both + only_other) / n if n else None,
        "difference": difference.estimate if n else None,
        "low": difference.low if n else None,
        "high": difference.high if n else None,
        "only_this": only_this,
        "only_other": only_other,
        "mcnemar_exact_p": mcnemar_exact(both, only_this, only_other, neither),
    }


def _unit(diseased: np.ndarray, this: np.ndarray, other: np.ndarray) -> dict[str, Any]:
    return {
        "sensitivity": _one(this[diseased], other[diseased]),
        "specificity": _one(~this[~diseased], ~other[~diseased]),
    }


def compare(this: Referrals, other: Referrals) -> dict[str, Any]:
    """This evaluation's referral against another's on the same photographs."""
    this, other_referred = aligned(this, other)
    patients = [f"{k[0]}\x1f{k[1]}" for k in this.keys]  # a patient id is unique per source
    sources = np.array([k[0] for k in this.keys])

    def block(rows: np.ndarray) -> dict[str, Any]:
        eyes = (this.diseased[rows], this.referred[rows], other_referred[rows])
        chosen = [p for p, r in zip(patients, rows, strict=True) if r]
        return {
            "eye (eyes as independent)": _unit(*eyes),
            "patient": _unit(*any_eye_per_patient(chosen, *eyes)),
        }

    everything = np.ones(len(this.keys), dtype=bool)
    return {
        "pooled": block(everything),
        "by_source": {str(s): block(sources == s) for s in np.unique(sources)},
    }


def _cell(figure: dict[str, Any]) -> str:
    if not figure["n"]:
        return "–"
    return (
        f"{figure['this']:.3f} vs {figure['other']:.3f}: {figure['difference']:+.3f} "
        f"({figure['low']:+.3f} to {figure['high']:+.3f}); {figure['only_this']} vs "
        f"{figure['only_other']} discordant, McNemar p {figure['mcnemar_exact_p']:.3g}"
    )


def markdown(comparison: dict[str, Any], this: str, other: str) -> str:
    lines = [
        f"## Paired with {other}",
        "",
        f"The same photographs referred by {this} (first) and {other} (second): the difference "
        "with Newcombe's paired 95 % interval, the discordant eyes or patients (referred "
        "correctly by only the first, only the second) and the exact McNemar test.",
        "",
        "| source | unit | sensitivity | specificity |",
        "| --- | --- | --- | --- |",
    ]
    blocks = {"all": comparison["pooled"], **comparison["by_source"]}
    for source, block in blocks.items():
        for unit, figures in block.items():
            lines.append(
                f"| {source} | {unit} | {_cell(figures['sensitivity'])} | "
                f"{_cell(figures['specificity'])} |"
            )
    return "\n".join(lines) + "\n"
