"""Group commit: rows of images arriving together on several associations share one commit.

Each association's thread stores its file (fsync in parallel with the others) and hands the
image to one writer thread, which records whatever has queued up meanwhile in one transaction
and wakes every sender with its own result. With SQLite, which takes one writer at a time and
fsyncs every commit, this turns N commits into one; the promise is unchanged: a sender hears
success only after its file and its rows are durable.
"""

from __future__ import annotations

import logging
import queue
import threading
from concurrent.futures import Future

from services.intake.ingest import IngestResult, IngestService, ReceivedImage
from services.kernel.errors import OutOfResources
from services.kernel.storage import StoredFile

log = logging.getLogger(__name__)

_Pending = tuple[ReceivedImage, StoredFile, "Future[IngestResult]"]


class GroupCommit:
    """``accept`` with the same contract as ``IngestService.accept``, committed in groups."""

    def __init__(self, ingest: IngestService, max_group: int = 32, wait_s: float = 120.0) -> None:
        self.ingest = ingest
        self.max_group = max_group
        self.wait_s = wait_s  # a sender gives up (and answers a failure) after this long
        self._pending: queue.Queue[_Pending | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="ingest-writer", daemon=True)
        self._thread.start()

    def accept(self, image: ReceivedImage) -> IngestResult:
        if self.max_group == 1:
            return self.ingest.accept(image)
        stored = self.ingest.keep_file(image)  # in the sender's thread: fsyncs overlap
        outcome: Future[IngestResult] = Future()
        self._pending.put((image, stored, outcome))
        try:
            return outcome.result(timeout=self.wait_s)
        except TimeoutError as exc:  # the row may still commit: the sender re-sends, a duplicate
            raise OutOfResources("the database did not record the image in time") from exc

    def close(self, timeout: float = 10.0) -> None:
        """Record what is queued, then stop the writer."""
        self._pending.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            first = self._pending.get()
            if first is None:
                return
            group = [first]
            stopping = False
            while len(group) < self.max_group:
                try:
                    more = self._pending.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    stopping = True
                    break
                group.append(more)
            self._record(group)
            if stopping:
                return

    def _record(self, group: list[_Pending]) -> None:
        try:
            outcomes = self.ingest.record_group([(image, stored) for image, stored, _ in group])
        except Exception as exc:  # record_group answers per image; this is a last resort
            log.exception("recording a group of %d failed", len(group))
            outcomes = [exc] * len(group)
        for (_, _, future), outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, Exception):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
