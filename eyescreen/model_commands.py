"""``eyescreen model …``: the registry of checkpoints and which one reads each route and site."""

from __future__ import annotations

import getpass
from pathlib import Path

import click
from sqlalchemy import select

from eyescreen.cli_common import settings_or_exit
from services.db.models import AuditEvent, ModelActivation, ModelVersion
from services.db.session import make_engine, make_session_factory, transaction
from services.screening import registry


@click.group("model")
def model_group() -> None:
    """Register checkpoints, activate one per route and site, roll back."""


@model_group.command("list")
def list_models() -> None:
    """Registered models, newest first, with where each is active."""
    settings = settings_or_exit()
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with sessions() as session:
        active: dict[int, list[str]] = {}
        for route in ("fundus", "anterior"):
            sites = session.scalars(
                select(ModelActivation.site).where(ModelActivation.route == route).distinct()
            )
            for site in sites:
                model = registry.active(session, route, site)
                if model is not None:
                    active.setdefault(model.id, []).append(site or "all sites")
        for model in session.scalars(select(ModelVersion).order_by(ModelVersion.id.desc())):
            where = ", ".join(active.get(model.id, [])) or "-"
            click.echo(
                f"{model.weights_sha256[:12]}  {model.route:<9} {model.name} {model.version:<12} "
                f"active: {where}"
            )


@model_group.command("register")
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def register_model(checkpoint: Path) -> None:
    """Check that CHECKPOINT loads, copy it in under its sha256 and record it."""
    from ml.checkpoint import load_checkpoint
    from services.kernel.storage import file_sha256

    settings = settings_or_exit()
    try:
        meta, _ = load_checkpoint(checkpoint)
    except Exception as exc:  # torch and our format checks raise many types
        raise click.ClickException(f"{checkpoint} does not load: {exc}") from None
    if len(str(meta["name"])) > 64 or len(str(meta["version"])) > 32:
        raise click.ClickException(
            f"{checkpoint}: name (at most 64 characters) or version (at most 32) is too long"
        )
    facts = registry.CheckpointFacts(
        name=str(meta["name"]),
        version=str(meta["version"]),
        route=str(meta["route"]),
        taxonomy_version=f"{meta['taxonomy']['name']}/{meta['taxonomy']['version']}",
        sha256=file_sha256(checkpoint),
    )
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with transaction(sessions) as session:
        model = registry.register(session, checkpoint, facts, settings.data_path / "models")
        session.add(
            AuditEvent(
                action="model.register",
                detail={"sha256": facts.sha256, "by": getpass.getuser()},
            )
        )
        click.echo(
            f"registered {model.route} model {model.name} {model.version} {facts.sha256[:12]}"
        )


@model_group.command("guard", context_settings={"show_default": True})
@click.argument("checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--manifest",
    "manifests",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    multiple=True,
    help="the photographs the model was trained on (each row's source counts)",
)
@click.option(
    "--label-map",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="JSON mapping the manifests' label words to taxonomy codes (default: the shipped one)",
)
@click.option(
    "--features",
    type=click.Path(path_type=Path),
    default=Path("var/features"),
    help="feature store: the backbone runs once per photograph, later runs re-use it",
)
@click.option(
    "--quantile",
    type=float,
    default=0.99,
    help="threshold: this quantile of the distances of each training source's photographs "
    "scored with that source left out of the reference",
)
@click.option(
    "--neighbours", type=int, default=5, help="distance: mean cosine distance to this many"
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True)
def guard_model(
    checkpoint: Path,
    manifests: tuple[Path, ...],
    label_map: Path | None,
    features: Path,
    quantile: float,
    neighbours: int,
    out: Path,
) -> None:
    """Write CHECKPOINT with a guard against the unfamiliar to --out: photographs farther
    from the training photographs than the threshold (chosen on each source held out) are
    "not assessable by this model" and referred. A new file, so a new sha256 to register."""
    import json

    from ml.checkpoint import load_checkpoint, save_checkpoint
    from ml.guard import fit_for_checkpoint
    from ml.pipeline import load_samples
    from services.taxonomy.tree import parse_taxonomy

    meta, model = load_checkpoint(checkpoint)
    taxonomy = parse_taxonomy(meta["taxonomy"])
    samples = load_samples(list(manifests), None, taxonomy, label_map)
    meta["guard"] = fit_for_checkpoint(checkpoint, samples, features, quantile, neighbours)
    sha = save_checkpoint(out, meta, model)
    facts = {k: v for k, v in meta["guard"].items() if k != "reference"}
    click.echo(json.dumps(facts, indent=2))
    click.echo(f"{out}: sha256 {sha}")


