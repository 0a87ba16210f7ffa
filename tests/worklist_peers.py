"""Real Modality Worklist SCPs for tests: DCMTK's ``wlmscpfs`` and Orthanc with its
ModalityWorklists plugin, both serving ``.wl`` files made by DCMTK's ``dump2dcm``."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pydicom.uid import generate_uid

from tests.conftest import free_port, require_binary, run, service_available

ORTHANC = "/usr/sbin/Orthanc"
ORTHANC_WORKLISTS = "/usr/share/orthanc/plugins/libModalityWorklists.so"


@dataclass(frozen=True)
class Scheduled:
    """One scheduled screening procedure, as the department's RIS would enter it."""

    accession: str
    patient_id: str
    date: str
    time: str = "0900"
    modality: str = "OP"
    station: str = "FUNDUSCAM"
    study_uid: str = ""
    code: str = "FUNDUS-SCREEN"


def write_worklist_file(folder: Path, item: Scheduled) -> Path:
    """A worklist entry written as DCMTK dump text and turned into a ``.wl`` file by dump2dcm."""
    require_binary("/usr/bin/dump2dcm")
    study = item.study_uid or generate_uid()
    dump = f"""(0008,0005) CS [ISO_IR 100]
(0008,0050) SH [{item.accession}]
(0010,0010) PN [Screening^Patient]
(0010,0020) LO [{item.patient_id}]
(0010,0030) DA [19600101]
(0010,0040) CS [F]
(0020,000d) UI [{study}]
(0032,1060) LO [Diabetic eye screening]
(0032,1064) SQ
(fffe,e000) -
(0008,0100) SH [{item.code}]
(0008,0102) SH [99LOCAL]
(0008,0104) LO [Fundus photography screening]
(fffe,e00d) -
(fffe,e0dd) -
(0040,0100) SQ
(fffe,e000) -
(0008,0060) CS [{item.modality}]
(0040,0001) AE [{item.station}]
(0040,0002) DA [{item.date}]
(0040,0003) TM [{item.time}]
(0040,0009) SH [SPS-{item.accession}]
(0040,0007) LO [Fundus photographs, both eyes]
(0040,0006) PN [Grader^Gina]
(0040,0008) SQ
(fffe,e000) -
(0008,0100) SH [{item.code}]
(0008,0102) SH [99LOCAL]
(0008,0104) LO [Fundus photography screening]
(fffe,e00d) -
(fffe,e0dd) -
(fffe,e00d) -
(fffe,e0dd) -
(0040,1001) SH [RP-{item.accession}]
"""
    folder.mkdir(parents=True, exist_ok=True)
    text = folder / f"{item.accession}.dump"
    text.write_text(dump)
    target = folder / f"{item.accession}.wl"
    result = run(["/usr/bin/dump2dcm", "-q", "+te", str(text), str(target)])
    assert result.returncode == 0, result.stderr
    text.unlink()
    return target


def _wait_for_port(port: int, process: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    while not service_available("127.0.0.1", port):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"{what} did not start listening on {port}")
        time.sleep(0.1)


@contextmanager
def wlmscpfs(root: Path, ae_title: str = "RIS") -> Iterator[tuple[int, Path]]:
    """DCMTK's worklist SCP on a free port; yields the port and the folder its files go in
    (``root/AE``, as wlmscpfs reads the called AE title's folder)."""
    require_binary("/usr/bin/wlmscpfs")
    folder = root / ae_title
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "lockfile").touch()
    port = free_port()
    process = subprocess.Popen(
        ["/usr/bin/wlmscpfs", "-dfp", str(root), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process, "wlmscpfs")
        yield port, folder
    finally:
        process.terminate()
        process.wait(10)


@contextmanager
def orthanc_worklists(
    root: Path, ae_title: str = "ORTHANCWL", caller: str = "EYESCREEN"
) -> Iterator[tuple[int, Path]]:
    """Orthanc with its ModalityWorklists plugin on free ports, answering ``caller`` (Orthanc
    refuses worklist queries from AEs not in DicomModalities); yields the DICOM port and the
    worklist folder."""
    require_binary(ORTHANC)
    require_binary(ORTHANC_WORKLISTS)
    folder = root / "worklists"
    folder.mkdir(parents=True, exist_ok=True)
    port, http = free_port(), free_port()
    config = {
        "Name": "worklist-test",
        "DicomAet": ae_title,
        "DicomPort": port,
        "HttpPort": http,
        "HttpServerEnabled": True,
        "RemoteAccessAllowed": False,
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "storage"),
        "Plugins": [ORTHANC_WORKLISTS],
        "Worklists": {"Enable": True, "Database": str(folder)},
        "DicomModalities": {"eyescreen": [caller, "127.0.0.1", 104]},
        "DicomCheckCalledAet": False,
    }
    (root / "orthanc.json").write_text(json.dumps(config))
    process = subprocess.Popen(
        [ORTHANC, str(root / "orthanc.json")],
        stdout=subprocess.DEVNULL,
        stderr=(root / "orthanc.log").open("wb"),
    )
    try:
        _wait_for_port(port, process, "Orthanc")
        yield port, folder
    finally:
        process.terminate()
        process.wait(20)
