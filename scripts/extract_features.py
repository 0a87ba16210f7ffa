"""Fill the per-photograph feature store for a backbone over the photographs of manifests.

Usage: python scripts/extract_features.py STORE_DIR BACKBONE SIZE CROP(0/1) FLIPS(0/1)
       MANIFEST[:LIMIT] ...

LIMIT takes a seeded sample of that many rows (for guard checks on another modality). The
photographs of all manifests are computed in one seeded random order, so that a run stopped
early leaves a random subsample of every source, not the first source whole."""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
import torch

from ml.backbones import build_backbone
from ml.feature_store import FeatureStore
from ml.preprocess import Preprocessing


def manifest_paths(spec: str) -> list[Path]:
    name, _, limit = spec.partition(":")
    path = Path(name)
    with path.open(newline="") as handle:
        files = [path.parent / row["file"] for row in csv.DictReader(handle)]
    if limit:
        pick = np.random.default_rng(0).permutation(len(files))[: int(limit)]
        files = [files[i] for i in sorted(pick)]
    return files


def main(argv: list[str]) -> None:
    store_dir, name, size, crop, flips, *manifests = argv
    torch.set_num_threads(2)
    backbone = build_backbone(name, "imagenet")
    spec = Preprocessing(size=int(size), crop_dark_border=crop == "1")
    store = FeatureStore(Path(store_dir), backbone, spec, flips=flips == "1")
    paths = [p for manifest in manifests for p in manifest_paths(manifest)]
    order = np.random.default_rng(1).permutation(len(paths))
    paths = [paths[i] for i in order]
    print(len(paths), "photographs,", len(store.missing(paths)), "to compute")
    store.compute(paths, torch.device("cpu"))


if __name__ == "__main__":
    main(sys.argv[1:])
