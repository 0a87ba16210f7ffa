"""Soak with faults: the production profile under sustained load while things break.

    .venv/bin/python bench/soak.py [--photos 5000] [--faults all|none|NAME,...] [--json PATH]
                                   [--pacs storescp|orthanc]

PostgreSQL (the local server, through a proxy this script can cut), a Redis of its own (so it
can be restarted with or without its data), the gateway, a worker service (two processes and
beat) and the web application run as separate processes, each restarted when it exits, as
docker-compose's ``restart: always`` does. DCMTK storescp (``+uf``: a duplicate would be a
second file) is the PACS, behind a proxy; with ``--pacs orthanc``, Orthanc is (Debian's
package: Storage Commitment to the gateway and C-FIND, so a delivery whose answer was lost is
looked up rather than sent again; every C-STORE it keeps, re-sends included, is logged by a Lua
callback). Four senders store generated photographs over
parallel associations, retrying whatever was not acknowledged (as cameras do); a grader reads
cases in the web application meanwhile. The faults are injected one at a time while photographs
flow; a fault's recovery time is the seconds from its end until the service has again stored an
image, made a prediction and delivered an SR (each after the end).

At the end, once everything has drained: every photograph acknowledged is in the database
(lost: 0), has exactly one prediction (duplicated: 0), and every report version is one SR object
at the PACS (an SR received again under its own UID after a delivery whose outcome was unknown
is counted apart: C-STORE is at-least-once and a PACS keeps one object per UID); memory and
open files of each service and the database size at the start and the end. Prints the figures
and, with ``--json``, writes them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import httpx  # noqa: E402
from pydicom import dcmread  # noqa: E402
from sqlalchemy import create_engine, func, select, text  # noqa: E402
from sqlalchemy.engine import make_url  # noqa: E402

from bench.common import DCMTK_ENV, free_port, wait_for_echo  # noqa: E402
from dicom_gateway.photos import photo_to_dataset  # noqa: E402
from services.db.models import (  # noqa: E402
    CaseRead,
    DeliveryState,
    Instance,
    InstanceState,
    Prediction,
    Report,
    ReportDelivery,
    report_prediction,
)
from tests.dicom_peers import storescu_config  # noqa: E402
from tests.orthanc_peer import Orthanc  # noqa: E402
from tests.synthetic_photos import generated_fundus_photos  # noqa: E402
from tests.tcp_proxy import TcpProxy  # noqa: E402

POSTGRES = os.environ.get(
    "EYESCREEN_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1/test"
)
PASSWORD = "soak test grader"
FAULTS = (
    "worker-child",
    "worker-main",
    "redis-restart",
    "redis-restart-empty",
    "postgres-restart",
    "gateway-kill",
    "disk-watermark",
    "pacs-refuses-then-times-out",
    "pacs-network-cut",
)


class Progress:
    """Whether a draining service still moves: a backlog of thousands takes as long as it
    takes on the machine at hand; only ``stalled_after`` seconds without any image read or
    report delivered count as stuck."""

    def __init__(self, soak: Soak, stalled_after: float) -> None:
        self.soak, self.stalled_after = soak, stalled_after
        self.done, self.moved_at = soak.work_done(), time.monotonic()
        self.reported_at = time.monotonic()

    def stalled(self) -> bool:
        done = self.soak.work_done()
        if done != self.done:
            self.done, self.moved_at = done, time.monotonic()
        if time.monotonic() - self.reported_at > 60:  # long work shows progress
            print(f"  draining: {done} images read + reports delivered", flush=True)
            self.reported_at = time.monotonic()
        return time.monotonic() - self.moved_at > self.stalled_after


class Kept:
    """A process restarted whenever it exits, until stopped."""

    def __init__(self, name: str, command: list[str], env: dict[str, str], log: Path) -> None:
        self.name, self.command, self.env, self.log = name, command, env, log
        self.restarts = 0
        self.stopping = False
        self.process = self._start()
        threading.Thread(target=self._keep, daemon=True).start()

    def _start(self) -> subprocess.Popen[bytes]:
        with self.log.open("ab") as out:
            return subprocess.Popen(self.command, env=self.env, stdout=out, stderr=out)

    def _keep(self) -> None:
        while not self.stopping:
            if self.process.poll() is not None and not self.stopping:
                time.sleep(1.0)  # compose waits a moment too
                self.restarts += 1
                self.process = self._start()
            time.sleep(0.2)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.process.send_signal(sig)

    def stop(self) -> None:
        self.stopping = True
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()


def children(pid: int) -> list[int]:
    found = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in found.split()]


def resident_mb(pid: int) -> float:
    """Resident memory of a process and its children, MiB."""
    total = 0.0
    for each in [pid, *children(pid)]:
        try:
            status = Path(f"/proc/{each}/status").read_text()
        except OSError:
            continue
        match = re.search(r"VmRSS:\s+(\d+) kB", status)
        total += int(match.group(1)) / 1024 if match else 0
    return round(total, 1)


def open_files(pid: int) -> int:
    total = 0
    for each in [pid, *children(pid)]:
        try:
            total += len(os.listdir(f"/proc/{each}/fd"))
        except OSError:
            continue
    return total


@dataclass
class Figures:
    photos: int = 0
    acknowledged: int = 0
    accepted: int = 0
    processed: int = 0
    lost: int = 0
    duplicated_predictions: int = 0
    reports: int = 0
    graded: int = 0  # cases the simulated grader read in the web application meanwhile
    delivered: int = 0
    duplicated_reports: int = 0  # SR objects at the PACS beyond one per report version
    resent_same_sr: int = 0  # an SR received again under its own UID (outcome was unknown)
    committed: int = 0  # deliveries the PACS committed (Storage Commitment; Orthanc)
    uncommitted: int = 0  # stored, commitment asked, no result at the end
    pacs: str = "storescp"
    seconds: float = 0.0
    images_per_second: float = 0.0
    latency_p50_s: float = 0.0
    latency_p95_s: float = 0.0
    drain_s: float = 0.0
    recovery_s: dict[str, float] = field(default_factory=dict)
    restarts: dict[str, int] = field(default_factory=dict)
    resources_start: dict[str, float] = field(default_factory=dict)
    resources_middle: dict[str, float] = field(default_factory=dict)  # every photograph sent
    resources_end: dict[str, float] = field(default_factory=dict)


class Soak:
    def __init__(self, work: Path, faults: list[str], pacs: str = "storescp") -> None:
        self.work, self.faults, self.pacs_kind = work, faults, pacs
        self.logs = work / "logs"
        self.logs.mkdir()
        self.inbox = work / "pacs"
        self.inbox.mkdir()
        self.sent_at: dict[str, float] = {}
        self.acknowledged: set[str] = set()
        self.lock = threading.Lock()
        self._database()
        self._redis_start(keep_data=False)
        self.port, self.web_port = free_port(), free_port()
        self.orthanc: Orthanc | None = None
        self.receipts: dict[str, list[float]] = {}  # Orthanc: SR UID -> times it was kept
        if pacs == "orthanc":
            self.orthanc = Orthanc(work / "orthanc", "EYESCREEN", self.port, ae_title="PACS")
            self.pacs_port, self.pacs = self.orthanc.port, self.orthanc.process
            threading.Thread(target=self._watch_receipts, daemon=True).start()
        else:
            self.pacs_port = free_port()
            self.pacs = subprocess.Popen(
                [
                    "/usr/bin/storescp",
                    "+uf",
                    "-aet",
                    "PACS",
                    "-od",
                    str(self.inbox),
                    str(self.pacs_port),
                ],
                env=DCMTK_ENV,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        self.pacs_proxy = TcpProxy("127.0.0.1", self.pacs_port)
        self.free_mb = shutil.disk_usage(work).free >> 20
        self.env = dict(
            os.environ,
            EYESCREEN_ENVIRONMENT="production",
            EYESCREEN_DATA_DIR=str(work / "var"),
            EYESCREEN_DATABASE_URL=self.database_url,
            EYESCREEN_BROKER_URL=f"redis://127.0.0.1:{self.redis_port}/0",
            EYESCREEN_DICOM_PORT=str(self.port),
            EYESCREEN_DICOM_HOST="127.0.0.1",
            EYESCREEN_WEB_PORT=str(self.web_port),
            EYESCREEN_SITE="SOAK",
            EYESCREEN_SR_DESTINATIONS=f"PACS@127.0.0.1:{self.pacs_proxy.port}",
            EYESCREEN_PDF_REPORTS="false",
            EYESCREEN_HEATMAPS="false",
            EYESCREEN_TORCH_THREADS="1",
            EYESCREEN_INFERENCE_LEASE_S="20",
            EYESCREEN_STALE_AFTER_S="60",
            EYESCREEN_OUTBOX_RESEND_AFTER_S="5",
            EYESCREEN_CASE_QUIET_MINUTES="0.2",
            # the disk fault fills the disk to 1.5 GB below what is free now
            EYESCREEN_MIN_FREE_DISK_MB=str(max(64, self.free_mb - 1536)),
        )
        self._run("db", "upgrade")
        self._run("users", "add", "grader", "--name", "Soak^Grader", "--role", "grader",
                  "--site", "SOAK", stdin=PASSWORD + "\n" + PASSWORD + "\n")  # fmt: skip
        eyescreen = [sys.executable, "-m", "eyescreen"]
        self.gateway = Kept("gateway", [*eyescreen, "gateway"], self.env, self.logs / "gateway.log")
        self.worker = Kept(
            "worker",
            [*eyescreen, "worker", "--concurrency=2", "--beat"],
            self.env,
            self.logs / "worker.log",
        )
        self.web = Kept("web", [*eyescreen, "web"], self.env, self.logs / "web.log")
        wait_for_echo(self.port, timeout=120)
        self.photos = generated_fundus_photos(8)
        self.files = work / "files"
        self.files.mkdir()
        self.counter = 0

    # --- the peers ------------------------------------------------------------------------
    def _database(self) -> None:
        admin = create_engine(make_url(POSTGRES), isolation_level="AUTOCOMMIT")
        self.database_name = f"eyescreen_soak_{os.getpid()}"
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.database_name}"'))
            connection.execute(text(f'CREATE DATABASE "{self.database_name}"'))
        admin.dispose()
        url = make_url(POSTGRES)
        self.database_proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
        self.database_url = url.set(
            host="127.0.0.1", port=self.database_proxy.port, database=self.database_name
        ).render_as_string(hide_password=False)
        direct = url.set(database=self.database_name).render_as_string(hide_password=False)
        self.engine = create_engine(direct)

    def _redis_start(self, keep_data: bool) -> None:
        folder = self.work / "redis"
        if not keep_data:
            shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(exist_ok=True)
        if not hasattr(self, "redis_port"):
            self.redis_port = free_port()
        self.redis = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(folder),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ],
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ping = ["redis-cli", "-p", str(self.redis_port), "ping"]
            if subprocess.run(ping, capture_output=True, text=True).stdout.strip() == "PONG":
                return
            time.sleep(0.2)
        raise RuntimeError("redis did not start")

    def _run(self, *args: str, stdin: str | None = None) -> None:
        done = subprocess.run(
            [sys.executable, "-m", "eyescreen", *args],
            env=self.env,
            input=stdin,
            capture_output=True,
            text=True,
        )
        if done.returncode != 0:
            raise RuntimeError(f"eyescreen {' '.join(args)}: {done.stderr[-1000:]}")

    # --- sending ----------------------------------------------------------------------------
    def make_files(self, count: int) -> list[tuple[Path, str]]:
        made = []
        for _ in range(count):
            with self.lock:
                self.counter += 1
                n = self.counter
            path = self.files / f"{n:06d}.dcm"
            ds = photo_to_dataset(self.photos[n % len(self.photos)], patient_id=f"SOAK{n}")
            ds.save_as(path, enforce_file_format=True)
            made.append((path, str(ds.SOPInstanceUID)))
        return made

    def send(self, files: list[tuple[Path, str]], deadline_s: float = 900) -> None:
        """Store the files over one association, again and again until every one was
        acknowledged (a refused or cut transfer is re-sent, as a camera does)."""
        waiting = dict(files)
        give_up = time.monotonic() + deadline_s
        while waiting and time.monotonic() < give_up:
            for uid in waiting.values():
                self.sent_at.setdefault(uid, time.time())
            command = ["/usr/bin/storescu", "-v", "-xf", str(storescu_config()), "Eyescreen",
                       "-aec", "EYESCREEN", "127.0.0.1", str(self.port)]  # fmt: skip
            done = subprocess.run(
                [*command, *map(str, waiting)], env=DCMTK_ENV, capture_output=True, text=True
            )
            current = None  # storescu -v names each file, then the status it was answered
            for line in (done.stdout + done.stderr).splitlines():
                if "Sending file: " in line:
                    current = Path(line.split("Sending file: ", 1)[1].strip())
                elif "Received Store Response (Success)" in line and current in waiting:
                    with self.lock:
                        self.acknowledged.add(waiting.pop(current))
            if waiting:
                time.sleep(2.0)
        if waiting:
            raise RuntimeError(f"{len(waiting)} photographs never acknowledged")

    def _watch_receipts(self) -> None:
        """Orthanc's Lua callback appends the UID of each C-STORE it keeps; timed here."""
        assert self.orthanc is not None
        read = 0
        while True:
            lines = self.orthanc.received()
            now = time.time()
            for uid in lines[read:]:
                self.receipts.setdefault(uid, []).append(now)
            read = len(lines)
            time.sleep(0.2)

    def sr_uids(self) -> list[str]:
        """The SOP Instance UID of every SR the PACS received, a re-send counted again."""
        if self.orthanc is not None:
            return [uid for uid, times in list(self.receipts.items()) for _ in times]
        return [str(sr.SOPInstanceUID) for sr, _ in self._srs()]

    def sr_arrivals(self) -> dict[str, list[float]]:
        """Source SOP Instance UID -> arrival times of every SR naming it at the PACS."""
        if self.orthanc is not None:
            return self._orthanc_arrivals()
        seen: dict[str, list[float]] = {}
        for sr, path in self._srs():
            evidence = sr.CurrentRequestedProcedureEvidenceSequence[0]
            for series in evidence.ReferencedSeriesSequence:
                for ref in series.ReferencedSOPSequence:
                    uid = str(ref.ReferencedSOPInstanceUID)
                    seen.setdefault(uid, []).append(path.stat().st_mtime)
        return seen

    def _orthanc_arrivals(self) -> dict[str, list[float]]:
        with self.engine.connect() as connection:
            sources = connection.execute(
                select(Report.sop_instance_uid, Instance.sop_instance_uid)
                .join(report_prediction, report_prediction.c.report_pk == Report.id)
                .join(Prediction, Prediction.id == report_prediction.c.prediction_pk)
                .join(Instance, Instance.id == Prediction.instance_pk)
            ).all()
        seen: dict[str, list[float]] = {}
        receipts = dict(self.receipts)
        for sr_uid, source in sources:
            for arrival in receipts.get(sr_uid, []):
                seen.setdefault(source, []).append(arrival)
        return seen

    def _srs(self):  # type: ignore[no-untyped-def]
        for path in self.inbox.iterdir():
            try:
                sr = dcmread(path, stop_before_pixels=True)
                sr.CurrentRequestedProcedureEvidenceSequence[0]
            except Exception:
                continue  # being written
            yield sr, path

    def moving_again(self, since: float, timeout: float = 900) -> float:
        """Seconds from ``since`` until the service has again stored an image, made a
        prediction and delivered an SR, each after ``since`` (a backlog does not count
        against it, as a probe photograph queued behind it would)."""
        after = datetime.fromtimestamp(since, UTC)
        columns = (Instance.received_at, Prediction.created_at, ReportDelivery.delivered_at)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            firsts = []
            with self.engine.connect() as connection:
                for column in columns:
                    first = connection.execute(select(func.min(column)).where(column > after))
                    firsts.append(first.scalar())
            if all(firsts):
                return round(max(f.timestamp() for f in firsts) - since, 1)
            time.sleep(0.5)
        raise RuntimeError("the service did not move again")

    def probe(self, started: float, stalled_after: float = 600) -> float:
        """Send one photograph; seconds from ``started`` until its SR is at the PACS. Behind a
        backlog of thousands that takes as long as the backlog: give up only when the service
        has delivered nothing for ``stalled_after`` seconds."""
        [(path, uid)] = self.make_files(1)
        self.send([(path, uid)])
        watch = Progress(self, stalled_after)
        while not watch.stalled():
            if uid in self.sr_arrivals():
                return round(time.time() - started, 1)
            time.sleep(0.5)
        raise RuntimeError("the probe's SR never arrived: nothing delivered for a while")

    def work_done(self) -> int:
        """Images read plus reports delivered: grows while the backlog drains."""
        images, deliveries = self.states()
        read = sum(n for state, n in images.items() if state != InstanceState.RECEIVED)
        return read + deliveries.get(DeliveryState.DELIVERED, 0)

    def states(self) -> tuple[dict[str, int], dict[str, int]]:
        """How many images and report deliveries are in each state."""
        with self.engine.connect() as connection:
            images = connection.execute(
                select(Instance.state, func.count()).group_by(Instance.state)
            ).all()
            deliveries = connection.execute(
                select(ReportDelivery.state, func.count()).group_by(ReportDelivery.state)
            ).all()
        return {s: n for s, n in images}, {s: n for s, n in deliveries}

    # --- the grader -------------------------------------------------------------------------
    def grade(self, stop: threading.Event) -> None:
        base = f"http://127.0.0.1:{self.web_port}"
        while not stop.is_set():
            try:
                with httpx.Client(base_url=base, follow_redirects=False, timeout=30) as web:
                    login = web.get("/login").text
                    token = re.search(r'name="login_token" value="([^"]+)"', login)
                    assert token
                    web.post("/login", data={"username": "grader", "password": PASSWORD,
                                             "login_token": token.group(1)})  # fmt: skip
                    while not stop.wait(2.0):
                        cases = re.findall(r'href="/cases/(\d+)"', web.get("/worklist").text)
                        if not cases:
                            continue
                        page = web.get(f"/cases/{cases[0]}").text
                        csrf = re.search(r'name="csrf_token" value="([^"]+)"', page)
                        eyes = sorted(set(re.findall(r'name="eye_(\w)_state"', page)))
                        if not csrf or not eyes:
                            continue
                        form = {"csrf_token": csrf.group(1), "reading_ms": "3000"}
                        form |= {f"eye_{eye}_state": "normal" for eye in eyes}
                        web.post(f"/cases/{cases[0]}/read", data=form)
            except Exception:
                stop.wait(2.0)  # the web application is restarting: sign in again

    # --- faults -------------------------------------------------------------------------------
    def inject(self, name: str) -> Callable[[], None]:
        """Do the fault; return what ends it (called before the probe)."""
        if name == "worker-child":
            victims = children(self.worker.process.pid)
            os.kill(victims[-1] if victims else self.worker.process.pid, signal.SIGKILL)
            return lambda: None
        if name == "worker-main":
            self.worker.kill()
            return lambda: None
        if name in ("redis-restart", "redis-restart-empty"):
            self.redis.send_signal(signal.SIGKILL if name.endswith("empty") else signal.SIGTERM)
            self.redis.wait(30)
            time.sleep(3)
            self._redis_start(keep_data=not name.endswith("empty"))
            return lambda: None
        if name == "postgres-restart":
            self.database_proxy.down()
            time.sleep(10)
            self.database_proxy.up()
            return lambda: None
        if name == "gateway-kill":
            self.gateway.kill()
            return lambda: None
        if name == "disk-watermark":
            ballast = self.work / "ballast"
            subprocess.run(["fallocate", "-l", "2G", str(ballast)], check=True)
            time.sleep(10)  # cameras are refused meanwhile (0xA700) and retry
            return lambda: ballast.unlink()
        if name == "pacs-refuses-then-times-out":
            self.pacs_proxy.down()
            time.sleep(15)
            self.pacs_proxy.up()
            self.pacs.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
            time.sleep(40)
            return lambda: self.pacs.send_signal(signal.SIGCONT)
        if name == "pacs-network-cut":
            self.pacs_proxy.down()
            time.sleep(5)
            return self.pacs_proxy.up
        raise ValueError(name)

    def resources(self) -> dict[str, float]:
        with self.engine.connect() as connection:
            size = connection.execute(
                text("SELECT pg_database_size(:n)"), {"n": self.database_name}
            ).scalar()
        figures: dict[str, float] = {"database_mb": round((size or 0) / 2**20, 1)}
        for kept in (self.gateway, self.worker, self.web):
            figures[f"{kept.name}_rss_mb"] = resident_mb(kept.process.pid)
            figures[f"{kept.name}_open_files"] = open_files(kept.process.pid)
        return figures

    def stop(self) -> None:
        for kept in (self.web, self.gateway, self.worker):
            kept.stop()
        self.pacs.send_signal(signal.SIGCONT)
        if self.orthanc is not None:
            self.orthanc.stop()
        else:
            self.pacs.terminate()
        self.redis.terminate()
        self.pacs_proxy.down()
        self.engine.dispose()
        self.database_proxy.down()
        admin = create_engine(make_url(POSTGRES), isolation_level="AUTOCOMMIT")
        with admin.connect() as connection:
            connection.execute(
                text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                {"n": self.database_name},
            )
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.database_name}"'))
        admin.dispose()

    # --- the checks -----------------------------------------------------------------------
    def settled(self) -> bool:
        images, deliveries = self.states()
        pending = sum(n for state, n in deliveries.items() if state != DeliveryState.DELIVERED)
        unread = images.get(InstanceState.RECEIVED, 0)
        return pending == 0 and unread == 0 and self.acknowledged <= set(self.sr_arrivals())

    def figures(self, figures: Figures) -> Figures:
        with self.engine.connect() as connection:
            stored = set(connection.execute(select(Instance.sop_instance_uid)).scalars())
            per_instance = (
                connection.execute(
                    select(func.count(Prediction.id))
                    .select_from(Instance)
                    .outerjoin(Prediction, Prediction.instance_pk == Instance.id)
                    .group_by(Instance.id)
                )
                .scalars()
                .all()
            )
            figures.reports = connection.execute(select(func.count()).select_from(Report)).scalar()
            figures.graded = connection.execute(select(func.count()).select_from(CaseRead)).scalar()
            figures.delivered = connection.execute(
                select(func.count())
                .select_from(ReportDelivery)
                .where(ReportDelivery.state == DeliveryState.DELIVERED)
            ).scalar()
        figures.acknowledged = len(self.acknowledged)
        figures.accepted = len(self.acknowledged & stored)
        figures.lost = len(self.acknowledged - stored)
        figures.processed = sum(1 for count in per_instance if count >= 1)
        figures.duplicated_predictions = sum(1 for count in per_instance if count > 1)
        # At the PACS, each report version must be one SR object. The same object may arrive
        # twice when a delivery's outcome was unknown (the PACS went silent or the connection
        # was cut after it stored the SR, before its answer came back): C-STORE is at least
        # once, and a PACS keeps one object per SOP Instance UID. Those are counted, not failed.
        uids = self.sr_uids()
        with self.engine.connect() as connection:
            reports = set(connection.execute(select(Report.sop_instance_uid)).scalars())
            figures.committed = connection.execute(
                select(func.count())
                .select_from(ReportDelivery)
                .where(ReportDelivery.committed_at.is_not(None))
            ).scalar()
            figures.uncommitted = connection.execute(
                select(func.count())
                .select_from(ReportDelivery)
                .where(
                    ReportDelivery.state == DeliveryState.DELIVERED,
                    ReportDelivery.commitment_requested_at.is_not(None),
                    ReportDelivery.committed_at.is_(None),
                )
            ).scalar()
        figures.duplicated_reports = len(set(uids) - reports)
        figures.resent_same_sr = len(uids) - len(set(uids))
        return figures


