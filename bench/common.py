"""What the benchmarks share: where the photographs are, free ports, waiting for a DICOM peer."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("EYESCREEN_SHARED", REPO.parent / "shared"))
DCMTK_ENV = {"TCP_NODELAY": "1", "PATH": "/usr/bin:/bin"}  # storescp stalls ~40 ms without it
# Where DCMTK is not installed (a lent GPU machine has no package registry), pynetdicom plays
# the peers instead: bench/pacs.py as the PACS, an in-process SCU as the camera.
HAVE_DCMTK = (
    Path("/usr/bin/storescu").exists() and os.environ.get("EYESCREEN_BENCH_PEERS") != "pynetdicom"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_echo(port: int, called_ae: str = "EYESCREEN", timeout: float = 120) -> None:
    """Until a C-ECHO to ``port`` succeeds."""
    deadline = time.monotonic() + timeout
    while not _echo(port, called_ae):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing answered C-ECHO on port {port}")
        time.sleep(0.3)


def _echo(port: int, called_ae: str) -> bool:
    if HAVE_DCMTK:
        echo = ["/usr/bin/echoscu", "-aec", called_ae, "127.0.0.1", str(port)]
        return subprocess.run(echo, capture_output=True, env=DCMTK_ENV).returncode == 0
    from pynetdicom import AE

    ae = AE()
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and int(status.Status) == 0


def pacs_command(port: int, inbox: Path) -> list[str]:
    """A receiving PACS (AE title PACS) that writes what it receives into ``inbox``."""
    if HAVE_DCMTK:
        return ["/usr/bin/storescp", "-aet", "PACS", "-od", str(inbox), str(port)]
    return [sys.executable, str(Path(__file__).with_name("pacs.py")), str(port), str(inbox)]


def store(files: list[Path], port: int, called_ae: str = "EYESCREEN") -> None:
    """Send the files over one association, as a camera does; raise unless all were stored."""
    if HAVE_DCMTK:
        command = ["/usr/bin/storescu", "-xy", "-aec", called_ae, "127.0.0.1", str(port)]
        subprocess.run([*command, *map(str, files)], env=DCMTK_ENV, check=True, capture_output=True)
        return
    from pydicom import dcmread
    from pynetdicom import AE

    datasets = [dcmread(path) for path in files]
    ae = AE()
    for pair in {(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in datasets}:
        ae.add_requested_context(*pair)
    assoc = ae.associate("127.0.0.1", port, ae_title=called_ae)
    if not assoc.is_established:
        raise RuntimeError(f"association to port {port} refused")
    try:
        for ds in datasets:
            status = assoc.send_c_store(ds)
            if not status or int(status.Status) != 0:
                raise RuntimeError(f"C-STORE of {ds.SOPInstanceUID} failed: {status}")
    finally:
        assoc.release()
