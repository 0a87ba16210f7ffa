"""``eyescreen drift …``: build a model's reference from its validation photographs, and check
every camera against it (exit status 3 when a camera has drifted: cron and monitoring alert)."""

from __future__ import annotations

import random
import sys
from pathlib import Path

import click

from eyescreen.cli_common import settings_or_exit

DRIFTED_EXIT = 3


def _runtime(settings):  # type: ignore[no-untyped-def]
    """A worker runtime on a migrated database (the registry says which model is active)."""
    from eyescreen.database import upgrade
    from worker.runtime import WorkerRuntime

    settings.ensure_dirs()
    upgrade(settings.effective_database_url)
    return WorkerRuntime(settings, publish=lambda name, args: None)


def reference_path(checkpoint: Path) -> Path:
    return checkpoint.with_suffix(".reference.json")


@click.group("drift")
def drift_group() -> None:
    """Watch cameras and sites for input drift against the model's validation data."""


@drift_group.command("reference")
@click.option("--route", type=click.Choice(["fundus", "anterior"]), default="fundus")
@click.option("--manifest", type=click.Path(exists=True, path_type=Path), required=True)
@click.option(
    "--images", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True
)
@click.option("--limit", type=int, default=300, help="photographs sampled (seeded)")
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), default=None)
def build_reference(
    route: str, manifest: Path, images: Path, limit: int, output: Path | None
) -> None:
    """Run the active model on validation photographs and keep their feature deciles."""
    import numpy as np
    from PIL import Image
    from tqdm import tqdm

    from ml.data import read_manifest
    from services.screening.drift import Reference, features
    from services.screening.quality import image_statistics

    runtime = _runtime(settings_or_exit())
    model = runtime.predictor(route)
    samples = read_manifest(manifest, images, model.taxonomy)
    random.Random(0).shuffle(samples)
    top = model.taxonomy.level_codes(1)
    rows = []
    for sample in tqdm(samples[:limit], desc="reference", unit="photo"):
        with Image.open(sample.path) as picture:
            rgb = np.asarray(picture.convert("RGB"))
        [probabilities] = model.predict([rgb])
        rows.append(features(probabilities, image_statistics(rgb), top))
    reference = Reference.from_samples(model.sha256, route, rows)
    target = output or reference_path(model.predictor.path)
    reference.save(target)
    click.echo(f"{target}: reference of {reference.count} photographs for {model.sha256[:12]}")


@drift_group.command("check")
@click.option("--route", type=click.Choice(["fundus", "anterior"]), default="fundus")
@click.option("--window", type=int, default=200, help="latest predictions per camera")
@click.option("--min-count", type=int, default=50, help="cameras with fewer are not judged")
@click.option("--threshold", type=float, default=0.25, help="PSI above this is drift")
def check_drift(route: str, window: int, min_count: int, threshold: float) -> None:
    """PSI per camera and feature; exit status 3 if any camera has drifted."""
    import logging

    from services.screening import drift

    runtime = _runtime(settings_or_exit())
    checkpoint = runtime.checkpoint_for(route)
    path = reference_path(checkpoint)
    if not path.exists():
        raise click.ClickException(
            f"no drift reference for {checkpoint.name}; make one with 'eyescreen drift reference'"
        )
    reference = drift.Reference.load(path)
    with runtime.sessions() as session:
        rows = drift.check(session, reference, window, min_count, threshold)
    if not rows:
        click.echo(f"no camera has {min_count} recent {route} predictions by this model yet")
    drifted = False
    for row in rows:
        worst = max(row.scores.items(), key=lambda item: item[1])
        state = "DRIFT " + ", ".join(row.drifted) if row.drifted else "ok"
        click.echo(
            f"{row.camera:<16} {row.route:<9} n={row.count:<4} worst PSI {worst[1]:.3f} "
            f"({worst[0]})  {state}"
        )
        if row.drifted:
            drifted = True
            logging.getLogger("eyescreen.drift").error(
                "camera %s (%s) drifted on %s", row.camera, row.route, ", ".join(row.drifted)
            )
    sys.exit(DRIFTED_EXIT if drifted else 0)
