"""``eyescreen web`` (the clinicians' web application) and ``eyescreen users``."""

from __future__ import annotations

import logging
import sys

import click

from eyescreen.cli_common import settings_or_exit
from services.db.models import Role

log = logging.getLogger(__name__)


@click.command("web")
def web_command() -> None:
    """Run the graders' and arbitration panel's web application."""
    import uvicorn

    from eyescreen.database import upgrade
    from eyescreen.logging_setup import configure_logging
    from webapp.app import create_app

    configure_logging("web")
    settings = settings_or_exit()
    settings.ensure_dirs()
    upgrade(settings.effective_database_url)
    tls = settings.web_certificate is not None
    scheme = "https" if tls else "http"
    bind = settings.web_bind_host
    host = "localhost" if bind in ("0.0.0.0", "::") else bind
    log.info("web application at %s://%s:%d/", scheme, host, settings.web_port)
    click.echo(f"eyescreen web application: {scheme}://{host}:{settings.web_port}/", err=True)
    click.echo(listening_note(bind, tls), err=True)
    uvicorn.run(
        create_app(settings),
        host=bind,
        port=settings.web_port,
        ssl_certfile=str(settings.web_certificate) if tls else None,
        ssl_keyfile=str(settings.web_private_key) if settings.web_private_key else None,
        log_level="warning",
        access_log=False,  # URLs hold case ids: the audit trail records access instead
        proxy_headers=False,
    )


def listening_note(bind: str, tls: bool) -> str:
    """What the start-up says about who can reach the web application."""
    if tls:
        return f"listening on {bind} over HTTPS"
    if bind in ("127.0.0.1", "::1", "localhost"):
        return (
            f"listening on {bind} only (this machine): there is no certificate "
            "(EYESCREEN_WEB_CERTIFICATE / _PRIVATE_KEY); set EYESCREEN_WEB_HOST to listen on "
            "the network behind a TLS proxy"
        )
    return (
        f"WARNING: listening on {bind} over plain HTTP (EYESCREEN_WEB_HOST is set): passwords "
        "and patient data cross the network in clear unless a TLS proxy is in front"
    )


@click.group("users")
def users_group() -> None:
    """Accounts of the web application: add, disable, enable, reset a password, API tokens."""


def _password(prompt: bool) -> str:
    if not sys.stdin.isatty() and not prompt:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=True))


@users_group.command("add")
@click.argument("username")
@click.option("--name", "display_name", required=True, help="as in DICOM: Family^Given")
@click.option("--role", type=click.Choice([r.value for r in Role]), required=True)
@click.option("--site", "sites", multiple=True, required=True, help="a site whose cases they see")
@click.option("--arbitrate-all", is_flag=True, help="a new grader: every read goes to the panel")
def add_user(
    username: str, display_name: str, role: str, sites: tuple[str, ...], arbitrate_all: bool
) -> None:
    """Add an account; the password is read from standard input (or prompted for)."""
    from services.access import audit, people

    with _session() as session:
        try:
            people.add_person(
                session, username, display_name, Role(role), sites, _password(False), arbitrate_all
            )
        except people.AccountError as exc:
            raise click.ClickException(str(exc)) from exc
        audit.record(
            session,
            audit.Actor(None, "cli"),
            "user.add",
            user=username,
            role=role,
            sites=sorted(sites),
        )
    click.echo(f"added {username} ({role}) at {', '.join(sorted(sites))}")


@users_group.command("disable")
@click.argument("username")
def disable_user(username: str) -> None:
    """Disable an account: its sessions end at their next request."""
    _change(username, "disable")


@users_group.command("enable")
@click.argument("username")
def enable_user(username: str) -> None:
    _change(username, "enable")


@users_group.command("reset-password")
@click.argument("username")
def reset_password(username: str) -> None:
    """Set a new password (from standard input, or prompted for); clears a lock-out."""
    _change(username, "reset-password")


@users_group.command("token")
@click.argument("username")
def api_token(username: str) -> None:
    """A new API token for the JSON API (printed once; the old one stops working)."""
    _change(username, "token")


def _change(username: str, action: str) -> None:
    from services.access import audit, people, web_sessions

    with _session() as session:
        try:
            person = people.find(session, username)
            if action == "disable":
                person.active = False
                web_sessions.end_all(session, person)
            elif action == "enable":
                person.active = True
            elif action == "reset-password":
                people.reset_password(person, _password(False))
            elif action == "token":
                click.echo(people.new_api_token(person))
        except people.AccountError as exc:
            raise click.ClickException(str(exc)) from exc
        audit.record(session, audit.Actor(None, "cli"), f"user.{action}", user=username)
    click.echo(f"{username}: {action} done", err=True)


def _session():  # type: ignore[no-untyped-def]
    from eyescreen.database import upgrade
    from services.db.session import make_engine, make_session_factory, transaction

    settings = settings_or_exit()
    settings.ensure_dirs()
    upgrade(settings.effective_database_url)
    return transaction(make_session_factory(make_engine(settings.effective_database_url)))
