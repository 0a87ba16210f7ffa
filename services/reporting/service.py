"""Turning a screening case into a stored report and delivering it to each destination once.

One report covers every read image of a visit (both eyes). It is built when no image of the
case is still waiting to be read; a later image or an arbitration decision makes a revision
that points at its predecessor. Building the same content twice is a no-op (``content_key``);
what the content is comes from ``gathering``.

The SR encoder, the document renderer and the sender are injected (highdicom, jinja2/WeasyPrint
and pynetdicom live in ``reports`` and ``dicom_gateway``). Each (report, destination) pair is a
delivery row: retried with exponential backoff, dead-lettered after the configured number of
attempts, re-sent by an operator (``eyescreen reports retry``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.db.base import utcnow
from services.db.models import (
    CaseState,
    DeliveryChannel,
    DeliveryState,
    Instance,
    Prediction,
    Report,
    ReportDelivery,
    ScreeningCase,
)
from services.db.session import transaction
from services.kernel import metrics
from services.kernel.outbox import add_message
from services.kernel.storage import ContentStore
from services.kernel.task_names import DELIVER_HL7_TASK, DELIVER_TASK, RENDER_TASK
from services.reporting.commitment import CommitmentResult, record_commitment
from services.reporting.content import (
    CaseReport,
    EncodeHl7,
    EncodeReport,
    RenderDocument,
    WrapDocument,
)
from services.reporting.gathering import content_of_report, gather_case
from services.reporting.sending import AskPacs, DeliveryError, DeliveryOutcome, SendReport, Sent

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Due:
    """A delivery due now: its report, whether its last attempt's outcome is unknown, and the
    stored message it sends instead of the SR (an HL7 delivery)."""

    delivery_id: int
    report: Report
    in_doubt: bool
    payload_sha256: str | None

    @property
    def is_dicom(self) -> bool:
        return self.payload_sha256 is None


@dataclass
class ReportService:
    """One SR per screening case, revised when the case changes, delivered to every
    destination with retry, backoff and dead-letter; the PDF when the case closes."""

    sessions: sessionmaker[Session]
    images: ContentStore
    reports: ContentStore
    encode: EncodeReport
    render: RenderDocument | None = None
    wrap_pdf: WrapDocument | None = None  # set: the PDF goes to the PACS as well
    destinations: list[str] = field(default_factory=list)
    encode_hl7: EncodeHl7 | None = None  # set with hl7_destinations: results to the record
    hl7_destinations: list[str] = field(default_factory=list)
    max_attempts: int = 8
    base_delay_s: float = 5.0
    max_delay_s: float = 3600.0
    lease_s: float = 30.0  # an attempt started longer ago than this was lost with its process

    def build_case(self, case_id: int) -> tuple[int, ...]:
        """Build the case's report if its content changed; returns outbox ids of deliveries."""
        with self.sessions() as session:
            gathered = gather_case(session, case_id, self.images, self.reports)
        if gathered is None:
            return ()
        content, predecessor_id = gathered.content, gathered.predecessor_id
        encoded = self.encode(content)
        sr = self.reports.put(encoded.data)
        # The PDF goes with the SR only when the PACS gets it too; otherwise it is rendered
        # (with its heatmaps) once the case is closed, so that it never delays an SR.
        pdf = self.reports.put(self.render(content)) if self.render and self.wrap_pdf else None
        hl7 = self._hl7_messages(content, encoded.sop_instance_uid)
        try:
            with transaction(self.sessions) as session:
                report = Report(
                    case_pk=case_id,
                    predecessor_pk=predecessor_id,
                    decision_pk=gathered.decision_id,
                    content_key=gathered.content_key,
                    verified=content.verdict is not None,
                    sop_instance_uid=encoded.sop_instance_uid,
                    sha256=sr.sha256,
                    pdf_sha256=pdf.sha256 if pdf else None,
                    predictions=[session.get_one(Prediction, p) for p in gathered.prediction_ids],
                )
                session.add(report)
                session.flush()
                ids = [self._delivery(session, report.id, d) for d in self.destinations]
                ids += [
                    self._delivery(session, report.id, d, payload) for d, payload in hl7.items()
                ]
                closed = session.get_one(ScreeningCase, case_id).state == CaseState.CLOSED
                if self.render and pdf is None and closed:  # a revision of a closed case
                    ids.append(add_message(session, RENDER_TASK, report.id).id)
        except IntegrityError:
            log.info("case %d: the same report was built concurrently; keeping that one", case_id)
            return ()
        log.info(
            "case %d: report %s built (%d image(s)%s%s)",
            case_id,
            encoded.sop_instance_uid,
            len(content.images),
            ", verified" if content.verdict else "",
            ", revision" if predecessor_id else "",
        )
        return tuple(ids)

    def _hl7_messages(self, content: CaseReport, sr_uid: str) -> dict[str, str]:
        """Destination -> sha256 of its stored ORU^R01 (one per destination: MSH-5 differs)."""
        if self.encode_hl7 is None:
            return {}
        return {
            destination: self.reports.put(self.encode_hl7(content, sr_uid, destination)).sha256
            for destination in self.hl7_destinations
        }

    @staticmethod
    def _delivery(
        session: Session, report_id: int, destination: str, hl7_sha256: str | None = None
    ) -> int:
        """A delivery row and its outbox row: the SR by C-STORE, or (given the stored ORU^R01)
        the HL7 message by MLLP, each with the same retry and dead letter."""
        delivery = ReportDelivery(
            report_pk=report_id,
            destination=destination,
            channel=DeliveryChannel.HL7 if hl7_sha256 else DeliveryChannel.DICOM,
            payload_sha256=hl7_sha256,
        )
        session.add(delivery)
        session.flush()
        return add_message(session, delivery_task(delivery.channel), delivery.id).id

    def render_pdf(self, report_id: int) -> None:
        """Render and keep the PDF of a report built without one; idempotent."""
        if self.render is None:
            return
        with self.sessions() as session:
            report = session.get_one(Report, report_id)
            if report.pdf_sha256 is not None:
                return
            content = content_of_report(session, report, self.images)
        pdf = self.reports.put(self.render(content))
        with transaction(self.sessions) as session:
            session.get_one(Report, report_id).pdf_sha256 = pdf.sha256
        log.info("report %d: PDF rendered", report_id)

    def objects_for(self, report: Report) -> list[bytes]:
        """What a delivery sends: the SR, and the PDF wrapped as a DICOM object if configured."""
        objects = [self.reports.read(report.sha256)]
        if self.wrap_pdf is not None and report.pdf_sha256:
            with self.sessions() as session:
                sha256 = session.scalars(
                    select(Instance.sha256).where(Instance.case_pk == report.case_pk)
                ).first()
            assert sha256 is not None  # a report exists only for a case with images
            objects.append(
                self.wrap_pdf(self.reports.read(report.pdf_sha256), self.images.read(sha256))
            )
        return objects

    def deliver(
        self, delivery_id: int, send: SendReport, ask: AskPacs | None = None
    ) -> DeliveryOutcome:
        """One attempt; the caller schedules the retry the outcome asks for."""
        return self.deliver_together([delivery_id], send, ask)[delivery_id]

    def deliver_together(
        self, delivery_ids: Sequence[int], send: SendReport, ask: AskPacs | None = None
    ) -> dict[int, DeliveryOutcome]:
        """One attempt at each delivery, those due to one destination over one association.
        A delivery after the one that failed is not tried: PENDING with ``retry_in_s`` 0.
        A delivery whose last C-STORE went unanswered is first looked for at the PACS
        (``ask``): found, it is delivered without sending it again."""
        outcomes: dict[int, DeliveryOutcome] = {}
        due: dict[str, list[_Due]] = {}
        with self.sessions() as session:
            for delivery_id in delivery_ids:
                delivery = session.get_one(ReportDelivery, delivery_id)
                wait = (delivery.next_attempt_at - utcnow()).total_seconds()
                held = self._held_for(delivery)
                if delivery.state != DeliveryState.PENDING:
                    outcomes[delivery_id] = DeliveryOutcome(delivery.state)
                elif delivery.attempts and wait > 0:  # backing off: not yet
                    outcomes[delivery_id] = DeliveryOutcome(DeliveryState.PENDING, retry_in_s=wait)
                elif held > 0:  # another process is sending it now
                    outcomes[delivery_id] = DeliveryOutcome(DeliveryState.PENDING, retry_in_s=held)
                else:
                    due.setdefault(delivery.destination, []).append(
                        _Due(
                            delivery_id,
                            delivery.report,
                            delivery.in_doubt,
                            delivery.payload_sha256,
                        )
                    )
        for destination, items in due.items():
            outcomes.update(self._settle_and_send(destination, items, send, ask))
        return outcomes

    def _held_for(self, delivery: ReportDelivery) -> float:
        """Seconds left of another attempt's hold on this delivery (0: nobody holds it)."""
        if delivery.sending_at is None:
            return 0.0
        return max(0.0, self.lease_s - (utcnow() - delivery.sending_at).total_seconds())

    def _settle_and_send(
        self,
        destination: str,
        items: list[_Due],
        send: SendReport,
        ask: AskPacs | None,
    ) -> dict[int, DeliveryOutcome]:
        """Ask the PACS about the DICOM deliveries in doubt, then send what it does not hold
        (an HL7 message is sent again: the record's interface engine keys it by control id)."""
        doubtful = {
            d.report.sop_instance_uid: d.delivery_id for d in items if d.in_doubt and d.is_dicom
        }
        held: set[str] = set()
        if doubtful and ask is not None:
            try:
                held = (ask(list(doubtful), destination) or set()) & set(doubtful)
            except DeliveryError as exc:  # cannot ask: nothing is sent again blindly
                metrics.DELIVERIES.labels(outcome="failed").inc(len(items))
                return {
                    d.delivery_id: self._failed(
                        d.delivery_id, f"asking the PACS: {exc}", exc.status, unknown=d.in_doubt
                    )
                    for d in items
                }
        outcomes = self._delivered([doubtful[uid] for uid in held], destination, None)
        if held:
            log.info(
                "%d report(s) in doubt were found at %s: not sent again", len(held), destination
            )
        todo = [d for d in items if d.delivery_id not in outcomes]
        if todo:
            outcomes.update(self._send_to(destination, todo, send))
        return outcomes

    def _objects_of(self, due: _Due) -> list[bytes]:
        if due.payload_sha256 is not None:  # the HL7 message built with the report
            return [self.reports.read(due.payload_sha256)]
        return self.objects_for(due.report)

    def _send_to(
        self, destination: str, items: list[_Due], send: SendReport
    ) -> dict[int, DeliveryOutcome]:
        transaction_uid, ids = self._sending([d.delivery_id for d in items])
        held = {
            d.delivery_id: DeliveryOutcome(DeliveryState.PENDING, retry_in_s=self.lease_s)
            for d in items
        }
        items = [d for d in items if d.delivery_id in ids]
        if not items:
            return held  # another process claimed them a moment ago
        objects = [self._objects_of(d) for d in items]
        sent_info: Sent | None = None
        try:
            sent_info = send(objects, destination, transaction_uid)
            error, sent = None, len(ids)
        except DeliveryError as exc:
            error, sent = exc, min(exc.sent, len(ids))
        commitment = sent_info.commitment_uid if sent_info else None
        outcomes = self._delivered(ids[:sent], destination, commitment)
        if error is not None:
            metrics.DELIVERIES.labels(outcome="failed").inc()
            outcomes[ids[sent]] = self._failed(ids[sent], str(error), error.status, error.unknown)
            self._untried(ids[sent + 1 :])
            for untried in ids[sent + 1 :]:
                outcomes[untried] = DeliveryOutcome(DeliveryState.PENDING, retry_in_s=0.0)
        for result in sent_info.results if sent_info else ():
            self.commitment_answered(result)
        return {i: held[i] for i in held if i not in ids} | outcomes

    def commitment_answered(self, result: CommitmentResult) -> list[int]:
        """The PACS's Storage Commitment result; returns outbox ids of the re-sends it asks."""
        with transaction(self.sessions) as session:
            return record_commitment(session, result)

    def _sending(self, ids: list[int]) -> tuple[str, list[int]]:
        """Before the C-STOREs: claim the deliveries no other attempt holds; they are in doubt
        until their outcome is recorded (a process killed mid-send leaves them so: the next
        attempt asks the PACS first), and carry the Transaction UID their commitment will be
        asked under. Returns that UID and the deliveries claimed, in order."""
        transaction_uid = f"2.25.{uuid.uuid4().int}"  # a UUID-derived UID (PS3.5 B.2)
        now = utcnow()
        free = or_(
            ReportDelivery.sending_at.is_(None),
            ReportDelivery.sending_at < now - timedelta(seconds=self.lease_s),
        )
        claimed = []
        with transaction(self.sessions) as session:
            for delivery_id in ids:
                result = session.execute(
                    update(ReportDelivery)
                    .where(ReportDelivery.id == delivery_id, free)
                    .values(
                        in_doubt=True,
                        sending_at=now,
                        commitment_uid=transaction_uid,
                        committed_at=None,
                    )
                )
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    claimed.append(delivery_id)
        return transaction_uid, claimed

    def _untried(self, ids: list[int]) -> None:
        if not ids:
            return
        with transaction(self.sessions) as session:
            for delivery_id in ids:
                delivery = session.get_one(ReportDelivery, delivery_id)
                delivery.in_doubt, delivery.sending_at = False, None
                delivery.commitment_uid = None

    def _delivered(
        self, ids: list[int], destination: str, commitment_uid: str | None
    ) -> dict[int, DeliveryOutcome]:
        if not ids:
            return {}
        with transaction(self.sessions) as session:
            now = utcnow()
            for delivery_id in ids:
                delivery = session.get_one(ReportDelivery, delivery_id)
                if commitment_uid is not None and delivery.commitment_uid != commitment_uid:
                    continue  # the PACS's commitment result came first and failed it: re-sent
                delivery.attempts += 1
                delivery.state = DeliveryState.DELIVERED
                delivery.delivered_at = now
                delivery.last_status, delivery.last_error = 0, None
                delivery.in_doubt, delivery.sending_at = False, None
                if commitment_uid is None:  # not asked (not supported, or found by C-FIND)
                    delivery.commitment_uid = None
                else:
                    delivery.commitment_requested_at = now
        metrics.DELIVERIES.labels(outcome="delivered").inc(len(ids))
        log.info("report deliveries %s to %s done", ids, destination)
        return {delivery_id: DeliveryOutcome(DeliveryState.DELIVERED) for delivery_id in ids}

    def _failed(
        self, delivery_id: int, error: str, status: int | None, unknown: bool = False
    ) -> DeliveryOutcome:
        with transaction(self.sessions) as session:
            delivery = session.get_one(ReportDelivery, delivery_id)
            delivery.attempts += 1
            delivery.last_error, delivery.last_status = error[:1000], status
            delivery.in_doubt, delivery.sending_at = unknown, None
            delivery.commitment_uid = None
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
                "report delivery %d failed (attempt %d%s), retry in %.0fs: %s",
                delivery_id,
                delivery.attempts,
                ", outcome unknown" if unknown else "",
                delay,
                error,
            )
            return DeliveryOutcome(DeliveryState.PENDING, retry_in_s=delay, error=error)


def delivery_task(channel: DeliveryChannel) -> str:
    """The task that sends a delivery of this channel."""
    return DELIVER_HL7_TASK if channel == DeliveryChannel.HL7 else DELIVER_TASK


def requeue_dead(session: Session, delivery_ids: Sequence[int] | None = None) -> list[int]:
    """Operator action: dead deliveries (all, or those given) become pending again; returns
    the outbox ids that send them."""
    query = select(ReportDelivery).where(ReportDelivery.state == DeliveryState.DEAD)
    if delivery_ids:
        query = query.where(ReportDelivery.id.in_(delivery_ids))
    ids = []
    for delivery in session.scalars(query):
        delivery.state, delivery.attempts = DeliveryState.PENDING, 0
        delivery.next_attempt_at = utcnow()
        ids.append(add_message(session, delivery_task(delivery.channel), delivery.id).id)
    return ids
