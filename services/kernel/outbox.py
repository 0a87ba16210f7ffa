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

from sqlalchemy import ColumnElement, and_, false, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from services.db.base import utcnow
from services.db.models import OutboxMessage
from services.db.session import transaction

log = logging.getLogger(__name__)

Publish = Callable[[str, list[Any]], None]


def add_message(
    session: Session, task_name: str, *args: Any, held_by: str | None = None
) -> OutboxMessage:
    """An outbox row for a task, committed with the change that calls for it; ``held_by``: a
    worker that will do it at once itself (taken from the start, so that if the worker dies
    before it gets to it, the row is queued after the inline lease, not the resend grace)."""
    message = OutboxMessage(task_name=task_name, args=list(args))
    if held_by is not None:
        message.taken_at, message.taken_by = utcnow(), held_by
    session.add(message)
    session.flush()
    return message


class OutboxDispatcher:
    """Hands committed outbox rows to the broker and marks them sent; what the broker did not
    take stays unsent for the sweeper."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        publish: Publish,
        lease: timedelta = timedelta(seconds=30),
    ) -> None:
        self.sessions = sessions
        self.publish = publish
        self.lease = lease  # a row taken for inline work longer ago than this was abandoned

    def _free(self) -> ColumnElement[bool]:
        """Rows no live worker holds: never taken, or taken longer ago than the lease."""
        return or_(OutboxMessage.taken_at.is_(None), OutboxMessage.taken_at < utcnow() - self.lease)

    def dispatch(self, ids: Iterable[int]) -> int:
        """Send the given rows now, in one transaction; a failure leaves the rest for the
        sweeper. Returns how many were sent. A row published but not marked (the commit
        failed) is sent again later: every task is idempotent."""
        wanted = sorted(set(ids))
        if not wanted:
            return 0
        sent = 0
        with transaction(self.sessions) as session:
            messages = session.scalars(
                select(OutboxMessage)
                .where(OutboxMessage.id.in_(wanted), OutboxMessage.sent_at.is_(None))
                .where(self._free())
                .order_by(OutboxMessage.id)
            ).all()
            for message in messages:
                message.attempts += 1
                try:
                    self.publish(message.task_name, list(message.args))
                except Exception as exc:  # the broker's errors are many and transport-specific
                    message.last_error = f"{type(exc).__name__}: {exc}"[:500]
                    log.warning("outbox %d not sent (%s); the sweeper will retry", message.id, exc)
                    break  # the broker is down: the rest would fail the same way
                message.sent_at = utcnow()
                message.last_error = None
                sent += 1
        return sent

    def sweep(self, older_than: timedelta = timedelta(seconds=30), limit: int = 500) -> int:
        """Re-send rows still unsent after ``older_than`` (the broker was down, a process died)
        and rows taken for inline work by a worker that has not finished them within the lease
        (it was killed: the work is queued again, within a lease and a sweep of the kill)."""
        cutoff = utcnow() - older_than
        with self.sessions() as session:
            ids = session.scalars(
                select(OutboxMessage.id)
                .where(OutboxMessage.sent_at.is_(None))
                .where(
                    or_(
                        and_(  # never taken: the broker did not take it
                            OutboxMessage.taken_at.is_(None),
                            or_(OutboxMessage.created_at < cutoff, OutboxMessage.attempts > 0),
                        ),
                        OutboxMessage.taken_at < utcnow() - self.lease,  # its worker died
                    )
                )
                .order_by(OutboxMessage.id)
                .limit(limit)
            ).all()
        if ids:
            log.info("outbox sweeper re-sending %d message(s)", len(ids))
        return self.dispatch(ids)


def take(
    sessions: sessionmaker[Session], message_id: int, worker: str | None = None
) -> tuple[str, list[Any]] | None:
    """Claim an unsent row to do its work in this process (``taken_at``, so that it is not
    also queued); None if it was sent or taken already (by another than ``worker``).
    ``finish`` marks it done; work taken and then lost to a crash is queued by the sweeper
    once the lease has run out."""
    mine = OutboxMessage.taken_by == worker if worker is not None else false()
    with transaction(sessions) as session:
        taken = session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.id == message_id,
                OutboxMessage.sent_at.is_(None),
                or_(OutboxMessage.taken_at.is_(None), mine),
            )
            .values(taken_at=utcnow(), taken_by=worker)
        )
        if taken.rowcount != 1:  # type: ignore[attr-defined]
            return None
        message = session.get_one(OutboxMessage, message_id)
        return message.task_name, list(message.args)


def finish(sessions: sessionmaker[Session], message_ids: Iterable[int]) -> None:
    """The taken rows' work is done here: mark them sent, so no sweeper queues them."""
    ids = list(message_ids)
    if not ids:
        return
    with transaction(sessions) as session:
        session.execute(
            update(OutboxMessage).where(OutboxMessage.id.in_(ids)).values(sent_at=utcnow())
        )


def give_back(sessions: sessionmaker[Session], message_id: int) -> None:
    """Undo ``take``: the row is free again, for the queue."""
    with transaction(sessions) as session:
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == message_id)
            .values(taken_at=None, taken_by=None)
        )


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
        stopping = False
        while not stopping:
            batch = [self._pending.get()]
            while len(batch) < 200:  # whatever queued up meanwhile goes in the same transaction
                try:
                    batch.append(self._pending.get_nowait())
                except queue.Empty:
                    break
            stopping = None in batch
            ids = [i for i in batch if i is not None]
            try:
                self.dispatcher.dispatch(ids)
            except Exception:  # the database itself may be down: the sweeper catches up
                log.exception("dispatch of %d outbox row(s) failed; left for the sweeper", len(ids))

    def drain(self, timeout: float = 10.0) -> None:
        """Stop after sending what is queued (at shutdown)."""
        self._pending.put(None)
        self._thread.join(timeout)
