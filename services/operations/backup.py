"""Backup and restore of an installation: the database first, then the files it names.

A backup can be taken while the service runs. The database snapshot comes first (SQLite's
online backup, or ``pg_dump``, each a consistent point in time); every file a committed row
names was durable before that row committed, so the files copied afterwards include all of
them (files received later are copied too, and are harmless extras). The file stores are
content-addressed: a file's name is its sha256, so a copy is checked against its name and a
second backup into the same folder copies only new files.

Restoring puts the snapshot and the files back into a stopped installation. Work in flight at
the snapshot is found again by the usual recovery (unsent outbox rows are re-sent, expired
claims re-read); what was delivered before the snapshot is marked delivered and not sent again.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from services.kernel.settings import Settings
from services.kernel.storage import file_sha256, write_durably

log = logging.getLogger(__name__)

# The data folder's file stores, and single files worth keeping (the pseudonym key: without it,
# a restored installation would give every patient a new pseudonym in the study exports).
STORES = ("images", "reports", "heatmaps", "quarantine")
KEEP_FILES = ("study.key",)
SQLITE_NAME, DUMP_NAME, MANIFEST_NAME = "database.sqlite", "database.dump", "manifest.json"

Progress = Callable[[int], object]


class BackupError(Exception):
    """A backup or restore that cannot be done as asked; nothing was changed by a restore."""


@dataclass(frozen=True)
class Manifest:
    created_at: str
    database: str  # "sqlite" or "postgresql"
    schema_revision: str
    files: int
    bytes: int
    copied: int  # files new in this backup
    seconds: float


def create(settings: Settings, target: Path, progress: Progress | None = None) -> Manifest:
    """Back up the installation into ``target`` (made if absent; an earlier backup there is
    brought up to date)."""
    started = time.monotonic()
    target.mkdir(parents=True, exist_ok=True)
    url = settings.effective_database_url
    revision = schema_revision(url)
    if settings.is_embedded:
        _sqlite_snapshot(Path(make_url(url).database or ""), target / SQLITE_NAME)
    else:
        _pg_dump(url, target / DUMP_NAME)
    files = size = copied = 0
    for relative, source in _data_files(settings.data_path):
        destination = target / "files" / relative
        if _copy_checked(source, destination):
            copied += 1
        files += 1
        size += source.stat().st_size
        if progress:
            progress(1)
    manifest = Manifest(
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        database="sqlite" if settings.is_embedded else "postgresql",
        schema_revision=revision,
        files=files,
        bytes=size,
        copied=copied,
        seconds=round(time.monotonic() - started, 2),
    )
    manifest_bytes = json.dumps(asdict(manifest), indent=2).encode()
    write_durably(target / MANIFEST_NAME, manifest_bytes, prefix=".backup-")
    log.info("backup to %s: %d files (%d new), schema %s", target, files, copied, revision)
    return manifest


def restore(settings: Settings, source: Path, progress: Progress | None = None) -> Manifest:
    """Put a backup back into this installation, which must be stopped. Refuses a backup of
    the other database kind, and a pseudonym key that differs from one already here."""
    manifest = read_manifest(source)
    kind = "sqlite" if settings.is_embedded else "postgresql"
    if manifest.database != kind:
        raise BackupError(f"the backup holds a {manifest.database} database; this is {kind}")
    _check_key(settings.data_path, source / "files")
    settings.ensure_dirs()
    for relative, file in _data_files(source / "files"):
        _copy_checked(file, settings.data_path / relative)
        if progress:
            progress(1)
    url = settings.effective_database_url
    if settings.is_embedded:
        database = Path(make_url(url).database or "")
        for leftover in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
            leftover.unlink(missing_ok=True)
        _copy_file(source / SQLITE_NAME, database)
        # The embedded queue belonged to the state before: recovery rebuilds it from the rows.
        (settings.data_path / "broker.db").unlink(missing_ok=True)
    else:
        _pg_restore(source / DUMP_NAME, url)
    log.info("restored %s (schema %s) into %s", source, manifest.schema_revision, url)
    return manifest


def read_manifest(source: Path) -> Manifest:
    path = source / MANIFEST_NAME
    if not path.exists():
        raise BackupError(f"{source} holds no backup ({MANIFEST_NAME} missing)")
    return Manifest(**json.loads(path.read_text()))


def verify(source: Path) -> list[str]:
    """Problems found in a backup: content-addressed files whose bytes differ from their name."""
    return [
        str(relative)
        for relative, file in _data_files(source / "files")
        if _named_by_hash(relative) and file_sha256(file) != _hash_in_name(relative)
    ]


def schema_revision(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return str(connection.execute(text("SELECT version_num FROM alembic_version")).scalar())
    finally:
        engine.dispose()


def _data_files(root: Path) -> Iterator[tuple[Path, Path]]:
    for store in STORES:
        folder = root / store
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                if path.is_file() and not path.name.startswith(".incoming-"):
                    yield path.relative_to(root), path
    for name in KEEP_FILES:
        if (root / name).is_file():
            yield Path(name), root / name


def _copy_checked(source: Path, destination: Path) -> bool:
    """Copy unless the same file is there already; a content-addressed copy must match its
    name. Returns whether it copied."""
    if destination.exists() and destination.stat().st_size == source.stat().st_size:
        return False
    data = source.read_bytes()
    relative_name = Path(destination.parent.name) / destination.name
    if _named_by_hash(relative_name) and hashlib.sha256(data).hexdigest() != _hash_in_name(
        relative_name
    ):
        raise BackupError(f"{source}: content does not match its name (damaged)")
    write_durably(destination, data, prefix=".backup-")
    return True


def _named_by_hash(relative: Path) -> bool:
    stem = relative.name.split(".")[0]
    return len(stem) == 64 and all(c in "0123456789abcdef" for c in stem)


def _hash_in_name(relative: Path) -> str:
    return relative.name.split(".")[0]


def _copy_file(source: Path, destination: Path) -> None:
    write_durably(destination, source.read_bytes(), prefix=".backup-")


def _check_key(data_path: Path, files: Path) -> None:
    for name in KEEP_FILES:
        here, kept = data_path / name, files / name
        if here.exists() and kept.exists() and here.read_bytes() != kept.read_bytes():
            raise BackupError(
                f"{here} differs from the backup's: restoring would change every pseudonym; "
                "move it aside first if the backup's key is the right one"
            )


def _sqlite_snapshot(database: Path, destination: Path) -> None:
    """SQLite's online backup: a consistent copy while others write."""
    temporary = destination.with_name(f".{destination.name}.part")
    temporary.unlink(missing_ok=True)
    with sqlite3.connect(database) as live, sqlite3.connect(temporary) as copy:
        live.backup(copy)
    with temporary.open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, destination)


