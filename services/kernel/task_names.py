"""Names of the queued tasks, shared by whoever writes an outbox row and the worker."""

from enum import StrEnum


class TaskName(StrEnum):
    """The queued tasks; the value is the Celery task name."""

    INFER = "screening.infer"
    INFER_URGENT = "screening.infer_urgent"  # the urgent lane: read, report and send at once
    REPORT = "reports.build_case"  # argument: screening case id
    DELIVER = "reports.deliver"  # argument: report delivery id (a DICOM SR by C-STORE)
    DELIVER_HL7 = "reports.deliver_hl7"  # argument: report delivery id (ORU^R01 by MLLP)
    RENDER = "reports.render_pdf"  # argument: report id
    HOUSEKEEPING = "housekeeping.sweep"  # Celery beat: outbox, quiet cases, stale work


INFER_TASK = TaskName.INFER
INFER_URGENT_TASK = TaskName.INFER_URGENT
REPORT_TASK = TaskName.REPORT
DELIVER_TASK = TaskName.DELIVER
DELIVER_HL7_TASK = TaskName.DELIVER_HL7
RENDER_TASK = TaskName.RENDER
