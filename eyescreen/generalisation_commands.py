"""``eyescreen cross-validate-sources``: the referral per source and with each source held out.

The backbone runs once per photograph (``ml.feature_store``); heads, calibration and the
operating point are refitted per fold on the stored features.
"""

from __future__ import annotations

import json
from pathlib import Path

import click


@click.command("cross-validate-sources")
@click.option(
    "--manifest",
    "manifests",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    multiple=True,
    help="manifest CSV (repeat for each collection; each needs a 'source' column)",
)
@click.option("--label-map", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--taxonomy", "taxonomy_name", default="fundus")
@click.option("--backbone", default="efficientnet_lite2")
@click.option("--image-size", type=int, default=320)
@click.option("--flips/--no-flips", default=False, help="features of the mirror image too")
@click.option(
    "--features",
    "features_dir",
    type=click.Path(path_type=Path),
    default=Path("var/features"),
    help="per-photograph feature store (shared by every run)",
)
@click.option("--folds", type=int, default=5)
@click.option("--head-epochs", type=int, default=60)
@click.option("--target-sensitivity", type=float, default=0.95)
@click.option("--min-positive", type=int, default=30)
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
@click.option("--seed", type=int, default=0)
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
    seed: int,
    threads: int,
    out: Path,
) -> None:
    """Pooled nested CV, per source and each source held out; per eye and per patient."""
    import torch

    from eyescreen.logging_setup import configure_logging
    from ml.backbones import build_backbone
    from ml.crossval import assessment
    from ml.feature_store import FeatureStore
    from ml.generalisation import markdown, near_duplicate_groups, source_report
    from ml.pipeline import load_samples
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
    net = build_backbone(backbone, "imagenet")
    store = FeatureStore(features_dir, net, config.preprocessing(net, taxonomy.name), flips)
    if only_stored:
        samples = [s for s in samples if s.path in store]
    if len({s.source for s in samples}) < 2:
        raise click.ClickException("each source held out needs at least two sources")
    features = store.features([s.path for s in samples], torch.device("cpu"))
    patients = [s.patient_id for s in samples]
    groups = near_duplicate_groups(features[0], patients) if group_near_duplicates else None
    not_assessed = frozenset(assessment(samples, taxonomy, min_positive)["not_assessed"])
    if procedure_check:
        from ml.generalisation import procedure_check as check

        result = check(
            samples, taxonomy, config, features, not_assessed, target_sensitivity, folds, groups
        )
        out.mkdir(parents=True, exist_ok=True)
        text = json.dumps(result, indent=2, default=float)
        (out / "procedure_check.json").write_text(text + "\n")
        click.echo(text)
        return
    report = source_report(
        samples,
        taxonomy,
        config,
        features,
        not_assessed,
        target_sensitivity,
        folds,
        groups,
        inner_cv,
    )
    report |= {
        "manifests": [str(m) for m in manifests],
        "backbone": backbone,
        "image_size": image_size,
        "flips": flips,
        "head_epochs": head_epochs,
        "dropped_notes": list(drop_note),
        "not_assessed": sorted(not_assessed),
        "near_duplicates_grouped": group_near_duplicates,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "sources.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    (out / "sources.md").write_text(markdown(report))
    click.echo(markdown(report))
