"""Browser sessions: a random token in a cookie, its hash in the database, a CSRF token per
session, an idle timeout, and sign-out that ends the row (so a stolen cookie dies with it)."""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import Person, WebSession


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def start(session: Session, person: Person, address: str) -> tuple[str, WebSession]:
    """A new session for the person; returns the cookie token (kept nowhere else)."""
    token = secrets.token_urlsafe(32)
    row = WebSession(
        token_sha256=_digest(token),
        person_pk=person.id,
        csrf_token=secrets.token_urlsafe(32),
        address=address[:64],
    )
    session.add(row)
    session.flush()
    return token, row


def current(session: Session, token: str, idle: timedelta) -> WebSession | None:
    """The live session for a cookie token, its idle clock restarted; None if unknown, ended,
    idle too long, or its person disabled."""
    row = session.scalar(select(WebSession).where(WebSession.token_sha256 == _digest(token)))
    now = utcnow()
    if row is None or row.ended_at is not None:
        return None
    if now - row.last_seen_at > idle or not row.person.active:
        row.ended_at = now
        return None
    if now - row.last_seen_at > timedelta(seconds=30):  # no write on every request
        row.last_seen_at = now
    return row


def end(row: WebSession) -> None:
    row.ended_at = utcnow()


def end_all(session: Session, person: Person) -> int:
    """End every live session of the person (disabled: re-enabling later must not bring an
    old cookie back to life)."""
    ended = session.execute(
        update(WebSession)
        .where(WebSession.person_pk == person.id, WebSession.ended_at.is_(None))
        .values(ended_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    return int(ended.rowcount)  # type: ignore[attr-defined]


def csrf_matches(row: WebSession, token: str | None) -> bool:
    return token is not None and secrets.compare_digest(row.csrf_token, token)
