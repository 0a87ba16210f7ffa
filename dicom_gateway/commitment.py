"""Storage Commitment, push model (PS3.4 J): we are its SCU.

After the C-STOREs of a delivery, the sender asks the PACS, on the same association, to commit
what it stored (N-ACTION, action type 1, with a fresh Transaction UID). The PACS answers by
N-EVENT-REPORT (event type 1: all committed; 2: some failed) on that association while it is
open, or later on an association it opens to the gateway; both are translated here into a
``CommitmentResult`` for ``services.reporting.commitment``. A destination that does not accept
the Storage Commitment context is simply not asked (its deliveries stay merely delivered)."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Callable, Iterable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, events
from pynetdicom.association import Association
from sqlalchemy.orm import Session, sessionmaker

from dicom_gateway.conformance import STORAGE_COMMITMENT_SOP_CLASS
from services.kernel.settings import DicomNode, DicomSource
from services.reporting.commitment import CommitmentResult, settle

log = logging.getLogger(__name__)

STORAGE_COMMITMENT_INSTANCE = "1.2.840.10008.1.20.1.1"  # its well-known SOP instance
REQUEST_COMMIT = 1  # N-ACTION Action Type ID
ALL_COMMITTED, SOME_FAILED = 1, 2  # N-EVENT-REPORT Event Type IDs

# N-EVENT-REPORT response statuses (PS3.7 10.1.1.1.8)
SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110
NO_SUCH_EVENT_TYPE = 0x0113

Record = Callable[[CommitmentResult], object]


def accepts_commitment(assoc: Association) -> bool:
    return any(
        str(c.abstract_syntax) == STORAGE_COMMITMENT_SOP_CLASS for c in assoc.accepted_contexts
    )


def request_commitment(
    assoc: Association, stored: Iterable[Dataset], transaction_uid: str | None = None
) -> str | None:
    """Ask the PACS to commit these data sets; their Transaction UID, or None where the PACS
    does not support Storage Commitment or refused the request."""
    if not accepts_commitment(assoc):
        return None
    request = Dataset()
    request.TransactionUID = transaction_uid or generate_uid()
    refs = []
    for ds in stored:
        ref = Dataset()
        ref.ReferencedSOPClassUID = ds.SOPClassUID
        ref.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        refs.append(ref)
    if not refs:
        return None
    request.ReferencedSOPSequence = refs
    status, _ = assoc.send_n_action(
        request, REQUEST_COMMIT, STORAGE_COMMITMENT_SOP_CLASS, STORAGE_COMMITMENT_INSTANCE
    )
    code = int(status.Status) if status is not None and "Status" in status else None
    if code != SUCCESS:
        log.warning("storage commitment request refused by the PACS (status %s)", code)
        return None
    return str(request.TransactionUID)


def result_of(info: Dataset) -> CommitmentResult:
    """The result an N-EVENT-REPORT's Event Information carries."""

    def uids(keyword: str) -> tuple[str, ...]:
        return tuple(str(item.ReferencedSOPInstanceUID) for item in info.get(keyword, []))

    return CommitmentResult(
        str(info.TransactionUID), uids("ReferencedSOPSequence"), uids("FailedSOPSequence")
    )


def handle_commitment_report(event: events.Event, record: Record) -> tuple[int, None]:
    """N-EVENT-REPORT of a Storage Commitment result: record it, then answer; a result that
    cannot be recorded is answered with a failure, so the PACS sends it again."""
    if str(event.request.AffectedSOPClassUID) != STORAGE_COMMITMENT_SOP_CLASS:
        return PROCESSING_FAILURE, None
    if event.event_type not in (ALL_COMMITTED, SOME_FAILED):
        return NO_SUCH_EVENT_TYPE, None
    try:
        result = result_of(event.event_information)
        record(result)
    except Exception:  # the database may be down: the PACS retries its report
        log.exception(
            "storage commitment report from %s not recorded", event.assoc.requestor.ae_title
        )
        return PROCESSING_FAILURE, None
    return SUCCESS, None


def settle_commitment(
    sessions: sessionmaker[Session],
    dispatch: Callable[[Iterable[int]], object],
    result: CommitmentResult,
) -> None:
    """The gateway's recorder: settle the deliveries, then queue the re-sends it asks for."""
    dispatch(settle(sessions, result))


def collect_reports(into: list[CommitmentResult]) -> list[Any]:
    """Handlers for an SCU association: a result the PACS sends on it is kept in ``into``."""
    from pynetdicom import evt

    return [(evt.EVT_N_EVENT_REPORT, handle_commitment_report, [into.append])]


def commitment_peers(destinations: Iterable[DicomNode]) -> list[DicomSource]:
    """The report destinations as callers the association check admits: a PACS opens an
    association to send its commitment results (bound to its address when it is an IP)."""
    peers = []
    for node in destinations:
        try:
            ipaddress.ip_address(node.host)
            addresses = frozenset({node.host})
        except ValueError:  # a host name: the AE title alone
            addresses = frozenset()
        peers.append(DicomSource(node.ae_title, "auto", addresses))
    return peers


def add_report_context(ae: AE) -> None:
    """Let the PACS open an association to send results: it proposes the Storage Commitment
    context with itself in the SCP role (role selection), which the gateway accepts."""
    ae.add_supported_context(STORAGE_COMMITMENT_SOP_CLASS, scu_role=True, scp_role=True)
