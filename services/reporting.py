"""Turning a prediction into a stored report and delivering it to each destination exactly once.

The SR encoder and the sender are injected (highdicom and pynetdicom live in ``reports`` and
``dicom_gateway``). Each (report, destination) pair is a delivery row: retried with exponential
backoff, dead-lettered after the configured number of attempts, re-sendable by an operator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from services.db.base import utcnow
from services.db.models import (
    DeliveryState,
    Instance,
    Prediction,
    Report,
    ReportDelivery,
)
from services.db.session import transaction
from services.outbox import add_message
from services.screening import Finding
from services.storage import ContentStore
from services.taxonomy import load_taxonomy

log = logging.getLogger(__name__)

DELIVER_TASK = "reports.deliver"


@dataclass(frozen=True)
class ReportRequest:
    """Everything an SR encoder needs besides the source image."""

    route: str
    findings: tuple[Finding, ...]
    top3: tuple[str, ...]
    referral: bool
    quality: str
    algorithm_name: str
    algorithm_version: str
    weights_sha256: str
    threshold_set: str
    predecessor_sr: bytes | None = None


@dataclass(frozen=True)
class EncodedReport:
    sop_instance_uid: str
    data: bytes


EncodeReport = Callable[[bytes, ReportRequest], EncodedReport]
SendReport = Callable[[bytes, str], None]


class DeliveryError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class DeliveryOutcome:
    state: DeliveryState
    retry_in_s: float | None = None
    error: str | None = None


@dataclass
class ReportService:
    sessions: sessionmaker[Session]
    images: ContentStore
    reports: ContentStore
    encode: EncodeReport
    destinations: list[str] = field(default_factory=list)
    max_attempts: int = 8
    base_delay_s: float = 5.0
    max_delay_s: float = 3600.0

    def build(self, prediction_id: int) -> tuple[int, ...]:
        """Encode and store the SR of a prediction; queue one delivery per destination."""
        with self.sessions() as session:
            if session.scalar(select(Report.id).where(Report.prediction_pk == prediction_id)):
                return ()
            prediction = session.get_one(Prediction, prediction_id)
            instance = session.get_one(Instance, prediction.instance_pk)
            predecessor = session.scalar(
                select(Report).where(Report.instance_pk == instance.id).order_by(Report.id.desc())
            )
            request = self._request(prediction, instance.route, predecessor)
            source = self.images.read(instance.sha256)
            instance_id, predecessor_id = instance.id, predecessor.id if predecessor else None
        encoded = self.encode(source, request)
        stored = self.reports.put(encoded.data)
        with transaction(self.sessions) as session:
            report = Report(
                instance_pk=instance_id,
                prediction_pk=prediction_id,
                predecessor_pk=predecessor_id,
                sop_instance_uid=encoded.sop_instance_uid,
                sha256=stored.sha256,
            )
            session.add(report)
            session.flush()
            ids = []
            for destination in self.destinations:
                delivery = ReportDelivery(report_pk=report.id, destination=destination)
                session.add(delivery)
                session.flush()
                ids.append(add_message(session, DELIVER_TASK, delivery.id).id)
        log.info("report %s built for prediction %d", encoded.sop_instance_uid, prediction_id)
        return tuple(ids)

    def _request(
        self, prediction: Prediction, route: str, predecessor: Report | None
    ) -> ReportRequest:
        taxonomy = load_taxonomy(route)
        findings = tuple(
            Finding(
                f.code, taxonomy.node(f.code).name, f.level, f.probability, f.threshold, f.positive
            )
            for f in prediction.findings
        )
        model = prediction.model_version
        return ReportRequest(
            route=route,
            findings=findings,
            top3=tuple(prediction.top3),
            referral=prediction.referral,
            quality=prediction.quality,
            algorithm_name=model.name,
            algorithm_version=model.version,
            weights_sha256=model.weights_sha256,
            threshold_set=str(prediction.provenance.get("threshold_set", "checkpoint")),
            predecessor_sr=self.reports.read(predecessor.sha256) if predecessor else None,
        )

    def deliver(self, delivery_id: int, send: SendReport) -> DeliveryOutcome:
        """One attempt; the caller schedules the retry the outcome asks for."""
        with self.sessions() as session:
            delivery = session.get_one(ReportDelivery, delivery_id)
            if delivery.state != DeliveryState.PENDING:
                return DeliveryOutcome(delivery.state)
            data = self.reports.read(delivery.report.sha256)
            destination = delivery.destination
        try:
            send(data, destination)
        except DeliveryError as exc:
            return self._failed(delivery_id, str(exc), exc.status)
        with transaction(self.sessions) as session:
            delivery = session.get_one(ReportDelivery, delivery_id)
            delivery.attempts += 1
            delivery.state = DeliveryState.DELIVERED
            delivery.delivered_at = utcnow()
            delivery.last_status, delivery.last_error = 0, None
        log.info("report delivery %d to %s done", delivery_id, destination)
        return DeliveryOutcome(DeliveryState.DELIVERED)

    def _failed(self, delivery_id: int, error: str, status: int | None) -> DeliveryOutcome:
        with transaction(self.sessions) as session:
            delivery = session.get_one(ReportDelivery, delivery_id)
            delivery.attempts += 1
            delivery.last_error, delivery.last_status = error[:1000], status
            if delivery.attempts >= self.max_attempts:
                delivery.state = DeliveryState.DEAD
                log.error(
                    "report delivery %d dead-lettered after %d attempts: %s",
                    delivery_id,
                    delivery.attempts,
                    error,
                )
                return DeliveryOutcome(DeliveryState.DEAD, error=error)
            delay = min(self.max_delay_s, self.base_delay_s * 2 ** (delivery.attempts - 1))
            delivery.next_attempt_at = utcnow() + timedelta(seconds=delay)
            log.warning(
                "report delivery %d failed (attempt %d), retry in %.0fs: %s",
                delivery_id,
                delivery.attempts,
                delay,
                error,
            )
            return DeliveryOutcome(DeliveryState.PENDING, retry_in_s=delay, error=error)

    def requeue_dead(self, session: Session) -> list[int]:
        """Operator action: dead deliveries become pending again; returns outbox ids."""
        ids = []
        for delivery in session.scalars(
            select(ReportDelivery).where(ReportDelivery.state == DeliveryState.DEAD)
        ):
            delivery.state, delivery.attempts = DeliveryState.PENDING, 0
            delivery.next_attempt_at = utcnow()
            ids.append(add_message(session, DELIVER_TASK, delivery.id).id)
        return ids
