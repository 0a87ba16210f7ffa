"""People who sign in: accounts, argon2 password hashes, lock-out, sites, API tokens."""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from datetime import timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from services.db.base import utcnow
from services.db.models import Person, PersonSite, Role

MAX_FAILED_LOGINS = 5  # then the account waits LOCKOUT before the next try
LOCKOUT = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 12

_hasher = PasswordHasher()
# Verifying against this when the user is unknown takes as long as for a real account, so the
# answer's timing does not tell which user names exist.
_DUMMY_HASH = _hasher.hash(secrets.token_hex(16))


class AccountError(ValueError):
    """A request about an account that cannot be done (the message says why)."""


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise AccountError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def password_matches(person: Person, password: str) -> bool:
    try:
        return _hasher.verify(person.password_hash or _DUMMY_HASH, password)
    except (VerificationError, InvalidHashError):
        return False


def add_person(
    session: Session,
    username: str,
    display_name: str,
    role: Role,
    sites: Iterable[str],
    password: str,
    arbitrate_all: bool = False,
) -> Person:
    """A new account; refused if the user name is taken."""
    if session.scalar(select(Person.id).where(Person.username == username)) is not None:
        raise AccountError(f"user {username!r} already exists")
    person = Person(
        username=username,
        display_name=display_name,
        role=role,
        password_hash=hash_password(password),
        arbitrate_all=arbitrate_all,
        sites=[PersonSite(site=site) for site in sorted(set(sites))],
    )
    session.add(person)
    session.flush()
    return person


def find(session: Session, username: str) -> Person:
    person = session.scalar(select(Person).where(Person.username == username))
    if person is None:
        raise AccountError(f"no user {username!r}")
    return person


def authenticate(session: Session, username: str, password: str) -> Person | None:
    """The person, if the password is right and the account active and not locked out.
    Failures are counted; the caller commits (and audits) either way."""
    person = session.scalar(select(Person).where(Person.username == username))
    now = utcnow()
    if person is None:
        password_matches(Person(), password)  # same time as a real account
        return None
    if person.locked_until is not None and person.locked_until > now:
        return None
    if not person.active or not password_matches(person, password):
        person.failed_logins += 1
        if person.failed_logins >= MAX_FAILED_LOGINS:
            person.locked_until, person.failed_logins = now + LOCKOUT, 0
        return None
    person.failed_logins, person.locked_until = 0, None
    if _hasher.check_needs_rehash(person.password_hash or ""):
        person.password_hash = _hasher.hash(password)
    return person


def reset_password(person: Person, password: str) -> None:
    person.password_hash = hash_password(password)
    person.failed_logins, person.locked_until = 0, None


def new_api_token(person: Person) -> str:
    """A token for the JSON API; only its hash is kept, so it is shown once."""
    token = secrets.token_urlsafe(32)
    person.api_token_sha256 = token_digest(token)
    return token


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def person_for_token(session: Session, token: str) -> Person | None:
    person = session.scalar(select(Person).where(Person.api_token_sha256 == token_digest(token)))
    return person if person is not None and person.active else None
