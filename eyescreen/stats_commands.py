"""``eyescreen stats export``: the study's figures for a filter, as a frozen snapshot."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import click

from eyescreen.cli_common import settings_or_exit


def _day(value: str | None) -> date | None:
    return datetime.strptime(value, "%Y-%m-%d").date() if value else None


@click.group("stats")
def stats_group() -> None:
    """Prospective-study statistics."""


@stats_group.command("export")
@click.argument("out", type=click.Path(file_okay=False, path_type=Path))
@click.option("--from", "date_from", help="first study date, YYYY-MM-DD")
@click.option("--to", "date_to", help="last study date, YYYY-MM-DD")
@click.option("--site", "sites", multiple=True)
@click.option("--route", "routes", multiple=True, type=click.Choice(["fundus", "anterior"]))
@click.option("--model-version", "model_versions", multiple=True)
@click.option("--camera", "cameras", multiple=True, help="a camera's calling AE title")
@click.option(
    "--replicates",
    type=int,
    help="bootstrap replicates; default: the protocol's (another number overrides the protocol, "
    "and the export says so)",
)
@click.option("--seed", type=int, help="bootstrap seed; default: the protocol's (as --replicates)")
@click.option(
    "--identified", is_flag=True, help="real ids instead of pseudonyms (not for the study team)"
)
@click.option(
    "--format",
    "formats",
    multiple=True,
    type=click.Choice(["csv", "xlsx", "html"]),
    help="what to write (repeatable); all three by default; snapshot.json always",
)
@click.option(
    "--protocol",
    "protocol_file",
    type=click.Path(dir_okay=False, exists=True, path_type=Path),
    help="the study protocol (TOML); default: EYESCREEN_STUDY_PROTOCOL_FILE, else the shipped one",
)
def export_command(
    out: Path,
    date_from: str | None,
    date_to: str | None,
    sites: tuple[str, ...],
    routes: tuple[str, ...],
    model_versions: tuple[str, ...],
    cameras: tuple[str, ...],
    replicates: int | None,
    seed: int | None,
    identified: bool,
    formats: tuple[str, ...],
    protocol_file: Path | None,
) -> None:
    """Write CSVs, an XLSX workbook, an HTML report (or those --format names) and
    snapshot.json into OUT."""
    from tqdm import tqdm

    from reports.study_export import FORMATS, export, progress_steps
    from services.access import audit
    from services.db.session import make_engine, make_session_factory, transaction
    from services.study.protocol import ProtocolError, load_protocol
    from services.study.records import Filters, study_key
    from services.study.tables import Options

    settings = settings_or_exit()
    try:
        protocol = load_protocol(protocol_file or settings.study_protocol_file)
    except ProtocolError as exc:
        raise click.ClickException(str(exc)) from exc
    filters = Filters(_day(date_from), _day(date_to), sites, routes, model_versions, cameras)
    key = study_key(settings.study_key_file or settings.data_path / "study.key")
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    formats = formats or FORMATS
    total = progress_steps(formats)
    with (
        tqdm(total=total, unit="step", desc="study export") as bar,
        transaction(sessions) as session,
    ):

        def progress(step: str) -> None:
            bar.set_postfix_str(step)
            bar.update(1)

        snapshot = export(
            session,
            filters,
            out,
            key,
            Options(
                protocol.replicates if replicates is None else replicates,
                protocol.seed if seed is None else seed,
            ),
            identified,
            progress,
            protocol=protocol,
            formats=formats,
        )
        audit.record(
            session,
            audit.Actor(None, "cli"),
            "stats.export",
            identified=identified,
            filters=snapshot["filters"],
            eyes=snapshot["eyes"],
            formats=snapshot["formats"],
        )
    click.echo(f"{snapshot['eyes']} eyes exported to {out}")
