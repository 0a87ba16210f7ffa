"""``eyescreen``: run the service, send images, inspect state, manage the database and models."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from eyescreen.backup_commands import backup_group
from eyescreen.cli_common import settings_or_exit as _settings
from eyescreen.drift_commands import drift_group
from eyescreen.generalisation_commands import cross_validate_sources
from eyescreen.last_block_commands import train_last_block
from eyescreen.model_commands import model_group
from eyescreen.report_commands import reports_group
from eyescreen.stats_commands import stats_group
from eyescreen.web_commands import users_group, web_command
from eyescreen.workflow_commands import failsafe_group, worklist_group
from services.kernel.settings import DicomNode, Settings


class _Eyescreen(click.Group):
    """Every command: a database without this version's tables gets a sentence that says what
    to run, not a driver's traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        from sqlalchemy.exc import DBAPIError

        try:
            return super().invoke(ctx)
        except DBAPIError as error:
            if not _schema_missing(error):
                raise
            raise click.ClickException(
                "the database has no tables for this version (or none at all): run "
                "`eyescreen db upgrade` first (`eyescreen up` does it when it starts)"
            ) from None


def _schema_missing(error: Exception) -> bool:
    text = str(getattr(error, "orig", error)).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


@click.group(cls=_Eyescreen)
def main() -> None:
    """Hierarchical eye-disease screening of slit-lamp and fundus photographs, on DICOM."""


@main.command()
@click.option("--workers", type=int, default=None, help="worker processes (default: settings)")
def up(workers: int | None) -> None:
    """Migrate the database, then run gateway, worker(s) and web application until Ctrl-C."""
    from eyescreen.database import upgrade
    from eyescreen.logging_setup import configure_logging
    from eyescreen.supervisor import Supervisor

    configure_logging("up")
    settings = _settings()
    settings.ensure_dirs()
    upgrade(settings.effective_database_url)
    sys.exit(Supervisor(settings, workers or settings.effective_worker_concurrency).run())


@main.command()
def gateway() -> None:
    """Run the DICOM gateway (Storage SCP) and the outbox sweeper."""
    from eyescreen.logging_setup import configure_logging
    from eyescreen.processes import run_gateway

    configure_logging("gateway")
    run_gateway(_settings())


@main.command()
@click.option("--concurrency", type=int, default=None)
@click.option(
    "--queues",
    default=None,
    help="comma-separated, in the order they are read (default: worker.queues.CONSUME_ORDER)",
)
@click.option("--beat", is_flag=True, help="also run Celery beat (periodic housekeeping)")
def worker(concurrency: int | None, queues: str | None, beat: bool) -> None:
    """Run a Celery worker (every queue by default, small patient-facing work first)."""
    from eyescreen.logging_setup import configure_logging
    from worker.queues import queues_option

    queues = queues or queues_option()

    lane = "urgent" if queues == "urgent" else "worker"
    configure_logging(lane)
    settings = _settings()
    if settings.metrics_port:
        _prepare_multiprocess_metrics(settings)
    from worker.app import create_app

    app = create_app(settings)
    if settings.metrics_port:
        from eyescreen.ops_server import make_registry, serve, standard_checks

        serve(settings.metrics_port, make_registry(settings), standard_checks(settings))
    # The pool's processes fork from this one: PyTorch imported here once (no model loaded, no
    # thread pool started; each child does that) spares every child, and every child started
    # again after a crash, its own import: about 5 s of CPU each.
    import ml.predictor  # noqa: F401

    app.worker_main(
        [
            "worker",
            "--loglevel=INFO",
            f"--queues={queues}",
            f"--concurrency={concurrency or settings.effective_worker_concurrency}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname=eyescreen-{lane}@%h",
            *(
                ["--beat", f"--schedule={settings.data_path / 'celerybeat-schedule'}"]
                if beat
                else []
            ),
        ]
    )


def _prepare_multiprocess_metrics(settings: Settings) -> None:
    """Worker children write metrics to files the serving process adds up; must be set before
    prometheus_client is imported anywhere."""
    import os
    import shutil

    folder = settings.data_path / f"metrics-{os.getpid()}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(folder)


