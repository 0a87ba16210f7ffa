"""``eyescreen up``: start gateway and worker processes, stop them all cleanly on Ctrl-C."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from types import FrameType

from services.kernel.settings import Settings

log = logging.getLogger(__name__)


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.stopping = False

    def _spawn(self, name: str, *args: str) -> None:
        self.children[name] = subprocess.Popen([sys.executable, "-m", "eyescreen", *args])

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        if self.settings.urgent_sources:  # a lane of its own: never behind a backlog
            self._spawn("urgent", "worker", "--queues=urgent", "--concurrency=1")
            main_queues = "--queues=inference,reports,housekeeping"
        else:
            main_queues = "--queues=urgent,inference,reports,housekeeping"
        self._spawn("worker", "worker", f"--concurrency={self.workers}", main_queues)
        self._spawn("gateway", "gateway")
        if self.settings.web_port:
            self._spawn("web", "web")
        log.info(
            "eyescreen up: DICOM %s on port %d, data in %s (Ctrl-C stops)",
            self.settings.ae_title,
            self.settings.dicom_port,
            self.settings.data_path,
        )
        code = 0
        while not self.stopping:
            for name, child in self.children.items():
                if child.poll() is not None:
                    log.error("%s exited with %s; stopping everything", name, child.returncode)
                    self.stopping, code = True, 1
                    break
            time.sleep(0.5)
        self._stop_children()
        return code

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.stopping = True

    def _stop_children(self, timeout: float = 30.0) -> None:
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for name, child in self.children.items():
            try:
                child.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop in %.0fs; killing it", name, timeout)
                child.kill()
        log.info("eyescreen stopped")
