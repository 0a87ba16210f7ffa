"""``eyescreen``: run the service, send images, inspect state, manage the database and models."""

from __future__ import annotations

import sys
from pathlib import Path

import click
from pydantic import ValidationError

from services.settings import DicomNode, Settings, load_settings


def _settings() -> Settings:
    try:
        return load_settings()
    except ValidationError as exc:
        lines = [
            f"  EYESCREEN_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}" for e in exc.errors()
        ]
        raise click.ClickException("invalid settings:\n" + "\n".join(lines)) from None


@click.group()
def main() -> None:
    """Hierarchical eye-disease screening of slit-lamp and fundus photographs, on DICOM."""


@main.command()
@click.option("--workers", type=int, default=None, help="worker processes (default: settings)")
def up(workers: int | None) -> None:
    """Migrate the database, then run gateway and worker(s) until Ctrl-C."""
    from eyescreen.database import upgrade
    from eyescreen.logging_setup import configure_logging
    from eyescreen.supervisor import Supervisor

    configure_logging("up")
    settings = _settings()
    settings.ensure_dirs()
    upgrade(settings.effective_database_url)
    sys.exit(Supervisor(settings, workers or settings.worker_concurrency).run())


@main.command()
def gateway() -> None:
    """Run the DICOM gateway (Storage SCP) and the outbox sweeper."""
    from eyescreen.logging_setup import configure_logging
    from eyescreen.processes import run_gateway

    configure_logging("gateway")
    run_gateway(_settings())


@main.command()
@click.option("--concurrency", type=int, default=None)
@click.option("--queues", default="inference,reports,housekeeping")
def worker(concurrency: int | None, queues: str) -> None:
    """Run a Celery worker (inference, reports and housekeeping queues by default)."""
    from eyescreen.logging_setup import configure_logging
    from worker.app import create_app

    configure_logging("worker")
    settings = _settings()
    app = create_app(settings)
    app.worker_main(
        [
            "worker",
            "--loglevel=INFO",
            f"--queues={queues}",
            f"--concurrency={concurrency or settings.worker_concurrency}",
            "--without-gossip",
            "--without-mingle",
            "--without-heartbeat",
            f"--hostname=eyescreen-{queues.split(',')[0]}@%h",
        ]
    )


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
def send(files: tuple[Path, ...], destination: str | None, route: str, patient_id: str) -> None:
    """Send DICOM files, or JPEG/PNG photographs wrapped as Ophthalmic Photography."""
    from pydicom import dcmread
    from pydicom.dataset import Dataset
    from pydicom.errors import InvalidDicomError

    from dicom_gateway.photos import photo_to_dataset
    from dicom_gateway.scu import DeliveryFailed, send_datasets

    settings = _settings()
    node = (
        DicomNode.parse(destination)
        if destination
        else DicomNode(settings.ae_title, "127.0.0.1", settings.dicom_port)
    )
    datasets: list[Dataset] = []
    for path in files:
        try:
            datasets.append(dcmread(path))
        except InvalidDicomError:
            datasets.append(photo_to_dataset(path, route=route, patient_id=patient_id))
    try:
        statuses = send_datasets(datasets, node, "EYESCREEN-SCU")
    except DeliveryFailed as exc:
        raise click.ClickException(str(exc)) from None
    for path, ds, status in zip(files, datasets, statuses, strict=True):
        click.echo(f"{path}: 0x{status:04X} {ds.SOPInstanceUID}")


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

    upgrade(_settings().effective_database_url, revision)
    click.echo(f"database at {revision}")


@db.command("downgrade")
@click.argument("revision")
def db_downgrade(revision: str) -> None:
    from eyescreen.database import downgrade

    downgrade(_settings().effective_database_url, revision)
    click.echo(f"database at {revision}")