@main.command()
@click.argument("files", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--to", "destination", default=None, help="AE@host:port (default: this gateway)")
@click.option(
    "--route",
    type=click.Choice(["fundus", "anterior"]),
    default="fundus",
    help="for plain photographs: which kind they are",
)
@click.option("--patient-id", default="ANON", help="for plain photographs")
@click.option("--patient-name", default="Anonymous^", help="Family^Given, e.g. Doe^Jane")
@click.option("--birth-date", default="", help="YYYY-MM-DD")
@click.option("--sex", type=click.Choice(["F", "M", "O", ""]), default="")
@click.option(
    "--eye",
    "eyes",
    multiple=True,
    help="R/L (or OD/OS): once for all photographs or once per file, in order; "
    "default: from the file name (…_left.jpg), else not given",
)
@click.option("--accession", default="", help="accession number of the visit")
@click.option(
    "--visit-per-file",
    is_flag=True,
    help="each photograph its own visit (default: the photographs of one command are one visit)",
)
@click.option("--calling-ae", default="EYESCREEN-SCU", help="the AE title to call as (a source)")
def send(
    files: tuple[Path, ...],
    destination: str | None,
    route: str,
    patient_id: str,
    patient_name: str,
    birth_date: str,
    sex: str,
    eyes: tuple[str, ...],
    accession: str,
    visit_per_file: bool,
    calling_ae: str,
) -> None:
    """Send DICOM files as they are, and JPEG/PNG photographs wrapped as Ophthalmic
    Photography: by default one visit of one patient (both eyes in one case)."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.errors import InvalidDicomError

    from dicom_gateway.scu import DeliveryFailed, send_datasets
    from eyescreen.visit import Patient, VisitError, dicom_date, eyes_for, photos_as_visit

    settings = _settings()
    node = (
        DicomNode.parse(destination)
        if destination
        else DicomNode(settings.ae_title, "127.0.0.1", settings.dicom_port)
    )
    by_path: dict[Path, Dataset] = {}
    photos: list[Path] = []
    for path in files:
        try:
            by_path[path] = dcmread(path)
        except InvalidDicomError:
            photos.append(path)
    try:
        patient = Patient(patient_id, patient_name, dicom_date(birth_date), sex)
        photo_eyes = eyes_for(photos, eyes)
        groups = [[i] for i in range(len(photos))] if visit_per_file else [list(range(len(photos)))]
        for group in groups:
            made = photos_as_visit(
                [photos[i] for i in group], route, patient, [photo_eyes[i] for i in group],
                accession,
            )  # fmt: skip
            by_path.update({photos[i]: ds for i, ds in zip(group, made, strict=True)})
    except VisitError as exc:
        raise click.BadParameter(str(exc)) from None
    datasets = [by_path[path] for path in files]
    try:
        statuses = send_datasets(datasets, node, calling_ae)
    except DeliveryFailed as exc:
        raise click.ClickException(str(exc)) from None
    for path, ds, status in zip(files, datasets, statuses, strict=True):
        eye = ds.get("ImageLaterality", "") or "?"
        click.echo(
            f"{path}: 0x{status:04X} {ds.SOPInstanceUID} eye {eye} study {ds.StudyInstanceUID}"
        )


@main.command()
def status() -> None:
    """Counts of instances, predictions and report deliveries per state."""
    from eyescreen.status import collect_status

    settings = _settings()
    for section, counts in collect_status(settings).items():
        click.echo(f"{section}:")
        for state, count in sorted(counts.items()):
            click.echo(f"  {state:<12} {count}")


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade(revision: str) -> None:
    from eyescreen.database import upgrade

    settings = _settings()
    settings.ensure_dirs()  # the embedded database lives in the data folder
    upgrade(settings.effective_database_url, revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    from eyescreen.database import downgrade

    downgrade(_settings().effective_database_url, revision)
    click.echo(f"database at {revision}")


def _training_options(fn):  # type: ignore[no-untyped-def]
    options = [
        click.option(
            "--manifest",
            "manifests",
            type=click.Path(exists=True, path_type=Path),
            required=True,
            multiple=True,
            help="manifest CSV (repeat to combine several; paths relative to each one's folder)",
        ),
        click.option(
            "--label-map",
            type=click.Path(exists=True, path_type=Path),
            default=None,
            help="JSON mapping your label words to taxonomy codes (default: the shipped one)",
        ),
        click.option(
            "--images",
            type=click.Path(exists=True, path_type=Path),
            default=None,
            help="folder the manifest's paths are relative to (default: its folder)",
        ),
        click.option("--taxonomy", "taxonomy_name", default="fundus"),
        click.option("--backbone", default="efficientnet_lite0"),
        click.option(
            "--backbone-weights",
            default="imagenet",
            help="'imagenet' (EfficientNet-Lite0/1/2), a state_dict file, or 'none'",
        ),
        click.option("--head-epochs", type=int, default=60),
        click.option("--unfreeze-steps", type=int, default=0),
        click.option("--step-epochs", type=int, default=1),
        click.option("--paper-schedule", is_flag=True, help="the paper's full schedule (GPU)"),
        click.option("--seed", type=int, default=0),
        click.option("--image-size", type=int, default=0, help="input pixels (0: backbone's)"),
        click.option("--device", default="auto"),
    ]
    for option in reversed(options):
        fn = option(fn)
    return fn


def _train_config(**kw: object):  # type: ignore[no-untyped-def]
    from ml.train import TrainConfig

    weights = None if kw["backbone_weights"] == "none" else kw["backbone_weights"]
    common: dict[str, Any] = dict(
        backbone=kw["backbone"],
        backbone_weights=weights,
        seed=kw["seed"],
        device=kw["device"],
        image_size=kw["image_size"],
    )
    if kw["paper_schedule"]:
        return TrainConfig.paper(**common)
    schedule: dict[str, Any] = {k: kw[k] for k in ("head_epochs", "unfreeze_steps", "step_epochs")}
    return TrainConfig(**schedule, **common)


def _verified(sites: tuple[str, ...], route: str, taxonomy: Any, folder: Path) -> list[Any]:
    """The sites' verified photographs as samples (``eyescreen.verified``), counted aloud."""
    if not sites:
        return []
    from eyescreen.verified import verified_samples
    from services.db.session import make_engine, make_session_factory

    settings = _settings()
    engine = make_engine(settings.effective_database_url)
    try:
        sessions = make_session_factory(engine)
        found = []
        for site in sites:
            samples = verified_samples(settings, sessions, site, route, taxonomy, folder)
            click.echo(f"{site}: {len(samples)} verified {route} photographs added", err=True)
            found += samples
        return found
    finally:
        engine.dispose()


@main.command()
@_training_options
@click.option("--out", type=click.Path(path_type=Path), required=True, help="checkpoint file")
@click.option("--version", default="1.0")
@click.option(
    "--cache-dir",
    type=click.Path(path_type=Path),
    default=Path("var/cache"),
    help="where backbone features are cached between runs",
)
@click.option(
    "--thresholds-from",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="metrics.json of a cross-validation: its operating point, calibration, not-assessed "
    "classes and metrics",
)
@click.option("--flip-tta", is_flag=True, help="average each photograph with its mirror image")
@click.option(
    "--include-verified",
    "verified_sites",
    multiple=True,
    metavar="SITE",
    help="also the site's verified photographs from the service's database "
    "(EYESCREEN_DATABASE_URL: panel decisions and accepted concordant reads), decoded as the "
    "worker does and cached under --cache-dir/verified; each use is audited; a site without "
    "verified reads adds none and says so; repeatable",
)
def train(
    manifests: tuple[Path, ...],
    label_map: Path | None,
    images: Path | None,
    taxonomy_name: str,
    out: Path,
    version: str,
    cache_dir: Path,
    thresholds_from: Path | None,
    flip_tta: bool,
    verified_sites: tuple[str, ...],
    **kw: object,
) -> None:
    """Train a hierarchical model on a manifest and write a checkpoint."""
    from eyescreen.logging_setup import configure_logging
    from ml.pipeline import load_samples, operating_meta, train_final
    from services.taxonomy.tree import load_taxonomy

    configure_logging("train")
    taxonomy = load_taxonomy(taxonomy_name)
    samples = load_samples(list(manifests), images, taxonomy, label_map)
    samples += _verified(verified_sites, taxonomy_name, taxonomy, cache_dir / "verified")
    extra: dict[str, Any] = {"inference": {"flip_tta": flip_tta}}
    if thresholds_from:
        extra |= operating_meta(json.loads(thresholds_from.read_text()), flip_tta)
    sha, history = train_final(
        samples,
        taxonomy,
        _train_config(**kw),
        taxonomy.name,
        out,
        version,
        extra,
        cache_dir=cache_dir,
        # Kept after every epoch; running the same command again continues an interrupted run.
        resume_path=out.with_suffix(".resume.pt"),
    )
    click.echo(f"{out}: sha256 {sha}; final loss {history[-1]:.4f}")


@main.command("cross-validate")
@_training_options
@click.option("--folds", type=int, default=5)
@click.option("--out", type=click.Path(path_type=Path), required=True, help="results folder")
@click.option(
    "--target-sensitivity",
    type=float,
    default=0.95,
    help="referral sensitivity the operating point must reach",
)
@click.option(
    "--min-positive",
    type=int,
    default=30,
    help="classes with fewer positive eyes are not assessed",
)
@click.option("--by-source", is_flag=True, help="one fold per source: each source held out in turn")
@click.option(
    "--group-near-duplicates/--no-group-near-duplicates",
    default=True,
    help="keep photographs that look like one eye (feature cosine >= 0.98) in one fold, "
    "whatever their patient ids",
)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
def cross_validate_cmd(
    manifests: tuple[Path, ...],
    label_map: Path | None,
    images: Path | None,
    taxonomy_name: str,
    folds: int,
    out: Path,
    target_sensitivity: float,
    min_positive: int,
    by_source: bool,
    group_near_duplicates: bool,
    json_path: Path | None,
    **kw: object,
) -> None:
    """Patient-grouped k-fold cross-validation with flat baselines on the same folds."""
    import shutil

    from eyescreen.logging_setup import configure_logging
    from ml.crossval import cross_validate
    from ml.data import source_folds
    from ml.pipeline import load_samples
    from services.taxonomy.tree import load_taxonomy

    configure_logging("cv")
    taxonomy = load_taxonomy(taxonomy_name)
    samples = load_samples(list(manifests), images, taxonomy, label_map)
    fold_of = source_folds(samples)[0] if by_source else None
    cross_validate(
        samples,
        taxonomy,
        _train_config(**kw),
        out,
        folds,
        target_sensitivity,
        min_positive,
        folds=fold_of,
        split="each source held out in turn" if by_source else None,
        group_near_duplicates=group_near_duplicates,
    )
    if json_path is not None:
        shutil.copyfile(out / "metrics.json", json_path)
    click.echo((out / "metrics.md").read_text())


@main.command()
@click.option(
    "--manifest",
    "manifests",
    type=click.Path(exists=True, path_type=Path),
    required=True,
    multiple=True,
)
@click.option("--images", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--label-map", type=click.Path(exists=True, path_type=Path), default=None)
@click.option("--json", "json_path", type=click.Path(path_type=Path), default=None)
@click.option("--figures/--no-figures", default=True, help="Grad-CAM grid and t-SNE map")
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, path_type=Path),
    default=None,
    help="default: the model the service uses for --route",
)
@click.option("--route", type=click.Choice(["fundus", "anterior"]), default="fundus")
@click.option(
    "--paired-with",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=None,
    help="an earlier evaluation's --out folder on the same photographs (another model): "
    "compare the referrals as paired data (McNemar, Newcombe)",
)
@click.option("--out", type=click.Path(path_type=Path), required=True)
def evaluate(
    manifests: tuple[Path, ...],
    images: Path | None,
    label_map: Path | None,
    json_path: Path | None,
    figures: bool,
    checkpoint: Path | None,
    route: str,
    paired_with: Path | None,
    out: Path,
) -> None:
    """Evaluate one checkpoint on a manifest: referral sensitivity and specificity per eye and
    patient, tables, ROC, confusion, calibration; each eye's referral in referrals.csv."""
    import shutil

    from eyescreen.logging_setup import configure_logging
    from ml.pipeline import evaluate_checkpoint, load_samples
    from ml.predictor import resolve_checkpoint
    from services.taxonomy.tree import load_taxonomy

    if paired_with is not None and not (paired_with / "referrals.csv").is_file():
        raise click.UsageError(f"{paired_with} holds no referrals.csv of an evaluation")

    configure_logging("evaluate")
    settings = _settings()
    path = checkpoint or resolve_checkpoint(
        route, getattr(settings, f"{route}_checkpoint"), settings.data_path / "models"
    )
    samples = load_samples(list(manifests), images, load_taxonomy(route), label_map)
    summary = evaluate_checkpoint(path, samples, out, settings.device, figures=figures)
    if paired_with is not None:
        _add_paired_comparison(out, paired_with, summary)
    if json_path is not None:
        shutil.copyfile(out / "metrics.json", json_path)
    click.echo((out / "metrics.md").read_text())


def _add_paired_comparison(out: Path, other: Path, summary: dict[str, Any]) -> None:
    """The referrals of this evaluation against another's on the same photographs, in
    metrics.json and metrics.md."""
    from ml import paired_referral
    from ml.report import write_json

    try:
        comparison = paired_referral.compare(
            paired_referral.read_referrals(out / "referrals.csv"),
            paired_referral.read_referrals(other / "referrals.csv"),
        )
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    other_sha = json.loads((other / "metrics.json").read_text()).get("sha256", "")
    summary["paired_with"] = {"folder": str(other), "sha256": other_sha} | comparison
    write_json(out / "metrics.json", summary)
    this_name = f"this model ({summary['sha256'][:12]})"
    other_name = f"the other ({other_sha[:12] or other.name})"
    with (out / "metrics.md").open("a") as handle:
        handle.write("\n" + paired_referral.markdown(comparison, this_name, other_name))


main.add_command(reports_group)
main.add_command(model_group)
main.add_command(cross_validate_sources)
main.add_command(train_last_block)
main.add_command(drift_group)
main.add_command(users_group)
main.add_command(stats_group)
main.add_command(web_command)
main.add_command(backup_group)
main.add_command(worklist_group)
main.add_command(failsafe_group)
