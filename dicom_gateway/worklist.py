"""Modality Worklist SCU: asks the department's worklist who is scheduled for screening on a
day (C-FIND, Modality Worklist Information Model) and translates the answers into
``services.workflow.WorklistItem``. ``fetch_into`` keeps them as the site's expected visits.
Logs name the worklist and counts, never patient attributes."""

from __future__ import annotations

import logging
import ssl
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import date

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pynetdicom import AE
from sqlalchemy.orm import Session, sessionmaker

from dicom_gateway.conformance import WORKLIST_FIND_SOP_CLASS
from services.db.session import transaction
from services.kernel.settings import DicomNode, Settings
from services.workflow import WorklistItem, match_visits, record_worklist

log = logging.getLogger(__name__)

_PENDING = (0xFF00, 0xFF01)


class WorklistUnavailable(Exception):
    """The worklist refused the association, was unreachable, or answered a failure."""


def query_identifier(day: str, modality: str, station_ae: str) -> Dataset:
    """The C-FIND identifier: matching keys (day, modality, station) and the return keys."""
    step = Dataset()
    step.Modality = modality
    step.ScheduledStationAETitle = station_ae
    step.ScheduledProcedureStepStartDate = day
    step.ScheduledProcedureStepStartTime = ""
    step.ScheduledProcedureStepID = ""
    step.ScheduledProtocolCodeSequence = Sequence([])
    ds = Dataset()
    ds.PatientName = ""
    ds.PatientID = ""
    ds.IssuerOfPatientID = ""
    ds.AccessionNumber = ""
    ds.StudyInstanceUID = ""
    ds.RequestedProcedureID = ""
    ds.RequestedProcedureCodeSequence = Sequence([])
    ds.ScheduledProcedureStepSequence = Sequence([step])
    return ds


def _code(ds: Dataset, keyword: str) -> str:
    items = ds.get(keyword) or []
    return str(items[0].get("CodeValue", "")) if items else ""


def to_item(ds: Dataset) -> WorklistItem:
    """One worklist answer as the domain sees it (missing attributes read as empty)."""
    steps = ds.get("ScheduledProcedureStepSequence") or []
    step = steps[0] if steps else Dataset()
    return WorklistItem(
        scheduled_date=str(step.get("ScheduledProcedureStepStartDate", "") or ""),
        scheduled_time=str(step.get("ScheduledProcedureStepStartTime", "") or "")[:16],
        accession_number=str(ds.get("AccessionNumber", "") or ""),
        study_instance_uid=str(ds.get("StudyInstanceUID", "") or ""),
        requested_procedure_id=str(ds.get("RequestedProcedureID", "") or ""),
        step_id=str(step.get("ScheduledProcedureStepID", "") or ""),
        patient_id=str(ds.get("PatientID", "") or ""),
        issuer=str(ds.get("IssuerOfPatientID", "") or ""),
        patient_name=str(ds.get("PatientName", "") or ""),
        modality=str(step.get("Modality", "") or ""),
        station_ae=str(step.get("ScheduledStationAETitle", "") or ""),
        procedure_code=_code(step, "ScheduledProtocolCodeSequence")
        or _code(ds, "RequestedProcedureCodeSequence"),
    )


def query_worklist(
    node: DicomNode,
    calling_ae: str,
    day: str,
    modality: str = "OP",
    station_aes: Iterable[str] = (),
    procedure_codes: Iterable[str] = (),
    tls: ssl.SSLContext | None = None,
) -> list[WorklistItem]:
    """The day's scheduled steps (of the modality, at the stations, with the procedure codes,
    each where given), once each; ``WorklistUnavailable`` if the worklist cannot answer."""
    ae = AE(ae_title=calling_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(WORKLIST_FIND_SOP_CLASS)
    tls_args = (tls, node.host) if node.tls and tls is not None else None
    assoc = ae.associate(node.host, node.port, ae_title=node.ae_title, tls_args=tls_args)
    if not assoc.is_established:
        raise WorklistUnavailable(f"association with worklist {node} refused or unreachable")
    found: dict[str, WorklistItem] = {}
    try:
        for station in list(station_aes) or [""]:
            for status, identifier in assoc.send_c_find(
                query_identifier(day, modality, station), WORKLIST_FIND_SOP_CLASS
            ):
                code = int(status.Status) if "Status" in status else None
                if code is None:
                    raise WorklistUnavailable(f"worklist {node} gave no answer (timeout or abort)")
                if code in _PENDING and identifier is not None:
                    item = to_item(identifier)
                    found.setdefault(item.key, item)
                elif code not in _PENDING and code != 0x0000:
                    raise WorklistUnavailable(f"worklist {node} answered 0x{code:04X}")
    finally:
        assoc.release()
    codes = set(procedure_codes)
    return [item for item in found.values() if not codes or item.procedure_code in codes]


def fetch_into(
    settings: Settings, sessions: sessionmaker[Session], day: str | None = None
) -> dict[str, tuple[int, int]]:
    """Fetch each configured worklist's day (today by default) into the site's expected
    visits and match them to the studies already here; returns (new, updated) per worklist.
    A worklist that cannot answer is logged and skipped: the others still count."""
    day = day or date.today().strftime("%Y%m%d")
    counts: dict[str, tuple[int, int]] = {}
    for node in settings.worklist_sources:
        try:
            items = query_worklist(
                node,
                settings.ae_title,
                day,
                settings.worklist_modality,
                settings.worklist_station_aes,
                settings.worklist_procedure_codes,
            )
        except (WorklistUnavailable, OSError, RuntimeError, ValueError) as exc:
            log.error("worklist %s not fetched: %s", node, exc)
            continue
        with transaction(sessions) as session:
            counts[str(node)] = record_worklist(session, settings.site, str(node), items)
            match_visits(session, settings.site)
        log.info("worklist %s, %s: %d new, %d updated", node, day, *counts[str(node)])
    return counts


@dataclass
class WorklistSchedule:
    """Fetches today's worklists every ``worklist_every_minutes`` (called from the gateway's
    sweep loop; the first call fetches at once)."""

    settings: Settings
    sessions: sessionmaker[Session]
    _next: float = field(default=0.0, init=False)

    def tick(self) -> None:
        if not self.settings.worklist_sources or time.monotonic() < self._next:
            return
        self._next = time.monotonic() + self.settings.worklist_every_minutes * 60
        fetch_into(self.settings, self.sessions)
