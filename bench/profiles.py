"""The two deployment profiles a benchmark measures side by side: ``embedded`` (SQLite database
and SQLite broker under the run's folder) and ``postgres-redis`` (a fresh PostgreSQL database
and an emptied Redis database for each run). PostgreSQL and Redis are the local ones unless
EYESCREEN_BENCH_DATABASE_URL (any database on the server: a new one is made beside it) and
EYESCREEN_BENCH_REDIS_URL say otherwise (bench/servers.sh sets both)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

PROFILES = ("embedded", "postgres-redis")
CHOICES = (*PROFILES, "both")
SERVER_URL = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/13"


def chosen(choice: str) -> list[str]:
    return list(PROFILES) if choice == "both" else [choice]


@contextmanager
def profile_env(profile: str) -> Iterator[dict[str, str]]:
    """The service's environment for ``profile``; for postgres-redis a new database, dropped
    afterwards, and the Redis database emptied before and after."""
    if profile == "embedded":
        yield {}
        return
    import redis
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(os.environ.get("EYESCREEN_BENCH_DATABASE_URL", SERVER_URL))
    broker = os.environ.get("EYESCREEN_BENCH_REDIS_URL", REDIS_URL)
    name = f"bench_{uuid.uuid4().hex[:12]}"
    engine = create_engine(server, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    queue = redis.Redis.from_url(broker)
    queue.flushdb()
    try:
        url = server.set(database=name).render_as_string(hide_password=False)
        yield {"EYESCREEN_DATABASE_URL": url, "EYESCREEN_BROKER_URL": broker}
    finally:
        queue.flushdb()
        with engine.connect() as conn:
            conn.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": name},
            )
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
        engine.dispose()