def run(photos: int, faults: list[str], work: Path, pacs: str = "storescp") -> Figures:
    soak = Soak(work, faults, pacs)
    figures = Figures(photos=photos, pacs=pacs)
    stop_grader = threading.Event()
    threading.Thread(target=soak.grade, args=(stop_grader,), daemon=True).start()
    try:
        started = time.time()
        soak.probe(started)  # warm: every service up and the model loaded
        figures.resources_start = soak.resources()
        chunks = [soak.make_files(min(20, photos - n)) for n in range(0, photos, 20)]
        queue = list(chunks)
        lock = threading.Lock()

        def sender() -> None:
            while True:
                with lock:
                    if not queue:
                        return
                    chunk = queue.pop(0)
                soak.send(chunk)

        load_started = time.time()
        senders = [threading.Thread(target=sender) for _ in range(4)]
        for thread in senders:
            thread.start()
        for name in faults:
            time.sleep(5)
            print(f"fault: {name}", flush=True)
            end = soak.inject(name)
            end()
            ended = time.time()
            # a photograph now, so that there is a new image to store even when the senders
            # are done (not waited for: it may queue behind the backlog)
            threading.Thread(target=soak.send, args=(soak.make_files(1),), daemon=True).start()
            figures.recovery_s[name] = soak.moving_again(ended)
            print(f"  working again {figures.recovery_s[name]} s after", flush=True)
        for thread in senders:
            thread.join()
        last_sent = time.time()
        figures.resources_middle = soak.resources()  # the backlog at its largest
        soak.probe(last_sent)  # and a photograph sent now goes all the way
        watch = Progress(soak, 600)
        while not soak.settled() and not watch.stalled():
            time.sleep(2)
        arrivals = soak.sr_arrivals()
        done = max((min(arrivals[u]) for u in soak.acknowledged if u in arrivals), default=0.0)
        figures.seconds = round(done - load_started, 1)
        figures.drain_s = round(max(0.0, done - last_sent), 1)
        figures.images_per_second = round(photos / max(1e-6, done - load_started), 2)
        latencies = sorted(
            min(arrivals[u]) - soak.sent_at[u] for u in soak.acknowledged if u in arrivals
        )
        if latencies:
            figures.latency_p50_s = round(latencies[len(latencies) // 2], 2)
            figures.latency_p95_s = round(latencies[int(len(latencies) * 0.95) - 1], 2)
        figures.resources_end = soak.resources()
        figures.restarts = {k.name: k.restarts for k in (soak.gateway, soak.worker, soak.web)}
        return soak.figures(figures)
    finally:
        stop_grader.set()
        soak.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--photos", type=int, default=5000)
    parser.add_argument("--faults", default="all", help="all, none, or names: " + ",".join(FAULTS))
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--pacs",
        choices=["storescp", "orthanc"],
        default="storescp",
        help="the PACS: DCMTK storescp, or Orthanc with Storage Commitment and C-FIND",
    )
    args = parser.parse_args()
    named = {"all": list(FAULTS), "none": []}
    faults = named[args.faults] if args.faults in named else args.faults.split(",")
    work = Path(tempfile.mkdtemp(prefix="eyescreen-soak-"))
    try:
        figures = run(args.photos, faults, work, args.pacs)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report = json.dumps(figures.__dict__, indent=2)
    print(report)
    if args.json:
        args.json.write_text(report + "\n")
    if figures.lost or figures.duplicated_predictions or figures.duplicated_reports:
        raise SystemExit("lost or duplicated work")


if __name__ == "__main__":
    main()
