"""How often a checkpoint's guard calls photographs not assessable, per manifest and source,
read as the service reads them (``ml.predictor.Predictor.read``): e.g. anterior photographs
sent to the fundus model, or fundus photographs of patients it never saw.

Usage: python scripts/guard_rates.py CHECKPOINT MANIFEST[:LIMIT] [MANIFEST[:LIMIT] ...]

A manifest needs a ``file`` column (relative to its folder, or absolute); ``source`` or
``source_repo`` names the source. LIMIT takes a seeded random sample of the rows. Prints JSON.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from ml.predictor import Predictor
from ml.preprocess import load_rgb


def _rows(spec: str) -> tuple[Path, list[tuple[Path, str]]]:
    name, _, limit = spec.partition(":")
    manifest = Path(name)
    with manifest.open(newline="") as handle:
        rows = [
            (manifest.parent / r["file"], r.get("source") or r.get("source_repo") or "")
            for r in csv.DictReader(handle)
        ]
    if limit and int(limit) < len(rows):
        picked = np.random.default_rng(0).choice(len(rows), int(limit), replace=False)
        rows = [rows[i] for i in sorted(picked)]
    return manifest, rows


def fired(predictor: Predictor, rows: list[tuple[Path, str]]) -> dict[str, Any]:
    counts: dict[str, list[int]] = {}
    for start in tqdm(range(0, len(rows), 16), desc="guard", unit="batch"):
        chunk = rows[start : start + 16]
        for (_, source), read in zip(
            chunk, predictor.read([load_rgb(str(p)) for p, _ in chunk]), strict=True
        ):
            tally = counts.setdefault(source, [0, 0])
            tally[0] += int(read.unfamiliar)
            tally[1] += 1
    return {
        source: {"fired": f, "photographs": n, "rate": round(f / n, 4)}
        for source, (f, n) in sorted(counts.items())
    }


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    predictor = Predictor.load(Path(argv[0]), "cpu")
    if predictor.guard is None:
        raise SystemExit(f"{argv[0]}: this checkpoint has no guard (eyescreen model guard)")
    result = {"checkpoint": argv[0], "sha256": predictor.sha256, "manifests": {}}
    for spec in argv[1:]:
        manifest, rows = _rows(spec)
        result["manifests"][str(manifest)] = fired(predictor, rows)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main(sys.argv[1:])
