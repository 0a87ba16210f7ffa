"""The embedded profile's broker: kombu's SQLAlchemy transport on a SQLite file, tuned.

kombu passes every transport option to ``create_engine``, so the poll interval and the SQLite
settings are fixed here instead: a short poll for low latency, WAL and a busy timeout so the
gateway and several worker processes can share the file.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport.sqlalchemy import Channel as SqlaChannel
from kombu.transport.sqlalchemy import Transport as SqlaTransport
from sqlalchemy import create_engine, event

ALIAS = "eyescreen-sqlite"


def _pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # NORMAL, not FULL: in WAL mode a crashed process loses nothing, a crashed machine perhaps
    # the last messages, and those are re-sent: the outbox rows in the database are the
    # durable record (recovery re-queues work a lost message leaves undone).
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class Channel(SqlaChannel):
    def _engine_from_config(self):  # type: ignore[no-untyped-def]
        engine = create_engine(self.connection.client.hostname, connect_args={"timeout": 30})
        event.listen(engine, "connect", _pragmas)
        return engine


class Transport(SqlaTransport):
    Channel = Channel
    polling_interval = 0.05


def register() -> None:
    TRANSPORT_ALIASES[ALIAS] = "worker.embedded_broker:Transport"
