"""``eyescreen train-last-block``: a servable checkpoint of the last-block recipe.

The layers below the last block run once per photograph and view (``ml.feature_store``,
shared with ``cross-validate-sources``); the folds, the operating point, the final model and
the guard are computed from those activations (``ml.last_block_model``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from eyescreen.cli_common import (
    label_map_option,
    manifests_option,
    min_positive_option,
    target_sensitivity_option,
    taxonomy_option,
)

log = logging.getLogger(__name__)


@click.command("train-last-block", context_settings={"show_default": True})
@manifests_option
@label_map_option
@taxonomy_option
@click.option("--backbone", default="efficientnet_lite2", help="an EfficientNet-Lite")
@click.option("--image-size", type=int, default=320, help="input pixels")
@click.option(
    "--features",
    "features_dir",
    type=click.Path(path_type=Path),
    default=Path("var/features"),
    help="per-photograph activation store (shared by every run)",
)
@click.option(
    "--camera-views",
    type=int,
    default=4,
    help="views cached per photograph (as is, mirrored, camera variations)",
)
@click.option("--folds", type=int, default=5, help="patient-grouped folds for the operating point")
@click.option(
    "--group-near-duplicates/--no-group-near-duplicates",
    default=True,
    help="keep photographs that look like one eye (feature cosine >= 0.98) in one fold, "
    "whatever their patient ids",
)
@click.option("--head-epochs", type=int, default=60, help="epochs of the heads")
@click.option("--finetune-epochs", type=int, default=8, help="last-block epochs after the heads")
@target_sensitivity_option
@click.option(
    "--source-sensitivity-floor",
    type=float,
    default=None,
    help="referral sensitivity every source must reach at the operating point too "
    "(none: the pooled target only)",
)
@min_positive_option
@click.option(
    "--hold-out",
    type=float,
    default=0.0,
    help="a seeded fraction of each source's patients left out of training (0: none)",
)
@click.option(
    "--held-out-manifests",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="with --hold-out: write each manifest's rows of the patients left out to this "
    "folder, for `eyescreen evaluate` on patients the model never saw",
)
@click.option("--seed", type=int, default=0, help="folds, subsample and training")
@click.option("--threads", type=int, default=2, help="torch threads")
@click.option("--version", required=True, help="the model's version, e.g. 1.4")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def train_last_block(
    manifests: tuple[Path, ...],
    label_map: Path | None,
    taxonomy_name: str,
    backbone: str,
    image_size: int,
    features_dir: Path,
    camera_views: int,
    folds: int,
    group_near_duplicates: bool,
    head_epochs: int,
    finetune_epochs: int,
    target_sensitivity: float,
    source_sensitivity_floor: float | None,
    min_positive: int,
    hold_out: float,
    held_out_manifests: Path | None,
    seed: int,
    threads: int,
    version: str,
    out: Path,
) -> None:
    """Train the last-block recipe on the manifests and write a checkpoint with its
    operating point (chosen on out-of-fold predictions) and its guard (thresholds on each
    source held out). Register and activate it with ``eyescreen model``. The out-of-fold
    predictions go beside the checkpoint (``.oof.npz``), for
    ``scripts/operating_point_floors.py``."""
    import torch

    from eyescreen.logging_setup import configure_logging
    from ml.backbones import build_backbone
    from ml.checkpoint import save_checkpoint
    from ml.data import held_out_patients
    from ml.feature_store import ActivationStore
    from ml.last_block import FineTuning
    from ml.last_block_model import train_last_block_model
    from ml.pipeline import load_samples
    from ml.report import json_text
    from ml.train import TrainConfig
    from services.taxonomy.tree import load_taxonomy

    if held_out_manifests and not hold_out:
        raise click.UsageError("--held-out-manifests needs --hold-out")
    if camera_views < 2:
        raise click.UsageError("--camera-views must be at least 2 (as is and mirrored)")
    configure_logging("train")
    torch.set_num_threads(threads)
    taxonomy = load_taxonomy(taxonomy_name)
    samples = load_samples(list(manifests), None, taxonomy, label_map)
    if hold_out:
        samples, left = held_out_patients(samples, hold_out, seed)
        log.info("%d photographs trained on, %d of new patients held out", len(samples), len(left))
    config = TrainConfig(
        backbone=backbone, image_size=image_size, head_epochs=head_epochs, seed=seed, device="cpu"
    )
    net = build_backbone(backbone, "imagenet")
    spec = config.preprocessing(net, taxonomy.name)
    store = ActivationStore(features_dir, net, spec, camera_views)
    lower = store.features([s.path for s in samples], torch.device("cpu"))
    meta, model = train_last_block_model(
        samples,
        taxonomy,
        config,
        FineTuning(epochs=finetune_epochs),
        net,
        spec,
        lower,
        version=version,
        folds=folds,
        target=target_sensitivity,
        min_positive=min_positive,
        floor=source_sensitivity_floor,
        oof_out=out.with_suffix(".oof.npz"),
        group_near_duplicates=group_near_duplicates,
    )
    sha = save_checkpoint(out, meta, model)
    if held_out_manifests:
        _write_held_out(held_out_manifests, manifests, samples)
    cv = meta["metrics"]["cross_validation"]
    click.echo(json_text(_summary(cv, meta)))
    click.echo(f"{out}: sha256 {sha}")


def _summary(cv: dict[str, Any], meta: dict[str, Any]) -> dict[str, Any]:
    """What the run promises new patients (nested figures), per eye, patient and source."""
    point = cv["operating_point"]
    return {
        "photographs": cv["samples"],
        "patients": cv["patients"],
        "fold_groups": cv.get("fold_groups"),
        "not_assessed": cv["assessment"]["not_assessed"],
        "source_sensitivity_floor": point.get("source_sensitivity_floor"),
        "nested_referral": point["cross_validated"],
        "nested_referral_by_source": point["cross_validated_by_source"],
        "nested_referral_with_the_sources_own_operating_point": cv["site_operating_points"],
        "guard_fired_on_held_out_sources": meta["guard"]["fired_on_held_out_sources"],
    } | {k: v for k, v in point.items() if k.endswith("without_the_floor")}


def _write_held_out(folder: Path, manifests: tuple[Path, ...], chosen: list[Any]) -> None:
    """Each manifest's rows of the patients not trained on, in its own columns, with the
    image paths made absolute, so that ``eyescreen evaluate`` measures patients the model
    never saw."""
    import csv

    taken = {(s.source, s.patient_id) for s in chosen}
    folder.mkdir(parents=True, exist_ok=True)
    for number, manifest in enumerate(manifests, start=1):
        with manifest.open(newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = [
                r for r in reader if (_value(r, "source"), _value(r, "patient_id")) not in taken
            ]
        target = folder / f"{number}-{manifest.parent.name}.csv"
        with target.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, header)
            writer.writeheader()
            for row in rows:
                writer.writerow(row | {"file": str((manifest.parent / row["file"]).resolve())})
        click.echo(f"{target}: {len(rows)} rows of patients held out", err=True)


def _value(row: dict[str, str], column: str) -> str:
    """A manifest column under any of its names (``ml.data.COLUMN_ALIASES``)."""
    from ml.data import COLUMN_ALIASES

    return next(((row.get(a) or "").strip() for a in COLUMN_ALIASES[column] if a in row), "")
