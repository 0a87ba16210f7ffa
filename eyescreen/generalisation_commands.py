"""``eyescreen cross-validate-sources``: the referral per source and with each source held out.

The backbone runs once per photograph (``ml.feature_store``); heads, calibration and the
operating point are refitted per fold on the stored features.
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


@click.command("cross-validate-sources", context_settings={"show_default": True})
@manifests_option
@label_map_option
@taxonomy_option
@click.option("--backbone", default="efficientnet_lite2", help="frozen ImageNet backbone")
@click.option("--image-size", type=int, default=320, help="input pixels")
@click.option("--flips/--no-flips", default=False, help="features of the mirror image too")
@click.option(
    "--features",
    "features_dir",
    type=click.Path(path_type=Path),
    default=Path("var/features"),
    help="per-photograph feature store (shared by every run)",
)
@click.option("--folds", type=int, default=5, help="patient-grouped folds")
@click.option("--head-epochs", type=int, default=60, help="epochs of the heads per model")
@target_sensitivity_option
@min_positive_option
@click.option(
    "--group-near-duplicates/--no-group-near-duplicates",
    default=True,
    help="keep photographs that look like one eye (feature cosine >= 0.98) in one fold",
)
@click.option(
    "--inner-cv/--no-inner-cv",
    default=True,
    help="thresholds for a held-out source from a CV over the other sources alone",
)
@click.option(
    "--drop-note",
    multiple=True,
    help="leave out rows with this label_note (e.g. normal-from-other-source)",
)
@click.option(
    "--procedure-check",
    is_flag=True,
    help="instead: the nested CV's promise against what the shipped procedure gives new "
    "patients (outer patient folds; k*(k+1) models)",
)
@click.option("--only-stored", is_flag=True, help="use only photographs already in the store")
@click.option(
    "--per-source",
    type=int,
    default=0,
    help="a seeded subsample of whole patients, about this many photographs per source",
)
@click.option(
    "--camera-views",
    type=int,
    default=0,
    help="cache activations below the last block in this many views (as is, mirrored, camera "
    "variations); enables --recipe last-block and frozen-camera-views",
)
@click.option(
    "--recipe",
    "recipes",
    type=click.Choice(["frozen", "frozen-camera-views", "last-block"]),
    multiple=True,
    help="recipes compared on the same folds (default: frozen; repeat to compare)",
)
@click.option("--finetune-epochs", type=int, default=6, help="last-block epochs after the heads")
@click.option("--seed", type=int, default=0, help="folds, subsample and training")
@click.option(
    "--threads", type=int, default=1, help="torch threads (small heads on a shared CPU: 1)"
)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="results folder")
def cross_validate_sources(
    manifests: tuple[Path, ...],
    label_map: Path | None,
    taxonomy_name: str,
    backbone: str,
    image_size: int,
    flips: bool,
    features_dir: Path,
    folds: int,
    head_epochs: int,
    target_sensitivity: float,
    min_positive: int,
    group_near_duplicates: bool,
    inner_cv: bool,
    drop_note: tuple[str, ...],
    procedure_check: bool,
    only_stored: bool,
    per_source: int,
    camera_views: int,
    recipes: tuple[str, ...],
    finetune_epochs: int,
    seed: int,
    threads: int,
    out: Path,
) -> None:
    """Pooled nested CV, per source and each source held out; per eye and per patient."""
    import torch

    from eyescreen.logging_setup import configure_logging
    from ml.backbones import build_backbone
    from ml.crossval import assessment
    from ml.data import near_duplicate_groups, patients_per_source
    from ml.feature_store import ActivationStore, FeatureStore
    from ml.generalisation import (
        HeadsOnFeatures,
        Recipe,
        comparison_markdown,
        markdown,
        source_report,
    )
    from ml.last_block import FineTuning, LastBlockRecipe, imagenet_top
    from ml.pipeline import load_samples
    from ml.report import json_text
    from ml.source_figure import draw_sources
    from ml.train import TrainConfig
    from services.taxonomy.tree import load_taxonomy

    configure_logging("cv")
    torch.set_num_threads(threads)
    taxonomy = load_taxonomy(taxonomy_name)
    samples = [
        s
        for s in load_samples(list(manifests), None, taxonomy, label_map)
        if s.note not in drop_note
    ]
    config = TrainConfig(
        backbone=backbone, image_size=image_size, head_epochs=head_epochs, seed=seed, device="cpu"
    )
    if per_source:
        samples = patients_per_source(samples, per_source, seed)
    net = build_backbone(backbone, "imagenet")
    spec = config.preprocessing(net, taxonomy.name)
    recipes = recipes or ("frozen",)
    if camera_views:
        lower_store = ActivationStore(features_dir, net, spec, camera_views)
        if only_stored:
            samples = [s for s in samples if s.path in lower_store]
        _need_two_sources(samples)
        lower = lower_store.features([s.path for s in samples], torch.device("cpu"))
        tuned = LastBlockRecipe(
            taxonomy, config, lower, imagenet_top(net), FineTuning(epochs=finetune_epochs)
        )
        choices: dict[str, Recipe] = {
            "frozen": tuned.frozen_recipe(2),
            "frozen-camera-views": tuned.frozen_recipe(camera_views),
            "last-block": tuned,
        }
        pooled = tuned.pooled_features()
    else:
        if set(recipes) != {"frozen"}:
            raise click.ClickException(f"{', '.join(recipes)} need --camera-views")
        store = FeatureStore(features_dir, net, spec, flips)
        if only_stored:
            samples = [s for s in samples if s.path in store]
        _need_two_sources(samples)
        features = store.features([s.path for s in samples], torch.device("cpu"))
        choices = {"frozen": HeadsOnFeatures(taxonomy, config, features)}
        pooled = features[0]
    patients = [s.patient_id for s in samples]
    groups = near_duplicate_groups(pooled, patients) if group_near_duplicates else None
    not_assessed = frozenset(assessment(samples, taxonomy, min_positive)["not_assessed"])
    warnings = _small_set_warnings(taxonomy, not_assessed, min_positive)
    for warning in warnings:
        log.warning("%s", warning)
    out.mkdir(parents=True, exist_ok=True)
    if procedure_check:
        from ml.generalisation import procedure_check as check

        result = check(
            samples, taxonomy, choices[recipes[0]], not_assessed, target_sensitivity, folds, groups
        )
        text = json_text(result)
        (out / "procedure_check.json").write_text(text + "\n")
        click.echo(text)
        return
    reports = {}
    for name in recipes:
        log.info("recipe %s", name)
        report = source_report(
            samples,
            taxonomy,
            choices[name],
            not_assessed,
            target_sensitivity,
            folds,
            groups,
            inner_cv,
        )
        report |= {
            "recipe": name,
            "manifests": [str(m) for m in manifests],
            "backbone": backbone,
            "image_size": image_size,
            "flips": flips or bool(camera_views),
            "camera_views": camera_views,
            "finetune_epochs": finetune_epochs if name == "last-block" else 0,
            "photographs_per_source": per_source,
            "head_epochs": head_epochs,
            "dropped_notes": list(drop_note),
            "not_assessed": sorted(not_assessed),
            "near_duplicates_grouped": group_near_duplicates,
            "warnings": warnings,
        }
        folder = out / name if len(recipes) > 1 else out
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "sources.json").write_text(json_text(report) + "\n")
        (folder / "sources.md").write_text(markdown(report))
        click.echo(f"## {name}\n\n{markdown(report)}")
        reports[name] = report
    draw_sources(reports, out / "sources.png")
    if len(reports) > 1:
        (out / "comparison.md").write_text(comparison_markdown(reports))
        click.echo(comparison_markdown(reports))


def _small_set_warnings(
    taxonomy: Any, not_assessed: frozenset[str], min_positive: int
) -> list[str]:
    """A set too small to assess normal fundus refers on diseases alone: say so in the report
    rather than let its specificity pass for the model's."""
    normal = sorted(n.code for n in taxonomy.nodes if n.normal and n.code in not_assessed)
    if not normal:
        return []
    return [
        f"{', '.join(normal)} (normal) has fewer than {min_positive} eyes here and is not "
        "assessed: eyes are referred on the diseases alone, so these figures describe the "
        "sample's size, not the model (use more photographs per source or --min-positive)"
    ]


def _need_two_sources(samples: list[Any]) -> None:
    if len({s.source for s in samples}) < 2:
        raise click.ClickException("each source held out needs at least two sources")
