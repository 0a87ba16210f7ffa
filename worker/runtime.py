"""Per-process resources of a worker: database engine, stores, models. Built on first use in the
process that runs tasks (``worker_process_init`` warms it), never at import or in the parent
(which imports PyTorch before forking its children, and nothing more: ``eyescreen worker``)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path
from typing import Any

from pydicom.uid import generate_uid
from sqlalchemy.orm import Session, sessionmaker

from services.db.models import Prediction, Report
from services.db.session import make_engine, make_session_factory, transaction
from services.kernel.outbox import OutboxDispatcher, Publish
from services.kernel.settings import Settings
from services.kernel.storage import ContentStore
from services.reporting.service import ReportService
from services.screening import registry
from services.screening.decision import heatmap_targets
from services.screening.inference import BatchPolicy, InferenceService, PhotoDecoder
from services.taxonomy.tree import ROUTES
from worker.failpoints import reach

log = logging.getLogger(__name__)


def load_site_thresholds(settings: Settings) -> tuple[dict[str, dict[str, float]], str]:
    """This site's threshold overrides per route, and the name of the threshold set."""
    if settings.thresholds_file is None:
        return {}, "checkpoint"
    raw = settings.thresholds_file.read_bytes()
    data = json.loads(raw)
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise ValueError(f"{settings.thresholds_file}: expected {{route: {{code: threshold}}}}")
    digest = hashlib.sha256(raw).hexdigest()[:12]
    overrides = {
        route: {code: float(value) for code, value in codes.items()}
        for route, codes in data.items()
    }
    return overrides, f"site:{settings.site or 'default'}:{digest}"


class SiteModel:
    """A loaded model with this site's threshold overrides on top of the checkpoint's operating
    point (same probability scale as the checkpoint's; not-assessed classes take none)."""

    def __init__(self, predictor: Any, overrides: dict[str, float], threshold_set: str) -> None:
        unknown = [code for code in overrides if not predictor.taxonomy.has(code)]
        if unknown:
            raise ValueError(f"threshold overrides name unknown codes: {unknown}")
        self.predictor = predictor
        self.name, self.version, self.sha256 = predictor.name, predictor.version, predictor.sha256
        self.taxonomy = predictor.taxonomy
        self.stand_in = bool(predictor.stand_in)
        self.threshold_set = threshold_set if overrides else "checkpoint"
        self.operating_point = predictor.operating_point.with_overrides(overrides)

    @property
    def device(self) -> Any:
        return self.predictor.device

    before_predict: Any = None  # the fault tests' "mid-inference" failpoint

    def predict(self, images: list[Any]) -> list[dict[str, float]]:
        if self.before_predict is not None:
            self.before_predict()
        return self.predictor.predict(images)  # type: ignore[no-any-return]

    def read(self, images: list[Any]) -> list[Any]:
        """What inference calls: probabilities and the guard's verdict per image."""
        if self.before_predict is not None:
            self.before_predict()
        return self.predictor.read(images)  # type: ignore[no-any-return]

    def provenance(self, elapsed_s: float, batch_size: int) -> dict[str, Any]:
        provenance: dict[str, Any] = self.predictor.provenance(elapsed_s, batch_size)
        return provenance | {"threshold_set": self.threshold_set}


def process_gone(worker_id: str) -> bool:
    """Whether a worker id (``host:pid``) names a process of this machine that no longer runs
    (killed): its claims need not wait for their lease. Another machine's: not known."""
    host, _, pid = worker_id.rpartition(":")
    if host != socket.gethostname()[: len(host)] or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def device_uid(settings: Settings) -> str:
    """A stable UID for this installation's screening device (the SR observer)."""
    return generate_uid(entropy_srcs=["eyescreen-device", settings.ae_title])


