"""Per-process resources of a worker: database engine, stores, models. Built on first use in the
process that runs tasks (``worker_process_init`` warms it), never at import or in the parent."""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from services.db.session import make_engine, make_session_factory
from services.inference import BatchPolicy, InferenceService
from services.outbox import OutboxDispatcher, Publish
from services.reporting import ReportService
from services.settings import Settings
from services.storage import ContentStore
from services.taxonomy import ROUTES

log = logging.getLogger(__name__)


def device_uid(settings: Settings) -> str:
    """A stable UID for this installation's screening device (the SR observer)."""
    return generate_uid(entropy_srcs=["eyescreen-device", settings.ae_title])


@dataclass
class WorkerRuntime:
    settings: Settings
    publish: Publish
    sessions: sessionmaker[Session] = field(init=False)
    _predictors: dict[str, object] = field(default_factory=dict, init=False)
    _checkpoints: dict[str, Path] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)

    def __post_init__(self) -> None:
        self.sessions = make_session_factory(make_engine(self.settings.effective_database_url))
        margin = self.settings.min_free_disk_mb * 2**20
        self.images = ContentStore(self.settings.images_dir, margin)
        self.report_store = ContentStore(self.settings.reports_dir, 0)
        self.dispatcher = OutboxDispatcher(self.sessions, self.publish)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"[:64]
        self.batch_policy = BatchPolicy(
            size=self.settings.inference_batch_size,
            lease=timedelta(seconds=self.settings.inference_lease_s),
        )

    def checkpoint_for(self, route: str) -> Path:
        from ml.predictor import resolve_checkpoint

        if route not in self._checkpoints:
            configured = getattr(self.settings, f"{route}_checkpoint")
            scratch = self.settings.data_path / "models"
            self._checkpoints[route] = resolve_checkpoint(route, configured, scratch)
        return self._checkpoints[route]

    def warm_up(self) -> None:
        """Load both models now, so the first image does not wait for them."""
        for route in ROUTES:
            self.predictor(route)

    def predictor(self, route: str):  # type: ignore[no-untyped-def]
        """The model for a route, loaded once per process."""
        with self._lock:
            if route not in self._predictors:
                import torch

                from ml.predictor import Predictor

                if self.settings.torch_threads:
                    torch.set_num_threads(self.settings.torch_threads)
                path = self.checkpoint_for(route)
                predictor = Predictor.load(path, self.settings.device)
                log.info(
                    "loaded %s model %s %s (%s) on %s",
                    route,
                    predictor.name,
                    predictor.version,
                    predictor.sha256[:12],
                    predictor.device,
                )
                self._predictors[route] = predictor
            return self._predictors[route]

    def inference(self) -> InferenceService:
        from dicom_gateway.pixels import decode_rgb

        return InferenceService(
            self.sessions,
            self.images,
            decode_rgb,
            self.predictor,
            lambda route: str(self.checkpoint_for(route)),
        )

    def reports(self) -> ReportService:
        from dicom_gateway.pixels import decode_rgb
        from reports.document import make_renderer
        from reports.encapsulated import wrap_pdf
        from reports.sr import make_encoder

        return ReportService(
            sessions=self.sessions,
            images=self.images,
            reports=self.report_store,
            encode=make_encoder(device_uid(self.settings)),
            destinations=[str(d) for d in self.settings.sr_destinations],
            render=make_renderer(decode_rgb) if self.settings.pdf_reports else None,
            wrap_pdf=wrap_pdf if self.settings.send_pdf_to_pacs else None,
            max_attempts=self.settings.sr_delivery_max_attempts,
            base_delay_s=self.settings.sr_retry_base_s,
        )
