"""``eyescreen worklist fetch`` and ``eyescreen failsafe``: who was expected today, and who may
have fallen through (CSV, for the clinic's evening check), closed with a reason (audited)."""

from __future__ import annotations

import csv
import getpass
import sys
from datetime import date

import click
from sqlalchemy.orm import Session

from eyescreen.cli_common import settings_or_exit
from services.db.models import AuditEvent, ExpectedVisit, FailsafeItem, ScreeningCase
from services.db.session import make_engine, make_session_factory, transaction

COLUMNS = (
    "id", "site", "day", "kind", "subject", "case", "patient_id", "opened_at", "resolved_at",
    "closed_at", "close_reason", "detail",
)  # fmt: skip


def _today() -> str:
    return date.today().strftime("%Y%m%d")


@click.group("worklist")
def worklist_group() -> None:
    """The department's Modality Worklist: the day's expected screening visits."""


@worklist_group.command("fetch")
@click.option("--date", "day", default=None, help="YYYYMMDD (default: today)")
def fetch(day: str | None) -> None:
    """Fetch the configured worklists now (the gateway also does every 15 minutes)."""
    from dicom_gateway.worklist import fetch_into

    settings = settings_or_exit()
    if not settings.worklist_sources:
        raise click.ClickException("no worklist configured: set EYESCREEN_WORKLIST_SOURCES")
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    counts = fetch_into(settings, sessions, day)
    for node in settings.worklist_sources:
        if str(node) in counts:
            new, updated = counts[str(node)]
            click.echo(f"{node}: {new} new, {updated} updated")
        else:
            click.echo(f"{node}: not fetched (see the log)", err=True)
    if len(counts) < len(settings.worklist_sources):
        sys.exit(1)


def _patient_id(session: Session, item: FailsafeItem) -> str:
    if item.case_pk is not None:
        return session.get_one(ScreeningCase, item.case_pk).study.patient.patient_id
    if item.visit_pk is not None:
        return session.get_one(ExpectedVisit, item.visit_pk).patient_id
    return ""


def _row(session: Session, item: FailsafeItem) -> list[object]:
    def when(moment: object) -> str:
        return moment.strftime("%Y-%m-%d %H:%M") if moment else ""  # type: ignore[attr-defined]

    return [
        item.id, item.site, item.day, item.kind.value, item.subject, item.case_pk or "",
        _patient_id(session, item), when(item.opened_at), when(item.resolved_at),
        when(item.closed_at), item.close_reason, item.detail,
    ]  # fmt: skip


@click.group("failsafe", invoke_without_command=True)
@click.option("--date", "day", default=None, help="YYYYMMDD: that day's items (default: all days)")
@click.option("--site", default=None, help="default: this installation's site")
@click.option("--all", "closed", is_flag=True, help="closed items too")
@click.option("--summary", is_flag=True, help="the day's counts instead (expected, imaged, ...)")
@click.pass_context
def failsafe_group(
    ctx: click.Context, day: str | None, site: str | None, closed: bool, summary: bool
) -> None:
    """The failsafe list as CSV (refreshed first); ``close`` takes an item off it."""
    if ctx.invoked_subcommand is not None:
        return
    from services.workflow import FailsafePolicy, day_summary, items, refresh

    settings = settings_or_exit()
    site = settings.site if site is None else site
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    with transaction(sessions) as session:
        refresh(session, site, FailsafePolicy.from_settings(settings))
        out = csv.writer(sys.stdout)
        if summary:
            counts = day_summary(session, site, day or _today())
            out.writerow(
                ["site", "day", "expected", "imaged", "expected_imaged", "unexpected",
                 "resulted", "delivered", "open_items"]
            )  # fmt: skip
            out.writerow(
                [counts.site, counts.day, counts.expected, counts.imaged, counts.expected_imaged,
                 counts.unexpected, counts.resulted, counts.delivered, counts.open_items]
            )  # fmt: skip
            click.echo(counts.sentence(), err=True)
            return
        rows = items(session, [site], day, closed)
        out.writerow(COLUMNS)
        for item in rows:
            out.writerow(_row(session, item))
        session.add(
            AuditEvent(
                action="failsafe.export",
                detail={"site": site, "day": day, "items": len(rows), "by": getpass.getuser()},
            )
        )


@failsafe_group.command("close")
@click.argument("item_id", type=int)
@click.option("--reason", required=True, help="why it can go: the outcome, or what was done")
@click.option("--site", default=None, help="default: this installation's site")
def close(item_id: int, reason: str, site: str | None) -> None:
    """Close one item with a reason (audited)."""
    from services.workflow import FailsafeError, close_item

    settings = settings_or_exit()
    sessions = make_session_factory(make_engine(settings.effective_database_url))
    try:
        with transaction(sessions) as session:
            item = close_item(
                session, item_id, None, reason, [settings.site if site is None else site]
            )
            session.add(
                AuditEvent(
                    action="failsafe.close",
                    case_pk=item.case_pk,
                    detail={"item": item_id, "kind": item.kind.value, "reason": reason,
                            "by": getpass.getuser()},
                )
            )  # fmt: skip
    except FailsafeError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"failsafe item {item_id} closed")