@dataclass
class WorkerRuntime:
    """A worker process's resources (database, stores, models, sender) and the services built
    on them; made in the process that runs tasks, never at import."""

    settings: Settings
    publish: Publish
    sessions: sessionmaker[Session] = field(init=False)
    _predictors: dict[Path, SiteModel] = field(default_factory=dict, init=False)
    _checkpoints: dict[str, Path] = field(default_factory=dict, init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False)
    _heatmap_maker: Any = field(default=None, init=False)
    # destination -> monotonic time before which inline delivery leaves it to the queue
    unreachable_until: dict[str, float] = field(default_factory=dict, init=False)
    _sender: Any = field(default=None, init=False)
    _asker: Any = field(default=None, init=False)
    _decoder: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.sessions = make_session_factory(make_engine(self.settings.effective_database_url))
        margin = self.settings.min_free_disk_mb * 2**20
        self.images = ContentStore(self.settings.images_dir, margin)
        self.report_store = ContentStore(self.settings.reports_dir, 0)
        lease = timedelta(seconds=self.settings.inline_lease_s)
        self.dispatcher = OutboxDispatcher(self.sessions, self.publish, lease)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"[:64]
        self.site_thresholds, self.threshold_set = load_site_thresholds(self.settings)
        self.batch_policy = BatchPolicy(
            size=self.settings.inference_batch_size,
            lease=timedelta(seconds=self.settings.inference_lease_s),
            gone=process_gone,
        )

    def default_checkpoint(self, route: str) -> Path:
        """The configured checkpoint, else the shipped one (used when none is activated)."""
        from ml.predictor import resolve_checkpoint

        if route not in self._checkpoints:
            configured = getattr(self.settings, f"{route}_checkpoint")
            scratch = self.settings.data_path / "models"
            self._checkpoints[route] = resolve_checkpoint(route, configured, scratch)
        return self._checkpoints[route]

    def checkpoint_for(self, route: str) -> Path:
        """Read at task time: an activation in the registry takes effect without a restart."""
        with self.sessions() as session:
            row = registry.active(session, route, self.settings.site)
            if row is not None:
                return Path(row.path)
        return self.default_checkpoint(route)

    def warm_up(self) -> None:
        """Load both models now, so the first image does not wait for them."""
        for route in ROUTES:
            self.predictor(route)

    def predictor(self, route: str) -> SiteModel:
        """The active model for a route; each checkpoint is loaded once per process."""
        return self.predictor_at(self.checkpoint_for(route))

    def predictor_at(self, path: Path) -> SiteModel:
        with self._lock:
            if path not in self._predictors:
                import torch

                from ml.predictor import Predictor

                torch.set_num_threads(self.settings.effective_torch_threads)
                predictor = Predictor.load(
                    path, self.settings.device, self.settings.inference_precision
                )
                if self.settings.torch_compile:
                    predictor.compile()
                route = str(predictor.meta.get("route", "?"))
                log.info(
                    "loaded %s model %s %s (%s) on %s",
                    route,
                    predictor.name,
                    predictor.version,
                    predictor.sha256[:12],
                    predictor.device,
                )
                while len(self._predictors) >= 4:  # old versions after activations
                    self._predictors.pop(next(iter(self._predictors)))
                model = SiteModel(
                    predictor, self.site_thresholds.get(route, {}), self.threshold_set
                )
                model.before_predict = partial(reach, self.settings, "mid-inference")
                self._predictors[path] = model
            return self._predictors[path]

    def photo_decoder(self) -> PhotoDecoder:
        """JPEG decoded on the model's device when that is a GPU (and the setting allows it),
        everything else on the CPU; made once per process."""
        if self._decoder is None:
            from ml.predictor import pick_device
            from worker.decoding import photo_decoder

            device = pick_device(self.settings.device)
            on_gpu = device.type == "cuda" and self.settings.gpu_jpeg_decode
            self._decoder = photo_decoder(device if on_gpu else None)
            log.info("JPEG pixel data decoded on %s", device if on_gpu else "the CPU")
        return self._decoder  # type: ignore[no-any-return]

    def inference(self) -> InferenceService:
        models: dict[str, SiteModel] = {}  # one registry lookup per route per task

        def model_for(route: str) -> SiteModel:
            if route not in models:
                models[route] = self.predictor(route)
            return models[route]

        def known_elsewhere(route: str, images: list[Any]) -> list[str | None]:
            """Per photograph, another route whose model's guard finds it familiar."""
            found: list[str | None] = [None] * len(images)
            for other in (r for r in ROUTES if r != route):
                model = model_for(other)
                if model.predictor.guard is None:
                    continue
                for i, read in enumerate(model.read(images)):
                    if found[i] is None and not read.unfamiliar:
                        found[i] = other
            return found

        return InferenceService(
            self.sessions,
            self.images,
            self.photo_decoder(),
            model_for,
            lambda route: str(model_for(route).predictor.path),
            known_elsewhere,
        )

    def sender(self):  # type: ignore[no-untyped-def]
        """C-STORE to the destinations, over TLS where a destination asks for it; made once
        per process (loading certificates for every delivery would sit on the hot path)."""
        from dicom_gateway.tls import client_context
        from reports.delivery import make_sender

        if self._sender is None:
            needs_tls = any(node.tls for node in self.settings.sr_destinations)
            tls = client_context(self.settings) if needs_tls else None
            self._sender = _after(make_sender(self.settings.ae_title, tls), self, "mid-delivery")
        return self._sender

    def hl7_sender(self):  # type: ignore[no-untyped-def]
        """ORU^R01 to the hospital's record over MLLP, the receiver's ACK honoured."""
        from reports.mllp import make_mllp_sender

        return make_mllp_sender()

    def asker(self):  # type: ignore[no-untyped-def]
        """C-FIND at the destinations: does it hold a report whose C-STORE went unanswered?"""
        from dicom_gateway.tls import client_context
        from reports.delivery import make_asker

        if self._asker is None:
            needs_tls = any(node.tls for node in self.settings.sr_destinations)
            tls = client_context(self.settings) if needs_tls else None
            self._asker = make_asker(self.settings.ae_title, tls)
        return self._asker

    def explain_report(self, report_id: int) -> None:
        """Grad-CAM heatmaps for the report's predictions that lack one, each made with the
        exact model that made the prediction. A failure leaves that image without a heatmap."""
        from dicom_gateway.pixels import decode_rgb
        from ml.heatmaps import HeatmapMaker

        if not self.settings.heatmaps:
            return
        with self.sessions() as session:
            report = session.get_one(Report, report_id)
            todo = [
                (p.id, p.model_version, p.instance.sha256, p.findings)
                for p in report.predictions
                if p.heatmap_path is None and p.quality == "gradable"
            ]
        if self._heatmap_maker is None:
            self._heatmap_maker = HeatmapMaker(self.settings.heatmaps_dir)
        for prediction_id, model, sha256, findings in todo:
            if not Path(model.path).exists():
                log.warning("prediction %d: its model file is gone; no heatmap", prediction_id)
                continue
            predictor = self.predictor_at(Path(model.path)).predictor
            if predictor.sha256 != model.weights_sha256:  # the file was replaced since
                log.warning(
                    "prediction %d: its model is no longer on disk; no heatmap", prediction_id
                )
                continue
            targets = heatmap_targets(predictor.taxonomy, findings)
            if not targets:
                continue
            try:
                heatmap = self._heatmap_maker(
                    predictor, decode_rgb(self.images.read(sha256)), targets
                )
            except Exception:  # a heatmap is an aid: the report goes out without it
                log.exception("heatmap of prediction %d failed", prediction_id)
                continue
            with transaction(self.sessions) as session:
                session.get_one(Prediction, prediction_id).heatmap_path = heatmap

    def reports(self) -> ReportService:
        from dicom_gateway.pixels import decode_rgb
        from reports.document import make_renderer
        from reports.encapsulated import wrap_pdf
        from reports.hl7 import make_oru_encoder
        from reports.sr import make_encoder

        return ReportService(
            sessions=self.sessions,
            images=self.images,
            reports=self.report_store,
            encode=_before(make_encoder(device_uid(self.settings)), self, "mid-report"),
            destinations=[str(d) for d in self.settings.sr_destinations],
            encode_hl7=make_oru_encoder(
                self.settings.ae_title, self.settings.hl7_sending_facility or self.settings.site
            ),
            hl7_destinations=[str(d) for d in self.settings.hl7_destinations],
            render=make_renderer(decode_rgb) if self.settings.pdf_reports else None,
            wrap_pdf=wrap_pdf if self.settings.send_pdf_to_pacs else None,
            max_attempts=self.settings.sr_delivery_max_attempts,
            base_delay_s=self.settings.sr_retry_base_s,
            lease_s=self.settings.inference_lease_s,
        )


def _before(function: Any, rt: WorkerRuntime, point: str) -> Any:
    """``function`` with the fault tests' failpoint ``point`` reached before it runs."""

    def wrapped(*args: Any) -> Any:
        reach(rt.settings, point)
        return function(*args)

    return wrapped


def _after(function: Any, rt: WorkerRuntime, point: str) -> Any:
    """``function`` with the fault tests' failpoint ``point`` reached after it returned."""

    def wrapped(*args: Any) -> Any:
        result = function(*args)
        reach(rt.settings, point)
        return result

    return wrapped
