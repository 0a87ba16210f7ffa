"""Names of the queued tasks, shared by whoever writes an outbox row and the worker."""

INFER_TASK = "screening.infer"
REPORT_TASK = "reports.build_case"  # argument: screening case id
DELIVER_TASK = "reports.deliver"  # argument: report delivery id
RENDER_TASK = "reports.render_pdf"  # argument: report id
