"""Orthanc (Debian's ``orthanc`` package, ``/usr/sbin/Orthanc``) as the PACS: a real peer for
Storage Commitment (push model SCP since 1.6.0) and C-FIND, started per test on free ports
with a generated configuration in a temporary folder, as Orthanc's book describes."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from tests.conftest import free_port

ORTHANC = "/usr/sbin/Orthanc"


class Orthanc:
    """One Orthanc instance (AE title ``ae_title``) that knows the gateway as modality
    ``EYESCREEN`` (so it can send the N-EVENT-REPORT of a commitment back to it)."""

    def __init__(
        self, home: Path, gateway_ae: str, gateway_port: int, ae_title: str = "ORTHANC"
    ) -> None:
        if not Path(ORTHANC).exists() and shutil.which("Orthanc") is None:
            raise FileNotFoundError("Orthanc is not installed (apt-get install orthanc)")
        self.home, self.ae_title = home, ae_title
        home.mkdir(parents=True, exist_ok=True)
        self.port, self.http_port = free_port(), free_port()
        config = {
            "Name": "eyescreen-test-pacs",
            "StorageDirectory": str(home / "storage"),
            "IndexDirectory": str(home / "index"),
            "DicomAet": ae_title,
            "DicomPort": self.port,
            "HttpPort": self.http_port,
            "HttpServerEnabled": True,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "DicomCheckCalledAet": False,
            "UnknownSopClassAccepted": True,
            "SyncStorageArea": True,
            "StorageCompression": False,
            "DicomModalities": {"eyescreen": [gateway_ae, "127.0.0.1", gateway_port]},
            "StorageCommitmentReportsSize": 100,
            "OverwriteInstances": True,  # a re-send is stored again: it shows in /changes
            "DicomScuTimeout": 10,
            "Plugins": [],
        }
        self.receipts = home / "receipts.txt"  # one line per C-STORE kept, re-sends included
        lua = home / "receipts.lua"
        lua.write_text(
            "function OnStoredInstance(instanceId, tags, metadata, origin)\n"
            f"  local f = io.open({json.dumps(str(self.receipts))}, 'a')\n"
            "  f:write(tags['SOPInstanceUID'] .. '\\n')\n"
            "  f:close()\n"
            "end\n"
        )
        config["LuaScripts"] = [str(lua)]
        (home / "orthanc.json").write_text(json.dumps(config))
        self.log = home / "orthanc.log"
        self.process = subprocess.Popen(
            [shutil.which("Orthanc") or ORTHANC, str(home / "orthanc.json")],
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        self._wait()

    @property
    def destination(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def _wait(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/system", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None:
                break
            time.sleep(0.2)
        raise RuntimeError(f"Orthanc did not start: {self.log.read_text()[-2000:]}")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def instances(self) -> list[str]:
        """SOP Instance UIDs Orthanc holds."""
        ids = httpx.get(f"{self.url}/instances", timeout=10).json()
        tags = [httpx.get(f"{self.url}/instances/{i}/simplified-tags", timeout=10) for i in ids]
        return [t.json()["SOPInstanceUID"] for t in tags]

    def received(self) -> list[str]:
        """The SOP Instance UID of every C-STORE Orthanc kept, in order (a same-UID re-send
        is overwritten and listed again)."""
        if not self.receipts.exists():
            return []
        return [line for line in self.receipts.read_text().splitlines() if line]

    def forget(self, sop_instance_uid: str) -> None:
        """Delete an instance (as if the PACS lost it)."""
        found = httpx.post(f"{self.url}/tools/lookup", content=sop_instance_uid, timeout=10).json()
        for item in found:
            httpx.delete(f"{self.url}{item['Path']}", timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)
