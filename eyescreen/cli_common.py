"""What ``eyescreen`` commands share: reading the settings with readable errors, and the options
that name a training set (manifests of several sources, a label map, a taxonomy)."""

from __future__ import annotations

from pathlib import Path

import click
from pydantic import ValidationError

from services.kernel.settings import Settings, load_settings


def settings_or_exit() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        lines = [
            f"  EYESCREEN_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        ]
        raise click.ClickException("invalid settings:\n" + "\n".join(lines)) from None


# Options reused by the commands that read manifests of several sources.
manifests_option = click.option(
    "--manifest",
    "manifests",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    multiple=True,
    help="manifest CSV (repeat for each collection; each needs a 'source' column)",
)
label_map_option = click.option(
    "--label-map",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="JSON mapping label words to taxonomy codes (default: the shipped one)",
)
taxonomy_option = click.option(
    "--taxonomy", "taxonomy_name", default="fundus", help="fundus or anterior"
)
target_sensitivity_option = click.option(
    "--target-sensitivity", type=float, default=0.95, help="referral sensitivity per eye"
)
min_positive_option = click.option(
    "--min-positive",
    type=int,
    default=30,
    help="classes with fewer positive eyes are not assessed (no threshold, no referral)",
)
