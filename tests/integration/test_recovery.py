"""``eyescreen up`` killed with SIGKILL at each point of an image's way from the model to the
PACS (a worker child mid-inference, after its predictions, mid-report, mid-delivery; the
worker's main process; the gateway), on both profiles, with Orthanc as the PACS: every pending
report and delivery resumes within 60 s with the default lease (30 s), outbox resend (30 s) and
stale period (10 minutes), and Orthanc receives each report's SR exactly once (a delivery whose
answer was lost is looked up by C-FIND, not re-sent). ``eyescreen up`` starts a killed process
again.

Each way of resuming is witnessed with the defaults: the inference lease (mid-inference), the
outbox resend (after-predictions), the inline lease (mid-report) and the delivery's lease
(mid-delivery). The worker's main process and the gateway are killed at the delivery's point
too; what those two add is the process started again, so they run with a 5-s lease and a 2-s
resend rather than wait out the same 30 s twice more.

The worker stops at a named failpoint (``worker/failpoints.py``) and is killed there; the
seconds from the kill until every report is delivered are printed (``-s``) as
``RECOVERY <kill point> <profile> <seconds>``."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import func, select

from services.db.models import DeliveryState, Report, ReportDelivery
from tests.conftest import free_port, require_binary
from tests.orthanc_peer import ORTHANC, Orthanc
from tests.running_service import Service
from tests.service_harness import wait_for

pytestmark = pytest.mark.integration

PHOTOS = 6  # one batch: six cases, six reports
DEFAULTS = {
    "EYESCREEN_INFERENCE_LEASE_S": "30",
    "EYESCREEN_STALE_AFTER_S": "600",
    "EYESCREEN_OUTBOX_RESEND_AFTER_S": "30",
}
SHORT = DEFAULTS | {"EYESCREEN_INFERENCE_LEASE_S": "5", "EYESCREEN_OUTBOX_RESEND_AFTER_S": "2"}


def _start(  # type: ignore[no-untyped-def]
    profile: str, request: pytest.FixtureRequest, tmp_path: Path, point: str, timing: dict
):
    require_binary(ORTHANC)
    port = free_port()
    pacs = Orthanc(tmp_path / "orthanc", "EYESCREEN", port)
    extra = timing | {"EYESCREEN_FAILPOINT": point, "EYESCREEN_SR_DESTINATIONS": pacs.destination}
    if profile == "embedded":
        return pacs, Service(None, None, tmp_path, port=port, **extra)
    broker = request.getfixturevalue("redis_broker")
    url = request.getfixturevalue("postgres_url")
    return pacs, Service(url, broker.port, tmp_path, port=port, **extra)


def _children(pid: int) -> dict[int, str]:
    """Child processes of ``pid``, with their command lines."""
    found = {}
    for child in subprocess.run(
        ["pgrep", "-P", str(pid)], capture_output=True, text=True, check=False
    ).stdout.split():
        found[int(child)] = (
            Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        )
    return found


def _parent(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])


# kill point -> the failpoint the worker waits at, what is killed there, and the timing
KILLS = {
    "mid-inference": ("mid-inference", "child", DEFAULTS),
    "after-predictions": ("after-predictions", "child", DEFAULTS),
    "mid-report": ("mid-report", "child", DEFAULTS),
    "mid-delivery": ("mid-delivery", "child", DEFAULTS),
    "worker-main": ("mid-delivery", "main", SHORT),  # the worker service dies, its child with it
    "gateway": ("mid-delivery", "gateway", SHORT),  # the PACS's commitment result finds no gateway
}


def _kill(service: Service, marker: Path, what: str) -> None:
    child = int(marker.read_text())
    if what == "child":
        os.kill(child, signal.SIGKILL)
    elif what == "main":
        main = _parent(child)
        os.kill(main, signal.SIGKILL)
        os.kill(child, signal.SIGKILL)
    else:
        [gateway] = [p for p, cmd in _children(service.process.pid).items() if " gateway" in cmd]
        os.kill(gateway, signal.SIGKILL)
        os.kill(child, signal.SIGKILL)


PROFILES = ("postgres-redis", "embedded")


def _killed_and_recovered(
    kill: str, profile: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    point, what, timing = KILLS[kill]
    pacs, service = _start(profile, request, tmp_path, point, timing)
    try:
        service.send(PHOTOS, tmp_path)
        marker = tmp_path / "var" / "failpoints" / point
        wait_for(marker.exists, 180, f"a worker at {point}", service.log)
        time.sleep(0.2)  # the pid is written
        _kill(service, marker, what)
        killed_at = time.monotonic()

        def all_delivered() -> bool:
            reports = service.scalar(select(func.count()).select_from(Report))
            delivered = service.scalar(
                select(func.count())
                .select_from(ReportDelivery)
                .where(ReportDelivery.state == DeliveryState.DELIVERED)
            )
            return reports == PHOTOS and delivered == PHOTOS

        wait_for(all_delivered, 240, "every report delivered after the kill", service.log)
        seconds = time.monotonic() - killed_at
        print(f"RECOVERY {kill} {profile} {seconds:.1f}", flush=True)
        assert seconds < 60, f"the work pending at {kill} waited {seconds:.0f} s ({profile})"
        time.sleep(3)
        with service.engine.connect() as conn:
            uids = sorted(conn.execute(select(Report.sop_instance_uid)).scalars())
        assert sorted(pacs.received()) == uids, profile  # each report's SR once, none twice
        assert service.predictions_per_instance() == [1] * PHOTOS, profile
    finally:
        service.stop()
        pacs.stop()


@pytest.mark.parametrize("kill", list(KILLS))
def test_killed_at_each_point_work_resumes_within_a_minute_one_sr_per_report(
    kill: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Both profiles at once, each its own service and PACS: most of a run is waiting out the
    lease, and the two wait side by side."""
    for profile in PROFILES:
        (tmp_path / profile).mkdir()
    request.getfixturevalue("redis_broker")  # fixtures are set up here, not in a thread
    request.getfixturevalue("postgres_url")
    with ThreadPoolExecutor(len(PROFILES)) as pool:
        runs = [
            pool.submit(_killed_and_recovered, kill, profile, request, tmp_path / profile)
            for profile in PROFILES
        ]
    for run in runs:
        run.result()  # the first profile's failure, with its traceback
