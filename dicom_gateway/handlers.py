"""DIMSE handlers: translate between DICOM and the ingest service, return a status, never raise.

Dependencies are bound in through ``evt_handlers`` arguments, not globals.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import events
from pynetdicom.dimse_primitives import C_STORE

from dicom_gateway.reading import SopClassMismatch, check_identity, laterality, routing_facts, text
from services.errors import InstanceConflict, InstanceRejected, NoRoute, OutOfResources
from services.ingest import IngestService, ReceivedImage
from services.outbox import OutboxDispatcher
from services.routing import Router

log = logging.getLogger(__name__)

SUCCESS = 0x0000
OUT_OF_RESOURCES = 0xA700
DATASET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
NO_ROUTE = 0xC001
CONFLICT = 0xC002
PROCESSING_FAILURE = 0x0110


@dataclass(frozen=True)
class StoreContext:
    ingest: IngestService
    dispatcher: OutboxDispatcher
    router: Router


def _status(code: int, comment: str) -> Dataset:
    status = Dataset()
    status.Status = code
    status.ErrorComment = comment[:64]  # LO: 64 characters
    return status


def handle_echo(event: events.Event) -> int:
    return SUCCESS


def handle_store(event: events.Event, context: StoreContext) -> int | Dataset:
    request = event.request
    assert isinstance(request, C_STORE)
    uid = str(request.AffectedSOPInstanceUID)
    calling_ae = event.assoc.requestor.ae_title
    try:
        ds = event.dataset
        check_identity(ds, str(request.AffectedSOPClassUID), uid)
        route = context.router.route(routing_facts(ds, calling_ae))
        image = _received(event, ds, route, calling_ae)
        result = context.ingest.accept(image)
    except SopClassMismatch as exc:
        log.warning("C-STORE %s refused 0xA900: %s", uid, exc)
        return _status(DATASET_DOES_NOT_MATCH, str(exc))
    except NoRoute as exc:
        log.warning("C-STORE %s refused 0xC001: no route", uid)
        return _status(NO_ROUTE, str(exc))
    except InstanceConflict as exc:
        log.warning("C-STORE %s refused 0xC002: %s", uid, exc)
        return _status(CONFLICT, str(exc))
    except InstanceRejected as exc:
        log.warning("C-STORE %s refused 0xC000: %s", uid, exc)
        return _status(CANNOT_UNDERSTAND, str(exc))
    except OutOfResources as exc:
        log.error("C-STORE %s refused 0xA700 (sender keeps it): %s", uid, exc)
        return _status(OUT_OF_RESOURCES, str(exc))
    except Exception as exc:  # a malformed data set can raise almost anything while decoding
        log.warning("C-STORE %s unreadable 0xC000: %s", uid, type(exc).__name__)
        return _status(CANNOT_UNDERSTAND, f"unreadable data set: {type(exc).__name__}")
    if result.duplicate:
        log.info("C-STORE %s already stored, acknowledged", uid)
    else:
        log.info("C-STORE %s stored as instance %d (%s)", uid, result.instance_id, route)
        context.dispatcher.dispatch(result.outbox_ids)
    return SUCCESS


def _received(event: events.Event, ds: Dataset, route: str, calling_ae: str) -> ReceivedImage:
    return ReceivedImage(
        sop_instance_uid=text(ds, "SOPInstanceUID"),
        sop_class_uid=text(ds, "SOPClassUID"),
        study_instance_uid=text(ds, "StudyInstanceUID"),
        series_instance_uid=text(ds, "SeriesInstanceUID"),
        transfer_syntax_uid=str(event.context.transfer_syntax),
        route=route,
        encoded=event.encoded_dataset(),
        patient_id=text(ds, "PatientID"),
        issuer=text(ds, "IssuerOfPatientID"),
        patient_name=text(ds, "PatientName", 324),
        birth_date=text(ds, "PatientBirthDate", 8),
        sex=text(ds, "PatientSex", 16),
        study_date=text(ds, "StudyDate", 8),
        accession_number=text(ds, "AccessionNumber", 16),
        laterality=laterality(ds),
        calling_ae=calling_ae.strip(),
    )
