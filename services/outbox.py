"""Hands committed outbox rows to the queue; a sweeper re-sends rows the broker never took.

``publish`` is injected by the edge (the Celery adapter), so this module knows no broker.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from services.db.base import utcnow
from services.db.models import OutboxMessage
from services.db.session import transaction

log = logging.getLogger(__name__)

Publish = Callable[[str, list[Any]], None]


def add_message(session: Session, task_name: str, *args: Any) -> OutboxMessage:
    message = OutboxMessage(task_name=task_name, args=list(args))
    session.add(message)
    session.flush()
    return message


class OutboxDispatcher:
    def __init__(self, sessions: sessionmaker[Session], publish: Publish) -> None:
        self.sessions = sessions
        self.publish = publish

    def dispatch(self, ids: Iterable[int]) -> int:
        """Send the given rows now; a failure leaves them for the sweeper. Returns how many sent."""
        sent = 0
        for message_id in ids:
            sent += self._send_one(message_id)
        return sent

    def sweep(self, older_than: timedelta = timedelta(seconds=30), limit: int = 500) -> int:
        """Re-send rows still unsent after ``older_than`` (the broker was down, a process died)."""
        cutoff = utcnow() - older_than
        with self.sessions() as session:
            ids = session.scalars(
                select(OutboxMessage.id)
                .where(OutboxMessage.sent_at.is_(None))
                .where(or_(OutboxMessage.created_at < cutoff, OutboxMessage.attempts > 0))
                .order_by(OutboxMessage.id)
                .limit(limit)
            ).all()
        if ids:
            log.info("outbox sweeper re-sending %d message(s)", len(ids))
        return self.dispatch(ids)

    def _send_one(self, message_id: int) -> int:
        with transaction(self.sessions) as session:
            message = session.get(OutboxMessage, message_id)
            if message is None or message.sent_at is not None:
                return 0
            message.attempts += 1
            try:
                self.publish(message.task_name, list(message.args))
            except Exception as exc:  # the broker's errors are many and transport-specific
                message.last_error = f"{type(exc).__name__}: {exc}"[:500]
                log.warning("outbox %d not sent (%s); the sweeper will retry", message_id, exc)
                return 0
            message.sent_at = utcnow()
            message.last_error = None
            return 1


class BackgroundDispatch:
    """Hands outbox rows to the queue from one background thread, so a slow or absent broker
    never delays the reply to a sender; rows it cannot send stay for the sweeper."""

    def __init__(self, dispatcher: OutboxDispatcher) -> None:
        self.dispatcher = dispatcher
        self._pending: queue.Queue[int | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="outbox-dispatch", daemon=True)
        self._thread.start()

    def __call__(self, ids: Iterable[int]) -> None:
        for message_id in ids:
            self._pending.put(message_id)

    def _run(self) -> None:
        while (message_id := self._pending.get()) is not None:
            try:
                self.dispatcher.dispatch([message_id])
            except Exception:  # the database itself may be down: the sweeper catches up
                log.exception("outbox %d dispatch failed; left for the sweeper", message_id)

    def drain(self, timeout: float = 10.0) -> None:
        """Stop after sending what is queued (at shutdown)."""
        self._pending.put(None)
        self._thread.join(timeout)
