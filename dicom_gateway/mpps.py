"""Modality Performed Procedure Step SCP (N-CREATE, N-SET): the camera says when acquisition
ends. The handlers translate the data sets into ``services.workflow.StepReport`` and the
service's refusals into the statuses of PS3.4 F.7.2; they never raise. Logs name the step's
SOP Instance UID and the calling AE, never patient attributes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import events, evt
from pynetdicom.dimse_primitives import N_CREATE, N_SET

from services.db.models import StepStatus
from services.workflow import PerformedSteps, StepError, StepProblem, StepReport

log = logging.getLogger(__name__)

SUCCESS = 0x0000
PROCESSING_FAILURE = 0x0110  # also: "Performed Procedure Step Object may no longer be updated"
INVALID_ATTRIBUTE_VALUE = 0x0106
DUPLICATE_INSTANCE = 0x0111
NO_SUCH_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120

MEANINGS: dict[int, str] = {
    SUCCESS: "Success: the step is recorded (COMPLETED closes its visit)",
    PROCESSING_FAILURE: "Failure: the step is already final and may no longer be updated",
    INVALID_ATTRIBUTE_VALUE: "Failure: a status not allowed (N-CREATE must be IN PROGRESS)",
    DUPLICATE_INSTANCE: "Failure: N-CREATE of a step that already exists",
    NO_SUCH_INSTANCE: "Failure: N-SET of a step never created",
    MISSING_ATTRIBUTE: "Failure: N-CREATE without an Affected SOP Instance UID",
}

_STATUS_OF: dict[StepProblem, int] = {
    StepProblem.DUPLICATE: DUPLICATE_INSTANCE,
    StepProblem.UNKNOWN: NO_SUCH_INSTANCE,
    StepProblem.FINAL: PROCESSING_FAILURE,
    StepProblem.BAD_STATUS: INVALID_ATTRIBUTE_VALUE,
}

_STEP_STATUS = {
    "IN PROGRESS": StepStatus.IN_PROGRESS,
    "COMPLETED": StepStatus.COMPLETED,
    "DISCONTINUED": StepStatus.DISCONTINUED,
}


@dataclass(frozen=True)
class StepContext:
    steps: PerformedSteps
    dispatch: Callable[[Iterable[int]], object]


def _text(ds: Dataset, keyword: str) -> str | None:
    return str(ds.get(keyword, "") or "").strip() if keyword in ds else None


def step_report(ds: Dataset) -> StepReport:
    """The attributes of an N-CREATE attribute list or N-SET modification list that matter."""
    status = _text(ds, "PerformedProcedureStepStatus")
    if status is not None and status not in _STEP_STATUS:
        raise StepError(StepProblem.BAD_STATUS, f"unknown step status {status!r}")
    scheduled = ds.get("ScheduledStepAttributesSequence") or []
    first = scheduled[0] if scheduled else Dataset()
    referenced: tuple[str, ...] | None = None
    if "PerformedSeriesSequence" in ds:
        referenced = tuple(
            str(image.ReferencedSOPInstanceUID)
            for series in ds.PerformedSeriesSequence
            for image in series.get("ReferencedImageSequence") or []
            if "ReferencedSOPInstanceUID" in image
        )
    reason = None
    if ds.get("PerformedProcedureStepDiscontinuationReasonCodeSequence"):
        code = ds.PerformedProcedureStepDiscontinuationReasonCodeSequence[0]
        reason = f"{code.get('CodeValue', '')} {code.get('CodeMeaning', '')}".strip()
    return StepReport(
        status=_STEP_STATUS[status] if status else None,
        study_instance_uid=_text(first, "StudyInstanceUID"),
        accession_number=_text(first, "AccessionNumber"),
        patient_id=_text(ds, "PatientID"),
        referenced=referenced,
        discontinued_reason=reason,
    )


def _refused(what: str, uid: str, exc: Exception) -> tuple[int, None]:
    if isinstance(exc, StepError):
        code = _STATUS_OF[exc.problem]
        log.warning("MPPS %s %s refused 0x%04X: %s", what, uid, code, exc)
        return code, None
    log.exception("MPPS %s %s failed (unexpected)", what, uid)
    return PROCESSING_FAILURE, None


def handle_create(event: events.Event, context: StepContext) -> tuple[int, Dataset | None]:
    request = event.request
    assert isinstance(request, N_CREATE)
    uid = str(request.AffectedSOPInstanceUID or "")
    if not uid:  # the SCU must give the step's UID: the modality keeps it for the N-SET
        log.warning("MPPS N-CREATE without an Affected SOP Instance UID refused")
        return MISSING_ATTRIBUTE, None
    try:
        attributes = event.attribute_list
        context.steps.create(uid, event.assoc.requestor.ae_title.strip(), step_report(attributes))
    except Exception as exc:
        return _refused("N-CREATE", uid, exc)
    return SUCCESS, attributes


def handle_set(event: events.Event, context: StepContext) -> tuple[int, Dataset | None]:
    request = event.request
    assert isinstance(request, N_SET)
    uid = str(request.RequestedSOPInstanceUID or "")
    try:
        changes = event.modification_list
        context.dispatch(context.steps.update(uid, step_report(changes)))
    except Exception as exc:
        return _refused("N-SET", uid, exc)
    return SUCCESS, changes


def mpps_handlers(context: StepContext) -> list[Any]:
    """The ``evt_handlers`` entries of the MPPS SCP."""
    return [(evt.EVT_N_CREATE, handle_create, [context]), (evt.EVT_N_SET, handle_set, [context])]
