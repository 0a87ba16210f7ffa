"""Named places where a fault test stops a worker so as to kill it exactly there.

With ``EYESCREEN_FAILPOINT=NAME`` in its environment, the first worker process to reach NAME
writes its pid to ``<data dir>/failpoints/NAME`` and waits there to be killed (SIGKILL, by the
test); any process that reaches it later runs through, so the work can be taken over. Ignored
with ``EYESCREEN_ENVIRONMENT=production``."""

from __future__ import annotations

import os
import time

from services.kernel.settings import Settings

FAILPOINT_ENV = "EYESCREEN_FAILPOINT"
POINTS = (
    "mid-inference",  # a batch claimed, the model running
    "after-predictions",  # predictions committed, their report not yet built
    "mid-report",  # the report's outbox row taken, its SR being encoded
    "mid-delivery",  # the SR stored at the PACS, the answer not yet recorded
)


def reach(settings: Settings, name: str) -> None:
    """Wait here to be killed, if a test asked for this point and nobody has stopped here."""
    if os.environ.get(FAILPOINT_ENV) != name or settings.environment == "production":
        return
    marker = settings.data_path / "failpoints" / name
    marker.parent.mkdir(parents=True, exist_ok=True)
    try:
        with marker.open("x") as out:
            out.write(str(os.getpid()))
    except FileExistsError:
        return
    while True:
        time.sleep(1)
