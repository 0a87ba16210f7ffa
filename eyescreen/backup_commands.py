"""``eyescreen backup create|verify|restore``: the database and the files, while it runs."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from eyescreen.cli_common import settings_or_exit

if TYPE_CHECKING:
    from services.operations.backup import Manifest


@click.group("backup")
def backup_group() -> None:
    """Back up and restore the database, the image and report stores and the pseudonym key."""


def _with_progress(what: str, action: Callable[..., Manifest], folder: Path) -> Manifest:
    """Run a backup or restore with this installation's settings and a progress bar; its
    refusal is the command's error."""
    from tqdm import tqdm

    from services.operations.backup import BackupError

    settings = settings_or_exit()
    with tqdm(unit="file", desc=what) as bar:
        try:
            return action(settings, folder, lambda n: bar.update(n))
        except BackupError as exc:
            raise click.ClickException(str(exc)) from None


@backup_group.command("create")
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
def create_command(target: Path) -> None:
    """Back up into TARGET while the service runs (an earlier backup there is updated: only
    new files are copied). TARGET holds patient data: keep it as safe as the data folder."""
    from services.operations import backup

    manifest = _with_progress("backup", backup.create, target)
    click.echo(
        f"backup in {target}: {manifest.database} at schema {manifest.schema_revision}, "
        f"{manifest.files} files ({manifest.copied} new, {manifest.bytes >> 20} MiB), "
        f"{manifest.seconds} s"
    )


@backup_group.command("verify")
@click.argument("source", type=click.Path(file_okay=False, exists=True, path_type=Path))
def verify_command(source: Path) -> None:
    """Check every stored file of a backup against its sha256 name."""
    from services.operations import backup

    try:
        manifest = backup.read_manifest(source)
    except backup.BackupError as exc:
        raise click.ClickException(str(exc)) from None
    damaged = backup.verify(source)
    for name in damaged:
        click.echo(f"damaged: {name}", err=True)
    if damaged:
        raise click.ClickException(f"{len(damaged)} damaged file(s)")
    click.echo(f"{source}: {manifest.files} files, all intact ({manifest.created_at})")


@backup_group.command("restore")
@click.argument("source", type=click.Path(file_okay=False, exists=True, path_type=Path))
@click.option("--yes", is_flag=True, help="the service is stopped; replace its database")
def restore_command(source: Path, yes: bool) -> None:
    """Restore a backup into this installation's database and data folder. Stop the service
    first; afterwards `eyescreen up` re-sends what was not yet sent and nothing twice."""
    from services.operations import backup

    if not yes:
        raise click.ClickException("stop the service, then run again with --yes")
    manifest = _with_progress("restore", backup.restore, source)
    click.echo(f"restored the backup of {manifest.created_at} (schema {manifest.schema_revision})")
