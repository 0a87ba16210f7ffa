"""Photographs that look like one eye under two patient ids, in a training run's split: how
many the folds group (``train-last-block --group-near-duplicates``), and how many held-out eyes
have a near-duplicate among the photographs trained on (their held-out figures would flatter).

Usage: python scripts/near_duplicates.py --manifest M [--manifest M ...] --out runs/near-dup.json
  [--hold-out 0.15 --seed 0] (the split of ``train-last-block`` with the same arguments)
  [--referrals REFERRALS.csv] (``eyescreen evaluate``'s per-eye referrals of the held-out
  patients: their figures with and without the eyes that have a near-duplicate trained on)

Features: the ImageNet backbone's pooled features of each photograph as it is (the same ones
the folds group by), cached in ``--features``. Prints and writes JSON: counts per source and
source pair, and the file names of the pairs (public data sets' names, no patient data).
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ml.backbones import build_backbone
from ml.data import Sample, held_out_patients, near_duplicate_groups
from ml.feature_store import FeatureStore
from ml.operating_point import referral_figures
from ml.paired_referral import read_referrals
from ml.pipeline import load_samples
from ml.train import TrainConfig
from services.taxonomy.tree import load_taxonomy


def _unit(features: np.ndarray) -> np.ndarray:
    return features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12)


def merged_in_training(samples: list[Sample], features: np.ndarray) -> dict[str, Any]:
    """Groups of several patient ids that the folds keep together, and their sources."""
    patients = [s.patient_id for s in samples]
    ids_of: dict[str, set[str]] = {}
    sources_of: dict[str, set[str]] = {}
    for sample, group in zip(samples, near_duplicate_groups(features, patients), strict=True):
        ids_of.setdefault(group, set()).add(sample.patient_id)
        sources_of.setdefault(group, set()).add(sample.source)
    joined = [g for g, ids in ids_of.items() if len(ids) > 1]
    return {
        "photographs": len(samples),
        "patient_ids": len(set(patients)),
        "fold_groups": len(ids_of),
        "groups_of_several_ids": len(joined),
        "patient_ids_in_them": sum(len(ids_of[g]) for g in joined),
        "by_sources": dict(Counter("+".join(sorted(sources_of[g])) for g in joined)),
    }


def held_out_leaks(
    trained: list[Sample],
    held: list[Sample],
    train_f: np.ndarray,
    held_f: np.ndarray,
    cosine: float,
) -> dict[str, Any]:
    """Held-out eyes whose nearest trained photograph has cosine >= ``cosine``."""
    nearest = np.full(len(held), -1.0)
    which = np.zeros(len(held), dtype=int)
    unit_train = _unit(train_f)
    for start in range(0, len(held), 512):
        sims = _unit(held_f[start : start + 512]) @ unit_train.T
        nearest[start : start + 512] = sims.max(axis=1)
        which[start : start + 512] = sims.argmax(axis=1)
    leaks = np.flatnonzero(nearest >= cosine)
    return {
        "held_out_photographs": len(held),
        "with_a_near_duplicate_trained_on": len(leaks),
        "by_source": dict(Counter(held[i].source for i in leaks)),
        "pairs": [
            {
                "held_out": held[i].path.name,
                "held_out_source": held[i].source,
                "trained_on": trained[which[i]].path.name,
                "trained_on_source": trained[which[i]].source,
                "cosine": round(float(nearest[i]), 4),
            }
            for i in leaks
        ],
        "nearest_cosine_quantiles": {
            q: round(float(np.quantile(nearest, float(q))), 4) for q in ("0.5", "0.9", "0.99")
        },
    }


def referral_without(referrals: Path, leaked: set[str]) -> dict[str, Any]:
    """Referral figures per source and in all, per eye and per patient, of every eye and
    without the ``leaked`` photographs (``eyescreen evaluate``'s referrals file)."""
    read = read_referrals(referrals)
    sources = np.array([key[0] for key in read.keys])
    patients = np.array([key[1] for key in read.keys])
    kept = np.array([key[3] not in leaked for key in read.keys])

    def figures(rows: np.ndarray) -> dict[str, Any]:
        return referral_figures(read.referred[rows], read.diseased[rows], list(patients[rows]))

    result = {}
    for source in ["all", *sorted(set(sources))]:
        mine = np.ones(len(sources), bool) if source == "all" else sources == source
        if (mine & ~kept).any():
            result[source] = {
                "every_eye": figures(mine),
                f"without_{int((mine & ~kept).sum())}_eyes_seen_in_training": figures(mine & kept),
            }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--manifest", action="append", type=Path, required=True)
    parser.add_argument("--hold-out", type=float, default=0.15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backbone", default="efficientnet_lite2")
    parser.add_argument("--image-size", type=int, default=320)
    parser.add_argument("--cosine", type=float, default=0.98)
    parser.add_argument("--features", type=Path, default=Path("var/pooled"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--referrals", type=Path, default=None)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    taxonomy = load_taxonomy("fundus")
    samples = load_samples(args.manifest, None, taxonomy, None)
    trained, held = held_out_patients(samples, args.hold_out, args.seed)
    config = TrainConfig(backbone=args.backbone, image_size=args.image_size, device="cpu")
    net = build_backbone(args.backbone, "imagenet")
    store = FeatureStore(args.features, net, config.preprocessing(net, taxonomy.name), False)
    train_f = store.features([s.path for s in trained], torch.device("cpu"))[0]
    held_f = store.features([s.path for s in held], torch.device("cpu"))[0]
    result = {
        "manifests": [str(m) for m in args.manifest],
        "hold_out": args.hold_out,
        "seed": args.seed,
        "cosine": args.cosine,
        "training_set": merged_in_training(trained, train_f),
        "held_out": held_out_leaks(trained, held, train_f, held_f, args.cosine),
    }
    if args.referrals:
        leaked = {pair["held_out"] for pair in result["held_out"]["pairs"]}
        result["referral"] = referral_without(args.referrals, leaked)
    text = json.dumps(result, indent=2)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
