"""``eyescreen up``: start gateway and worker processes, stop them all cleanly on Ctrl-C."""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import time
from types import FrameType

from services.kernel.settings import Settings
from worker.queues import queues_option

log = logging.getLogger(__name__)

MAX_RESTARTS, RESTART_WINDOW_S = 5, 60.0


class Supervisor:
    def __init__(self, settings: Settings, workers: int) -> None:
        self.settings = settings
        self.workers = workers
        self.children: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, tuple[str, ...]] = {}
        self.restarts: dict[str, list[float]] = {}
        self.stopping = False

    def _spawn(self, name: str, *args: str) -> None:
        self.commands[name] = args
        self.children[name] = subprocess.Popen([sys.executable, "-m", "eyescreen", *args])

    def _restart(self, name: str, code: int | None) -> bool:
        """Start a child that exited again, as compose's ``restart: unless-stopped`` does (a killed
        worker or gateway comes back and the sweeps resume its work); False when it keeps
        dying (more than ``MAX_RESTARTS`` within ``RESTART_WINDOW_S``): then everything stops."""
        now = time.monotonic()
        recent = [t for t in self.restarts.get(name, []) if now - t < RESTART_WINDOW_S]
        if len(recent) >= MAX_RESTARTS:
            log.error(
                "%s exited with %s %d times in a row; stopping everything", name, code, len(recent)
            )
            return False
        log.error("%s exited with %s; starting it again", name, code)
        self.restarts[name] = [*recent, now]
        self._spawn(name, *self.commands[name])
        return True

    def run(self) -> int:
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGTERM, self._on_signal)
        if self.settings.urgent_sources:  # a lane of its own: never behind a backlog
            self._spawn("urgent", "worker", "--queues=urgent", "--concurrency=1")
            main_queues = f"--queues={queues_option(urgent=False)}"
        else:
            main_queues = f"--queues={queues_option()}"
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
            for name, child in list(self.children.items()):
                exited = child.poll() is not None and not self.stopping
                if exited and not self._restart(name, child.returncode):
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
