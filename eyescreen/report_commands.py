"""``eyescreen reports …``: see deliveries, re-send dead-lettered ones, export a case's PDF.

Service modules are imported inside the commands: importing them here would load
prometheus_client before ``eyescreen worker`` has set up multiprocess metrics."""

from __future__ import annotations

import getpass
from pathlib import Path

import click
from sqlalchemy import select

from eyescreen.cli_common import settings_or_exit
from services.db.models import AuditEvent, DeliveryState, Report, ReportDelivery
from services.db.session import make_engine, make_session_factory, transaction
from services.kernel.outbox import OutboxDispatcher
from services.kernel.settings import Settings
from services.kernel.storage import ContentStore


@click.group("reports")
def reports_group() -> None:
    """Report deliveries to the PACS and the PDF reports."""


def _sessions(settings: Settings):  # type: ignore[no-untyped-def]
    return make_session_factory(make_engine(settings.effective_database_url))


@reports_group.command("list")
@click.option("--state", type=click.Choice([s.value for s in DeliveryState]), default=None)
def list_deliveries(state: str | None) -> None:
    """One line per delivery: id, case, destination, state, attempts, last status and error."""
    settings = settings_or_exit()
    query = select(ReportDelivery, Report).join(Report).order_by(ReportDelivery.id)
    if state:
        query = query.where(ReportDelivery.state == DeliveryState(state))
    with _sessions(settings)() as session:
        for delivery, report in session.execute(query):
            status = "" if delivery.last_status is None else f"0x{delivery.last_status:04X}"
            click.echo(
                f"{delivery.id:>6}  case {report.case_pk:<6} {delivery.destination:<28} "
                f"{delivery.state.value:<9} {delivery.attempts:>2}  {status:<6} "
                f"{(delivery.last_error or '')[:60]}"
            )


@reports_group.command("retry")
@click.argument("delivery_ids", nargs=-1, type=int)
def retry(delivery_ids: tuple[int, ...]) -> None:
    """Send dead-lettered deliveries again (all of them, or the ids given)."""
    from services.reporting.service import requeue_dead
    from worker.app import create_app

    settings = settings_or_exit()
    sessions = _sessions(settings)
    with transaction(sessions) as session:
        outbox_ids = requeue_dead(session, list(delivery_ids) or None)
        session.add(
            AuditEvent(
                action="reports.retry",
                detail={"deliveries": list(delivery_ids) or "all dead", "by": getpass.getuser()},
            )
        )
    app = create_app(settings)
    sent = OutboxDispatcher(sessions, app.eyescreen_runtime.publish).dispatch(outbox_ids)  # type: ignore[attr-defined]
    click.echo(
        f"{len(outbox_ids)} delivery(ies) queued again"
        + ("" if sent == len(outbox_ids) else f"; {len(outbox_ids) - sent} left for the sweeper")
    )


@reports_group.command("pdf")
@click.argument("case_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False, path_type=Path), required=True)
def export_pdf(case_id: int, output: Path) -> None:
    """Write the latest PDF report of a case (the access is audited)."""
    settings = settings_or_exit()
    sessions = _sessions(settings)
    with sessions() as session:
        latest = session.scalar(
            select(Report).where(Report.case_pk == case_id).order_by(Report.id.desc())
        )
    if latest is None:
        raise click.ClickException(f"case {case_id} has no report yet")
    if latest.pdf_sha256 is None:  # the case is still open: render it now
        from worker.runtime import WorkerRuntime

        runtime = WorkerRuntime(
            settings.model_copy(update={"pdf_reports": True}), lambda n, a: None
        )
        runtime.explain_report(latest.id)
        runtime.reports().render_pdf(latest.id)
    with transaction(sessions) as session:
        report = session.get_one(Report, latest.id)
        assert report.pdf_sha256 is not None
        session.add(
            AuditEvent(
                action="report.export_pdf",
                case_pk=case_id,
                detail={"report": report.id, "by": getpass.getuser()},
            )
        )
        sha256 = report.pdf_sha256
    output.write_bytes(ContentStore(settings.reports_dir, 0).read(sha256))
    click.echo(f"{output}: report {report.sop_instance_uid} of case {case_id}")
