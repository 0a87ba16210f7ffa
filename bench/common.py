"""What the benchmarks share: where the photographs are, free ports, waiting for a DICOM peer."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EYESCREEN_SHARED", REPO.parent / "shared"))
DCMTK_ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}  # storescp stalls ~40 ms without it


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_echo(port: int, called_ae: str = "EYESCREEN", timeout: float = 120) -> None:
    """Until a C-ECHO to ``port`` succeeds."""
    deadline = time.monotonic() + timeout
    echo = ["/usr/bin/echoscu", "-aec", called_ae, "127.0.0.1", str(port)]
    while subprocess.run(echo, capture_output=True, env=DCMTK_ENV).returncode != 0:
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answered C-ECHO on port {port}")
        time.sleep(0.3)
