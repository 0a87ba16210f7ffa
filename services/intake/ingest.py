"""Accepting a received image: keep the bytes, record the instance, queue the work, in that order.

The file is durable before the row commits; the inference task is an outbox row in the same
transaction, handed to the queue only after the commit. Receiving the same SOP Instance UID with
the same bytes again is acknowledged without new work; with different bytes it is refused and
the new copy kept aside for an administrator (never overwritten).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from services.db.base import utcnow
from services.db.models import CaseState, Instance, Patient, ScreeningCase, Study
from services.db.session import transaction
from services.kernel.errors import InstanceConflict, OutOfResources
from services.kernel.outbox import add_message
from services.kernel.storage import ContentStore, StoredFile
from services.kernel.task_names import INFER_TASK, INFER_URGENT_TASK

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReceivedImage:
    """What the gateway read from a data set, plus the bytes exactly as received."""

    sop_instance_uid: str
    sop_class_uid: str
    study_instance_uid: str
    series_instance_uid: str
    transfer_syntax_uid: str
    route: str
    encoded: bytes
    patient_id: str = ""
    issuer: str = ""
    patient_name: str = ""
    birth_date: str = ""
    sex: str = ""
    study_date: str = ""
    accession_number: str = ""
    laterality: str = ""
    calling_ae: str = ""
    urgent: bool = False  # from an urgent source: read in the urgent lane
    site: str = ""  # the clinic of its source (``sites.SourceSites``); "" the service's own


@dataclass(frozen=True)
class IngestResult:
    """The instance a received image became, and whether it was already there."""

    instance_id: int
    duplicate: bool
    outbox_ids: tuple[int, ...]


class IngestService:
    """Keeps a received image: bytes stored durably, then instance and outbox rows in one
    commit; a repeat with the same bytes is acknowledged, with other bytes refused."""

    def __init__(
        self, sessions: sessionmaker[Session], store: ContentStore, site: str = ""
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.site = site  # the site new cases belong to: who may see them in the web application
        self.quarantine = ContentStore(store.root.parent / "quarantine", store.min_free_bytes)

    def accept(self, image: ReceivedImage) -> IngestResult:
        """Keep the image durably; raise ``OutOfResources`` if it cannot be kept."""
        return self._record_retrying(image, self.keep_file(image))

    def keep_file(self, image: ReceivedImage) -> StoredFile:
        """The first half of ``accept``: the bytes, durably (``OutOfResources`` if full)."""
        return self.store.put(image.encoded)

    def record_group(
        self, group: list[tuple[ReceivedImage, StoredFile]]
    ) -> list[IngestResult | Exception]:
        """The second half of ``accept`` for images whose files are stored: their rows in one
        transaction, one commit (and one fsync) for all. Each image gets its own result or
        refusal. If the group's transaction fails as a whole (a concurrent writer in another
        process, one image's unexpected error), every image is recorded again on its own, as
        ``accept`` would, so one image's failure is its own."""
        outcomes: list[IngestResult | Exception] = []
        try:
            with transaction(self.sessions) as session:
                for image, stored in group:
                    try:
                        outcomes.append(self._record_in(session, image, stored.sha256, stored.size))
                    except InstanceConflict as exc:  # refused before writing anything
                        outcomes.append(exc)
        except OperationalError as exc:
            refusal = OutOfResources(f"database unavailable: {exc.orig!s}"[:200])
            return [refusal for _ in group]
        except Exception as exc:
            log.info("group of %d rolled back (%s); recording one by one", len(group), exc)
            return [self._record_alone(image, stored) for image, stored in group]
        return outcomes

    def _record_alone(self, image: ReceivedImage, stored: StoredFile) -> IngestResult | Exception:
        try:
            return self._record_retrying(image, stored)
        except Exception as exc:
            return exc

    def _record_retrying(self, image: ReceivedImage, stored: StoredFile) -> IngestResult:
        for attempt in range(3):
            try:
                return self._record(image, stored.sha256, stored.size)
            except IntegrityError:
                # A concurrent association inserted the same patient/study/instance: re-read.
                if attempt == 2:
                    raise
            except OperationalError as exc:
                raise OutOfResources(f"database unavailable: {exc.orig!s}"[:200]) from exc
        raise AssertionError("unreachable")

    def _record(self, image: ReceivedImage, sha256: str, size: int) -> IngestResult:
        with transaction(self.sessions) as session:
            return self._record_in(session, image, sha256, size)

    def _record_in(
        self, session: Session, image: ReceivedImage, sha256: str, size: int
    ) -> IngestResult:
        existing = session.scalar(
            select(Instance).where(Instance.sop_instance_uid == image.sop_instance_uid)
        )
        if existing is not None:
            return self._repeat(existing, image, sha256)
        case = self._case_for(session, image)
        case.last_image_at = utcnow()
        if case.state == CaseState.CLOSED:  # a late image of the visit: read it again
            case.state, case.closed_at = CaseState.OPEN, None
        instance = Instance(
            case=case,
            sop_instance_uid=image.sop_instance_uid,
            sop_class_uid=image.sop_class_uid,
            series_instance_uid=image.series_instance_uid,
            transfer_syntax_uid=image.transfer_syntax_uid,
            laterality=image.laterality,
            route=image.route,
            calling_ae=image.calling_ae,
            sha256=sha256,
            size_bytes=size,
        )
        session.add(instance)
        session.flush()
        task = INFER_URGENT_TASK if image.urgent else INFER_TASK
        message = add_message(session, task, instance.id)
        return IngestResult(instance.id, duplicate=False, outbox_ids=(message.id,))

    def _repeat(self, existing: Instance, image: ReceivedImage, sha256: str) -> IngestResult:
        if existing.sha256 == sha256:
            log.info("instance %s received again, identical; acknowledged", image.sop_instance_uid)
            return IngestResult(existing.id, duplicate=True, outbox_ids=())
        kept = self.quarantine.put(image.encoded)
        log.warning(
            "instance %s received again with different content; kept aside as %s",
            image.sop_instance_uid,
            kept.sha256,
        )
        raise InstanceConflict(
            "SOP Instance UID already stored with different content "
            f"(quarantined {kept.sha256[:12]})"
        )

    def _case_for(self, session: Session, image: ReceivedImage) -> ScreeningCase:
        study = session.scalar(
            select(Study).where(Study.study_instance_uid == image.study_instance_uid)
        )
        if study is None:
            patient = session.scalar(
                select(Patient).where(
                    Patient.patient_id == image.patient_id, Patient.issuer == image.issuer
                )
            )
            if patient is None:
                patient = Patient(
                    patient_id=image.patient_id,
                    issuer=image.issuer,
                    name=image.patient_name,
                    birth_date=image.birth_date,
                    sex=image.sex,
                )
                session.add(patient)
            study = Study(
                patient=patient,
                study_instance_uid=image.study_instance_uid,
                study_date=image.study_date,
                accession_number=image.accession_number,
            )
            session.add(study)
            session.flush()
        case = session.scalar(select(ScreeningCase).where(ScreeningCase.study_pk == study.id))
        if case is None:
            case = ScreeningCase(
                study_pk=study.id, site=image.site or self.site, urgent=image.urgent
            )
            session.add(case)
        elif image.urgent:
            case.urgent = True
        return case
