"""What a per-source sensitivity floor costs: nested referral figures of a run's saved
out-of-fold predictions (``eyescreen train-last-block --oof-out``) at the pooled target alone
and with each floor given, per eye and patient, pooled and per source, Wilson 95 %.

Usage: python scripts/operating_point_floors.py OOF.npz [--target 0.95] [--floor 0.9 ...]
       [--apply-to CHECKPOINT --version V --out NEW.pt]

Prints JSON, then a Markdown table (the model card's form) on stderr. With ``--apply-to``, the
checkpoint of the same run gets the operating point of the last ``--floor`` (none given: the
pooled target alone) as a new file, its weights untouched: a site can take another operating
point of a model without training it again (register and activate it with ``eyescreen model``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from ml.crossval import point_from_predictions
from ml.oof_file import load_out_of_fold
from services.taxonomy.tree import load_taxonomy


def figures(path: Path, taxonomy_name: str, target: float, floors: list[float]) -> dict[str, Any]:
    taxonomy = load_taxonomy(taxonomy_name)
    oof = load_out_of_fold(path, taxonomy)
    out: dict[str, Any] = {"eyes": len(oof.patients), "patients": len(set(oof.patients))}
    for floor in [None, *floors]:
        point = point_from_predictions(
            taxonomy,
            oof.labels,
            oof.raw,
            oof.folds,
            oof.patients,
            oof.sources,
            oof.not_assessed,
            target,
            floor,
        )
        out["pooled target only" if floor is None else f"floor {floor:.2f}"] = {
            "pooled": point["cross_validated"],
            "by_source": point["cross_validated_by_source"],
            "thresholds": point["thresholds"],
        }
        out["_last_point"] = point
    return out


def apply_point(checkpoint: Path, point: dict[str, Any], version: str, out: Path) -> str:
    """A copy of ``checkpoint`` deciding with ``point``; refused unless the out-of-fold file
    is the checkpoint's own run (its temperatures are the ones the point was chosen with)."""
    import numpy as np

    from ml.checkpoint import load_checkpoint, save_checkpoint

    meta, model = load_checkpoint(checkpoint)
    shipped = meta["calibration"]["temperatures"]
    fitted = point["temperatures"]
    if shipped.keys() != fitted.keys() or not np.allclose(
        [shipped[c] for c in fitted], list(fitted.values()), rtol=1e-4
    ):
        raise SystemExit(f"{checkpoint}: its temperatures are not this out-of-fold file's run")
    meta["version"] = version
    meta["thresholds"] = point["thresholds"]
    meta["operating_point"] = {
        key: point[key]
        for key in ("target_sensitivity", "scale", "cross_validated", "source_sensitivity_floor")
    }
    return save_checkpoint(out, meta, model)


def _cell(block: dict[str, Any], measure: str) -> str:
    value = block[measure]
    if not value["n"]:
        return "–"
    return f"{value['estimate']:.3f} ({value['low']:.3f}–{value['high']:.3f})"


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| operating point | unit | sensitivity | specificity |",
        "| --- | --- | --- | --- |",
    ]
    for name, block in result.items():
        if not isinstance(block, dict):
            continue
        for unit in ("eye", "patient"):
            pooled = block["pooled"][unit]
            lines.append(
                f"| {name} | {unit}, pooled | {_cell(pooled, 'sensitivity')} | "
                f"{_cell(pooled, 'specificity')} |"
            )
        for source, figs in block["by_source"].items():
            lines.append(
                f"| {name} | eye, {source} | {_cell(figs, 'sensitivity')} | "
                f"{_cell(figs, 'specificity')} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("oof", type=Path, help="out-of-fold file of a training run")
    parser.add_argument("--taxonomy", default="fundus")
    parser.add_argument("--target", type=float, default=0.95, help="pooled sensitivity per eye")
    parser.add_argument("--floor", type=float, action="append", default=[], help="per source")
    parser.add_argument("--apply-to", type=Path, help="the run's checkpoint")
    parser.add_argument("--version", help="with --apply-to: the new file's model version")
    parser.add_argument("--out", type=Path, help="with --apply-to: the new checkpoint")
    args = parser.parse_args()
    if args.apply_to and not (args.version and args.out):
        parser.error("--apply-to needs --version and --out")
    result = figures(args.oof, args.taxonomy, args.target, args.floor)
    last = result.pop("_last_point")
    if args.apply_to:
        sha = apply_point(args.apply_to, last, args.version, args.out)
        print(f"{args.out}: sha256 {sha}", file=sys.stderr)
    print(json.dumps(result, indent=2))
    print(markdown(result), file=sys.stderr)


if __name__ == "__main__":
    main()
