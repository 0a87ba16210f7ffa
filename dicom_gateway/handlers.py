"""DIMSE and association handlers: translate between DICOM and the services, never raise.

Dependencies are bound in through ``evt_handlers`` arguments, not globals. Logs name SOP
Instance UIDs, AE titles, addresses and statuses, never patient attributes.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from pydicom.dataset import Dataset
from pynetdicom import events
from pynetdicom.dimse_primitives import C_STORE

from dicom_gateway import statuses as st
from dicom_gateway.guard import DecodeTimeout
from dicom_gateway.inspection import BadPixels, DatasetMismatch, Inspected, TooLarge, Unreadable
from services.intake.ingest import IngestResult, ReceivedImage
from services.intake.routing import Router, RoutingFacts
from services.intake.sites import SourceSites
from services.kernel.errors import InstanceConflict, InstanceRejected, NoRoute, OutOfResources
from services.kernel.metrics import C_STORES
from services.kernel.settings import DicomSource

log = logging.getLogger(__name__)

# Reject reasons (PS3.8 9.3.4): permanent, service user, calling AE title not recognised.
_REJECT_CALLING_AE = (0x01, 0x01, 0x03)


@dataclass(frozen=True)
class StoreContext:
    accept: Callable[[ReceivedImage], IngestResult]  # IngestService.accept or a GroupCommit's
    dispatch: Callable[[Iterable[int]], object]
    router: Router
    inspect: Callable[[bytes], Inspected]
    max_dataset_bytes: int = 512 << 20
    urgent_sources: frozenset[str] = frozenset()
    sites: SourceSites = field(default_factory=SourceSites)  # which clinic each source is


def _status(code: int, comment: str) -> Dataset:
    C_STORES.labels(status=f"0x{code:04X}").inc()
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]  # LO: 64 characters
    return status


def handle_requested(event: events.Event, sources: list[DicomSource]) -> None:
    """With sources configured, refuse an association from any other AE title or address."""
    if not sources:
        return
    request = event.assoc.requestor.primitive  # requestor.ae_title is set only after this event
    calling = (request.calling_ae_title if request else "").strip()
    address = event.assoc.requestor.address
    if any(s.ae_title == calling and s.admits(address) for s in sources):
        return
    log.warning("association from %s at %s refused: not a configured source", calling, address)
    event.assoc.acse.send_reject(*_REJECT_CALLING_AE)
    # pynetdicom closes the socket right after this handler returns; let the reject PDU go first.
    dul = event.assoc.dul
    deadline = time.monotonic() + 2.0
    while not dul.to_provider_queue.empty() and time.monotonic() < deadline:
        time.sleep(0.005)
    time.sleep(0.05)


def handle_echo(event: events.Event) -> int:
    return st.SUCCESS


# Exception -> status, first match wins (subclasses before their bases).
_REFUSALS: tuple[tuple[type[Exception], int], ...] = (
    (DatasetMismatch, st.DATASET_MISMATCH),
    (NoRoute, st.NO_ROUTE),
    (InstanceConflict, st.CONFLICT),
    (TooLarge, st.TOO_LARGE),
    (DecodeTimeout, st.DECODE_TIMEOUT),
    (BadPixels, st.BAD_PIXELS),
    (Unreadable, st.CANNOT_UNDERSTAND),
    (InstanceRejected, st.CANNOT_UNDERSTAND),
    (OutOfResources, st.OUT_OF_RESOURCES),
)


def handle_store(event: events.Event, context: StoreContext) -> int | Dataset:
    """C-STORE: check the data set in a guarded process, route it, keep it durably, answer.

    Success is answered only after the file is fsynced and its row committed; every refusal is
    a DICOM failure status with an Error Comment (``statuses.py``), never an exception."""
    request = event.request
    assert isinstance(request, C_STORE)
    uid = str(request.AffectedSOPInstanceUID)
    calling_ae = event.assoc.requestor.ae_title.strip()
    try:
        encoded = event.encoded_dataset()
        if len(encoded) > context.max_dataset_bytes:
            raise TooLarge(f"data set of {len(encoded) >> 20} MiB is over the limit")
        image = context.inspect(encoded)
        _check_matches_request(image, request)
        route = context.router.route(_facts(image, calling_ae))
        received = _received(image, event, route, calling_ae, encoded)
        if calling_ae in context.urgent_sources:
            received = replace(received, urgent=True)
        site = context.sites.site_of(calling_ae, image.station_name, event.assoc.requestor.address)
        if site:
            received = replace(received, site=site)
        result = context.accept(received)
    except Exception as exc:
        return _refusal(uid, exc)
    if result.duplicate:
        log.info("C-STORE %s already stored, acknowledged", uid)
    else:
        log.info("C-STORE %s stored as instance %d (%s)", uid, result.instance_id, route)
        context.dispatch(result.outbox_ids)
    C_STORES.labels(status="0x0000").inc()
    return st.SUCCESS


def _refusal(uid: str, exc: Exception) -> Dataset:
    for kind, code in _REFUSALS:
        if isinstance(exc, kind):
            level = logging.ERROR if code == st.OUT_OF_RESOURCES else logging.WARNING
            log.log(level, "C-STORE %s refused 0x%04X: %s", uid, code, exc)
            return _status(code, str(exc))
    log.exception("C-STORE %s failed 0x%04X (unexpected)", uid, st.PROCESSING_FAILURE)
    return _status(st.PROCESSING_FAILURE, f"internal error: {type(exc).__name__}")


def _check_matches_request(image: Inspected, request: C_STORE) -> None:
    if image.sop_class_uid != str(request.AffectedSOPClassUID):
        raise DatasetMismatch("SOP Class UID of the data set differs from the C-STORE request")
    if image.sop_instance_uid != str(request.AffectedSOPInstanceUID):
        raise DatasetMismatch("SOP Instance UID of the data set differs from the C-STORE request")


def _facts(image: Inspected, calling_ae: str) -> RoutingFacts:
    return RoutingFacts(
        calling_ae=calling_ae,
        station_name=image.station_name,
        device_type=image.device_type,
        anatomic_region=image.anatomic_region,
        sop_class_uid=image.sop_class_uid,
    )


def _received(
    image: Inspected, event: events.Event, route: str, calling_ae: str, encoded: bytes
) -> ReceivedImage:
    return ReceivedImage(
        sop_instance_uid=image.sop_instance_uid,
        sop_class_uid=image.sop_class_uid,
        study_instance_uid=image.study_instance_uid,
        series_instance_uid=image.series_instance_uid,
        transfer_syntax_uid=str(event.context.transfer_syntax),
        route=route,
        encoded=encoded,
        patient_id=image.patient_id,
        issuer=image.issuer,
        patient_name=image.patient_name,
        birth_date=image.birth_date,
        sex=image.sex,
        study_date=image.study_date,
        accession_number=image.accession_number,
        laterality=image.laterality,
        calling_ae=calling_ae,
    )
