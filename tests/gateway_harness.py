"""A gateway in-process (real SCP, real database, recorded publishing) for tests to send to."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pynetdicom import AE, _config
from sqlalchemy import func, select

from dicom_gateway.server import start_gateway
from services.db.session import make_engine, make_session_factory
from services.intake.ingest import IngestService
from services.intake.routing import Router
from services.kernel.outbox import OutboxDispatcher
from services.kernel.settings import Settings
from services.kernel.storage import ContentStore
from tests.conftest import free_port
from tests.dicom_peers import storescu

STATUS = re.compile(r"DIMSE Status\s*:\s*0x([0-9a-fA-F]{4})")


class Gateway:
    def __init__(
        self, database_url: str, data_dir: Path, min_free_bytes: int = 0, **settings: object
    ) -> None:
        self.port = free_port()
        self.settings = Settings(
            data_dir=data_dir,
            database_url=database_url,
            dicom_port=self.port,
            dicom_host="127.0.0.1",
            **settings,  # type: ignore[arg-type]
        )
        self.sessions = make_session_factory(make_engine(database_url))
        self.published: list[tuple[str, list]] = []
        store = ContentStore(self.settings.images_dir, min_free_bytes)
        dispatcher = OutboxDispatcher(self.sessions, lambda n, a: self.published.append((n, a)))
        self.server = start_gateway(
            self.settings,
            IngestService(self.sessions, store, self.settings.site),
            dispatcher.dispatch,
            Router.from_settings(self.settings),
        )

    def storescu(
        self, *files: Path, calling: str = "CAMERA", extra: tuple[str, ...] = ()
    ) -> list[int]:
        """Send with DCMTK, proposing every syntax the gateway supports; one status per file."""
        result = storescu(self.port, files, calling=calling, extra=extra)
        statuses = [int(code, 16) for code in STATUS.findall(result.stdout + result.stderr)]
        assert len(statuses) == len(files), result.stdout[-2000:] + result.stderr[-2000:]
        return statuses

    def count(self, model: type) -> int:
        with self.sessions() as session:
            return int(session.scalar(select(func.count()).select_from(model)) or 0)

    def stored_bytes(self, sha256: str) -> bytes:
        return (self.settings.images_dir / sha256[:2] / sha256[2:4] / f"{sha256}.dcm").read_bytes()

    def send_raw(self, path: Path, calling: str = "RAWSENDER") -> int:
        """Send a file's bytes exactly as they are (pynetdicom streams a path without parsing
        the data set), for malformed files that DCMTK refuses to read before sending."""
        meta = dcmread(path, stop_before_pixels=True, force=True).file_meta
        ae = AE(ae_title=calling)
        ae.add_requested_context(meta.MediaStorageSOPClassUID, meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", self.port, ae_title="EYESCREEN")
        assert assoc.is_established
        _config.STORE_SEND_CHUNKED_DATASET = True
        try:
            reply = assoc.send_c_store(path)
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = False
            assoc.release()
        return int(reply.Status)


@pytest.fixture
def gateway(database_url: str, tmp_path: Path) -> Iterator[Gateway]:
    gw = Gateway(database_url, tmp_path / "var")
    yield gw
    gw.server.shutdown()