@model_group.command("activate")
@click.argument("sha256_prefix")
@click.option("--site", default="", help="only at this site (default: every site)")
def activate_model(sha256_prefix: str, site: str) -> None:
    """Make a registered model read its route from now on (workers pick it up without restart)."""
    from services.kernel.errors import ModelNotFound

    settings = settings_or_exit()
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with transaction(sessions) as session:
        try:
            model = registry.find(session, sha256_prefix)
        except ModelNotFound as exc:
            raise click.ClickException(str(exc)) from None
        user = getpass.getuser()
        registry.activate(session, model, site, user)
        session.add(
            AuditEvent(
                action="model.activate",
                detail={"sha256": model.weights_sha256, "site": site, "by": user},
            )
        )
        click.echo(
            f"{model.route} at {site or 'every site'}: {model.name} {model.version} "
            f"{model.weights_sha256[:12]}"
        )


@model_group.command("recalibrate", context_settings={"show_default": True})
@click.option("--site", required=True, help="the site whose verified reads refit the model")
@click.option(
    "--route",
    type=click.Choice(["fundus", "anterior"]),
    default="fundus",
    help="which active model to refit",
)
@click.option(
    "--with-concordant",
    is_flag=True,
    help="also the accepted concordant reads (every case once, weight 1); default: panel "
    "decisions only, each weighted by 1 / the probability that the triage sent its case to "
    "the panel, so that the sample stands for every case seen",
)
@click.option("--target-sensitivity", type=float, default=0.95, help="referral sensitivity per eye")
@click.option("--min-eyes", type=int, default=50, help="refuse with fewer verified eyes")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    help="the recalibrated checkpoint (a new file; registered, not activated)",
)
def recalibrate_model(
    site: str,
    route: str,
    with_concordant: bool,
    target_sensitivity: float,
    min_eyes: int,
    out: Path,
) -> None:
    """Refit the site's per-class temperatures and referral operating point on its verified
    reads; write and register the result beside the active model (not activated: a person
    activates it with `eyescreen model activate SHA --site S` after reading the figures)."""

    import numpy as np

    from ml.checkpoint import load_checkpoint, save_checkpoint
    from ml.recalibrate import recalibrate, recalibrated_meta
    from ml.report import json_text
    from services.kernel.storage import file_sha256
    from services.screening.decision import OperatingPoint
    from services.study.records import (
        VERIFIED,
        Filters,
        ReferenceRoute,
        gather,
        reference_labels,
        study_key,
    )
    from services.taxonomy.tree import parse_taxonomy

    settings = settings_or_exit()
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with sessions() as session:
        model = registry.active(session, route, site)
        if model is None:
            raise click.ClickException(f"no registered {route} model is active at {site!r}")
        key = study_key(settings.study_key_file or settings.data_path / "study.key")
        filters = Filters(sites=(site,), routes=(route,), model_versions=(model.version,))
        records = gather(session, filters, key)
        base_path = Path(model.path)
    accepted = set(VERIFIED) | ({ReferenceRoute.CONCORDANT} if with_concordant else set())
    kept = [
        r
        for r in records
        if r.model_gradable and r.reference is not None and r.reference_route in accepted
    ]
    if len(kept) < min_eyes:
        raise click.ClickException(
            f"{len(kept)} verified eyes at {site!r} for this model (at least {min_eyes} needed)"
        )
    meta, net = load_checkpoint(base_path)
    taxonomy = parse_taxonomy(meta["taxonomy"])
    probs = np.array([[r.probabilities.get(c, 0.0) for c in taxonomy.codes] for r in kept])
    positive = [reference_labels(r.reference or (), taxonomy) for r in kept]
    labels = np.array([[c in p for c in taxonomy.codes] for p in positive], dtype=float)
    weights = np.array(
        [1.0 if with_concordant else 1.0 / max(r.inclusion_probability or 1.0, 1e-3) for r in kept]
    )
    result = recalibrate(
        taxonomy, probs, labels, weights, [r.patient_key for r in kept],
        OperatingPoint.from_meta(meta), target_sensitivity,
    )  # fmt: skip
    sha = save_checkpoint(out, recalibrated_meta(meta, result, site), net)
    facts = registry.CheckpointFacts(
        name=str(meta["name"]),
        version=f"{meta['version']}+{site}"[:32],
        route=route,
        taxonomy_version=f"{meta['taxonomy']['name']}/{meta['taxonomy']['version']}",
        sha256=file_sha256(out),
    )
    with transaction(sessions) as session:
        registry.register(session, out, facts, settings.data_path / "models")
        session.add(
            AuditEvent(
                action="model.recalibrate",
                detail={"sha256": sha, "base": model.weights_sha256, "site": site,
                        "eyes": len(kept), "by": getpass.getuser()},
            )
        )  # fmt: skip
    figures = {k: result[k] for k in ("eyes", "weighted_eyes", "active", "recalibrated_nested")}
    click.echo(json_text(figures))
    click.echo(
        f"registered {sha[:12]} (not active); activate: eyescreen model activate "
        f"{sha[:12]} --site {site}"
    )
