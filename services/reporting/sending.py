"""What delivering a report to a destination takes and gives: the sender's and the PACS
query's signatures (injected from ``reports`` and ``dicom_gateway``), the error a failed attempt
raises and the outcome of one attempt."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from services.db.models import DeliveryState
from services.reporting.commitment import CommitmentResult


@dataclass(frozen=True)
class Sent:
    """What a sender did besides storing: the Transaction UID of the Storage Commitment it
    requested (None where the destination does not support it), and any commitment results
    the PACS sent back on the same association."""

    commitment_uid: str | None = None
    results: tuple[CommitmentResult, ...] = ()


# Sends several deliveries' objects (each an SR, perhaps with its PDF) to one destination over
# one association, in order, then asks for Storage Commitment under the Transaction UID given
# (recorded before the association, so that a result that comes at once finds its deliveries);
# raises DeliveryError saying how many deliveries went whole.
SendReport = Callable[[Sequence[Sequence[bytes]], str, str], "Sent | None"]
# Which of these SOP Instance UIDs the destination holds (C-FIND); None where it cannot tell.
# Raises DeliveryError when the destination cannot be reached.
AskPacs = Callable[[Sequence[str], str], "set[str] | None"]


class DeliveryError(Exception):
    """A delivery that failed: connection refused, timeout, or a failure status; ``sent``
    deliveries of the association's went whole before it; ``unknown``: the next one's C-STORE
    went out and no answer came (the PACS may have kept it)."""

    def __init__(
        self, message: str, status: int | None = None, sent: int = 0, unknown: bool = False
    ) -> None:
        super().__init__(message)
        self.status = status
        self.sent = sent
        self.unknown = unknown


@dataclass(frozen=True)
class DeliveryOutcome:
    """What one delivery attempt gave."""

    state: DeliveryState
    retry_in_s: float | None = None
    error: str | None = None
