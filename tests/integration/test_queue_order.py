"""A worker on Redis reads its queues in priority order: with a backlog of new images waiting,
a report to build or send and the housekeeping sweep are taken first, not after the backlog.

Found by the 5,000-photograph soak: with inference read first, 80 SRs whose PACS had been down
for a minute, and the sweeps, waited 57 minutes for a backlog (and its re-queued duplicates) to
be read."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from eyescreen.database import upgrade
from services.kernel.settings import Settings
from services.kernel.task_names import TaskName
from tests.service_harness import wait_for
from worker.app import create_app
from worker.queues import queue_for

pytestmark = pytest.mark.integration
BACKLOG = 200  # images waiting, each a message for an instance that does not exist (quick)


def test_reports_and_sweeps_are_taken_before_a_backlog_of_images(
    redis_url: str, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    env = dict(
        os.environ,
        EYESCREEN_DATA_DIR=str(tmp_path / "var"),
        EYESCREEN_DATABASE_URL=url,
        EYESCREEN_BROKER_URL=redis_url,
    )
    settings = Settings(data_dir=tmp_path / "var", database_url=url, broker_url=redis_url)
    app = create_app(settings)
    with app.connection_for_write() as connection:
        for _ in range(BACKLOG):
            app.send_task(TaskName.INFER.value, args=[10**9], queue="inference",
                          connection=connection)  # fmt: skip
        for name in (TaskName.REPORT, TaskName.HOUSEKEEPING):
            app.send_task(name.value, args=[10**9] if name == TaskName.REPORT else [],
                          queue=queue_for(name.value), connection=connection)  # fmt: skip

    log = tmp_path / "worker.log"
    worker = subprocess.Popen(
        [sys.executable, "-m", "eyescreen", "worker", "--concurrency=1"],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        received = re.compile(r"Task ([\w.]+)\[[^]]+\] received")

        def order() -> list[str]:
            return received.findall(log.read_text(errors="replace"))

        wait_for(lambda: len(order()) >= 12, 120, "the worker to take a dozen tasks", log)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
    taken = order()
    first_image = taken.index(TaskName.INFER.value)
    assert {TaskName.REPORT.value, TaskName.HOUSEKEEPING.value} <= set(taken[:first_image]), taken
