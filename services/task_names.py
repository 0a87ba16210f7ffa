"""Names of the queued tasks, shared by whoever writes an outbox row and the worker."""

INFER_TASK = "screening.infer"
INFER_URGENT_TASK = "screening.infer_urgent"  # the urgent lane: read, report and send at once
REPORT_TASK = "reports.build_case"  # argument: screening case id
DELIVER_TASK = "reports.deliver"  # argument: report delivery id
RENDER_TASK = "reports.render_pdf"  # argument: report id