def _libpq(url: str) -> tuple[str, dict[str, str]]:
    """The libpq address of a SQLAlchemy URL, and the environment carrying its password (so
    it never appears in a process list)."""
    parsed = make_url(url)
    environment = dict(os.environ)
    if parsed.password:
        environment["PGPASSWORD"] = parsed.password
    plain = parsed.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), environment


def _pg_dump(url: str, destination: Path) -> None:
    address, environment = _libpq(url)
    temporary = destination.with_name(f".{destination.name}.part")
    _run(
        ["pg_dump", "--format=custom", "--no-owner", "--file", str(temporary), address],
        environment,
    )
    with temporary.open("rb+") as handle:
        os.fsync(handle.fileno())
    os.replace(temporary, destination)


def _pg_restore(dump: Path, url: str) -> None:
    address, environment = _libpq(url)
    _run(
        ["pg_restore", "--clean", "--if-exists", "--no-owner", "--dbname", address, str(dump)],
        environment,
    )


def _run(command: list[str], environment: dict[str, str]) -> None:
    if shutil.which(command[0]) is None:
        raise BackupError(f"{command[0]} is not installed (PostgreSQL client tools)")
    done = subprocess.run(command, env=environment, capture_output=True, text=True)
    if done.returncode != 0:
        raise BackupError(f"{command[0]} failed: {done.stderr.strip()[:500]}")
