"""Reading stored images with the model and recording the decision, idempotently.

The model and the pixel decoder are injected (the worker provides torch and pydicom ones; the
decoder takes a whole batch, so that a GPU decodes it in one call), so this module holds only
the rules: one prediction per (instance, model), every probability kept with the thresholds
used, a report queued in the same transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, Protocol

import numpy as np
from sqlalchemy import exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from services.db.base import utcnow
from services.db.models import (
    Instance,
    InstanceState,
    ModelVersion,
    Prediction,
    PredictionFinding,
    ScreeningCase,
)
from services.db.session import transaction
from services.kernel import metrics
from services.kernel.outbox import add_message
from services.kernel.storage import ContentStore
from services.kernel.task_names import REPORT_TASK
from services.screening.decision import ModelRead, OperatingPoint, decide
from services.screening.quality import (
    GRADABLE,
    Quality,
    QualitySample,
    assess,
    image_statistics,
)
from services.taxonomy.tree import Taxonomy

log = logging.getLogger(__name__)


class Model(Protocol):
    """A loaded model: probabilities on its operating point's scale, and that operating point.
    ``stand_in`` marks an untrained stand-in, which must refer every image. ``read`` also says
    whether each photograph lies beyond the model's guard (then it is not assessed)."""

    name: str
    version: str
    sha256: str
    taxonomy: Taxonomy
    stand_in: bool
    operating_point: OperatingPoint

    def read(self, images: list[Any]) -> list[ModelRead]: ...

    def provenance(self, elapsed_s: float, batch_size: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class Photo:
    """A decoded photograph: ``pixels`` for the model (an RGB uint8 array, or the decoder's own
    image already on the model's device) and ``sample`` for the quality gate."""

    pixels: Any
    sample: QualitySample

    @classmethod
    def of(cls, rgb: np.ndarray) -> Photo:
        return cls(rgb, QualitySample.of(rgb))


# Stored encodings -> one decoded photograph, or the error that refused it, per image.
PhotoDecoder = Callable[[Sequence[bytes]], list[Photo | Exception]]


def decode_each(decode: Callable[[bytes], np.ndarray]) -> PhotoDecoder:
    """A batch decoder made of a one-image one; an image it refuses (ValueError, OSError)
    fails alone."""

    def decode_all(encoded: Sequence[bytes]) -> list[Photo | Exception]:
        photos: list[Photo | Exception] = []
        for one in encoded:
            try:
                photos.append(Photo.of(decode(one)))
            except (ValueError, OSError) as exc:
                photos.append(exc)
        return photos

    return decode_all


# Per photograph of a batch sent to a route: another route whose model knows it (its guard
# finds it familiar), or None. A model without a guard of its own still should not answer a
# photograph of another modality: the fundus model's guard knows fundus photographs.
KnownElsewhere = Callable[[str, list[Any]], list[str | None]]


def _mark_known_elsewhere(reads: list[ModelRead], elsewhere: list[str | None]) -> list[ModelRead]:
    """A photograph another route's model knows is not assessable by this one."""
    return [
        replace(read, unfamiliar=True, looks_like=other) if other and not read.unfamiliar else read
        for read, other in zip(reads, elsewhere, strict=True)
    ]


@dataclass(frozen=True)
class BatchPolicy:
    """How a worker gathers waiting images into one forward pass."""

    size: int = 16
    lease: timedelta = timedelta(seconds=30)  # longer than any batch takes
    poll_s: float = 0.1
    # Whether the worker of a claim is known to be dead (a killed process on this machine):
    # its claims are taken over at once instead of after the lease. None: only the lease.
    gone: Callable[[str], bool] | None = None


@dataclass(frozen=True)
class InferenceOutcome:
    """What reading one instance gave: its prediction, the queued work, or an error."""

    instance_id: int
    prediction_id: int | None
    outbox_ids: tuple[int, ...] = ()
    error: str | None = None


class InferenceService:
    """Reads received images with their route's model and records each decision once.

    The model, pixel decoder and store are injected; claims with leases keep two workers off
    the same image (``infer_batch``), and a corrupt image fails alone (``infer``)."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        store: ContentStore,
        decode: PhotoDecoder,
        model_for_route: Callable[[str], Model],
        model_path_for_route: Callable[[str], str],
        known_elsewhere: KnownElsewhere | None = None,
    ) -> None:
        self.sessions = sessions
        self.store = store
        self.decode = decode
        self.model_for_route = model_for_route
        self.model_path_for_route = model_path_for_route
        self.known_elsewhere = known_elsewhere

    def infer_batch(
        self, instance_id: int, worker: str, policy: BatchPolicy
    ) -> list[InferenceOutcome]:
        """Read this image together with up to ``policy.size - 1`` other waiting images of its
        route, in one forward pass. Each queued message still stands for one image: if another
        worker holds this image, wait for it (its prediction is then found and nothing is done
        twice); if that worker died, its lease runs out and this one takes the image over."""
        give_up = time.monotonic() + policy.lease.total_seconds() + 5
        while (claimed := self._claim(instance_id, worker, policy)) is None:
            if time.monotonic() > give_up:
                claimed = [instance_id]
                break
            time.sleep(policy.poll_s)
        try:
            return self.infer(claimed, worker)
        finally:
            self._release(claimed, worker)

    def _claim(self, instance_id: int, worker: str, policy: BatchPolicy) -> list[int] | None:
        """Ids this worker now holds, the given one first; None while another worker holds it.

        The given image is claimed alone and committed; companions are then claimed in one
        statement over rows locked in id order with SKIP LOCKED (PostgreSQL; SQLite runs one
        writer at a time), so two workers never hold the same image nor wait on each other."""
        now = utcnow()
        free = or_(Instance.claimed_at.is_(None), Instance.claimed_at < now - policy.lease)
        gone = self._gone_holders(worker, policy, now)
        if gone:
            free = or_(free, Instance.claimed_by.in_(gone))
        with transaction(self.sessions) as session:
            mine = session.execute(
                update(Instance)
                .where(Instance.id == instance_id, Instance.state == InstanceState.RECEIVED)
                .where(or_(free, Instance.claimed_by == worker))
                .values(claimed_by=worker, claimed_at=now)
            )
            if mine.rowcount == 0:  # type: ignore[attr-defined]
                state = session.scalar(select(Instance.state).where(Instance.id == instance_id))
                # Done already (or unknown): infer() reports it without work. Else: held.
                return [instance_id] if state != InstanceState.RECEIVED else None
            route = session.scalar(select(Instance.route).where(Instance.id == instance_id))
        if policy.size == 1:
            return [instance_id]
        with transaction(self.sessions) as session:
            candidates = list(
                session.scalars(
                    select(Instance.id)
                    .where(
                        Instance.state == InstanceState.RECEIVED,
                        Instance.route == route,
                        Instance.id != instance_id,
                        free,
                    )
                    .order_by(Instance.id)
                    .limit(policy.size - 1)
                    .with_for_update(skip_locked=True)
                )
            )
            if not candidates:
                return [instance_id]
            session.execute(
                update(Instance)
                .where(Instance.id.in_(candidates), Instance.state == InstanceState.RECEIVED)
                .where(free)
                .values(claimed_by=worker, claimed_at=now)
            )
            companions = list(
                session.scalars(
                    select(Instance.id).where(
                        Instance.id.in_(candidates), Instance.claimed_by == worker
                    )
                )
            )
        return [instance_id, *companions]

    def _gone_holders(self, worker: str, policy: BatchPolicy, now: datetime) -> list[str]:
        """Workers holding live claims whose process is known to be dead."""
        if policy.gone is None:
            return []
        with self.sessions() as session:
            holders = session.scalars(
                select(Instance.claimed_by)
                .where(
                    Instance.state == InstanceState.RECEIVED,
                    Instance.claimed_at >= now - policy.lease,
                    Instance.claimed_by != worker,
                )
                .distinct()
            ).all()
        gone = [h for h in holders if h and policy.gone(h)]
        if gone:
            log.warning("claims of %d dead worker(s) taken over before their lease", len(gone))
        return gone

    def _release(self, instance_ids: list[int], worker: str) -> None:
        with transaction(self.sessions) as session:
            session.execute(
                update(Instance)
                .where(Instance.id.in_(instance_ids), Instance.claimed_by == worker)
                .values(claimed_by=None, claimed_at=None)
            )

    def infer(
        self, instance_ids: Sequence[int], worker: str | None = None
    ) -> list[InferenceOutcome]:
        """Read each instance once with its route's model; a bad image fails alone. The
        report rows it writes are held by ``worker``, which builds the reports straight away."""
        outcomes: list[InferenceOutcome] = []
        todo: dict[str, list[tuple[int, str]]] = {}  # route -> (instance, stored file)
        with self.sessions() as session:
            for instance_id in instance_ids:
                instance = session.get(Instance, instance_id)
                if instance is None:
                    outcomes.append(InferenceOutcome(instance_id, None, error="no such instance"))
                    continue
                model = self.model_for_route(instance.route)
                done = self._existing(session, instance_id, model.sha256)
                if done is not None:
                    outcomes.append(InferenceOutcome(instance_id, done))
                    continue
                todo.setdefault(instance.route, []).append((instance_id, instance.sha256))
        for route, stored in todo.items():
            photos = self._decode(stored, outcomes)
            if photos:
                outcomes.extend(self._run(route, photos, worker))
        return outcomes

    def _decode(
        self, stored: list[tuple[int, str]], outcomes: list[InferenceOutcome]
    ) -> list[tuple[int, Photo]]:
        """The batch's photographs decoded in one call; an image that cannot be read or
        decoded is recorded as failed in ``outcomes`` and left out."""
        encoded: list[tuple[int, bytes]] = []
        for instance_id, sha256 in stored:
            try:
                encoded.append((instance_id, self.store.read(sha256)))
            except OSError as exc:
                outcomes.append(self._fail(instance_id, str(exc)))
        decoded = self.decode([data for _, data in encoded])
        photos = []
        for (instance_id, _), photo in zip(encoded, decoded, strict=True):
            if isinstance(photo, Exception):
                outcomes.append(self._fail(instance_id, str(photo)))
            else:
                photos.append((instance_id, photo))
        return photos

    def _run(
        self, route: str, items: list[tuple[int, Photo]], worker: str | None = None
    ) -> list[InferenceOutcome]:
        model = self.model_for_route(route)
        started = time.perf_counter()
        images = [photo.pixels for _, photo in items]
        reads = model.read(images)
        if self.known_elsewhere is not None:
            reads = _mark_known_elsewhere(reads, self.known_elsewhere(route, images))
        elapsed = time.perf_counter() - started
        metrics.INFERENCE_SECONDS.labels(route=route).observe(elapsed)
        metrics.BATCH_SIZE.observe(len(items))
        provenance = model.provenance(elapsed / len(items), len(items))
        return [
            self._record(instance_id, model, route, read, photo.sample, provenance, worker)
            for (instance_id, photo), read in zip(items, reads, strict=True)
        ]

    def _record(
        self,
        instance_id: int,
        model: Model,
        route: str,
        read: ModelRead,
        sample: QualitySample,
        provenance: dict[str, Any],
        worker: str | None = None,
    ) -> InferenceOutcome:
        probabilities = read.probabilities
        quality = assess(sample, route)
        if model.stand_in:
            # A stand-in without training must never pass anyone: refer, and say why.
            quality = Quality.NO_TRAINED_MODEL
        elif quality == GRADABLE and read.unfamiliar:
            # Unlike anything the model learnt from: its probabilities mean nothing here.
            quality = Quality.UNFAMILIAR
        if read.distance is not None:
            provenance = provenance | {"guard_distance": round(read.distance, 4)}
        if read.looks_like is not None:
            provenance = provenance | {"looks_like_route": read.looks_like}
        decision = decide(model.taxonomy, probabilities, model.operating_point, quality)
        received_at = None
        try:
            with transaction(self.sessions) as session:
                version = self._model_row(session, model, route)
                prediction = Prediction(
                    instance_pk=instance_id,
                    model_version_pk=version.id,
                    probabilities=decision.probabilities,
                    thresholds=decision.thresholds,
                    top3=list(decision.top3),
                    referral=decision.referral,
                    quality=quality,
                    provenance=provenance
                    | {"raw_probabilities": probabilities, "image": image_statistics(sample)},
                    findings=[
                        PredictionFinding(
                            code=f.code,
                            level=f.level,
                            probability=f.probability,
                            threshold=f.threshold,
                            positive=f.positive,
                        )
                        for f in decision.findings
                    ],
                )
                session.add(prediction)
                instance = session.get_one(Instance, instance_id)
                received_at = instance.received_at
                instance.state = InstanceState.PREDICTED
                instance.error = None
                session.flush()
                note_case_referral(session, instance.case_pk)
                message = add_message(session, REPORT_TASK, instance.case_pk, held_by=worker)
                outcome = InferenceOutcome(instance_id, prediction.id, (message.id,))
        except IntegrityError:
            # Another worker recorded the same (instance, model) first: theirs stands.
            with self.sessions() as session:
                existing = self._existing(session, instance_id, model.sha256)
            if existing is None:  # a different conflict: never leave the image unread
                raise
            return InferenceOutcome(instance_id, existing)
        if quality != GRADABLE:
            log.info("instance %d is %s: referred", instance_id, quality)
        metrics.IMAGES_READ.labels(route=route, outcome="predicted").inc()
        if received_at is not None:  # the receipt-to-prediction time of this image
            metrics.IMAGE_LATENCY.observe((utcnow() - received_at).total_seconds())
        return outcome

    def _model_row(self, session: Session, model: Model, route: str) -> ModelVersion:
        row = session.scalar(
            select(ModelVersion).where(ModelVersion.weights_sha256 == model.sha256)
        )
        if row is not None:
            return row
        try:
            with session.begin_nested():
                row = ModelVersion(
                    name=model.name,
                    version=model.version,
                    route=route,
                    weights_sha256=model.sha256,
                    taxonomy_version=f"{model.taxonomy.name}/{model.taxonomy.version}",
                    path=self.model_path_for_route(route),
                )
                session.add(row)
            return row
        except IntegrityError:  # another worker recorded this model at the same moment
            return session.scalars(
                select(ModelVersion).where(ModelVersion.weights_sha256 == model.sha256)
            ).one()

    @staticmethod
    def _existing(session: Session, instance_id: int, sha256: str) -> int | None:
        return session.scalar(
            select(Prediction.id)
            .join(ModelVersion)
            .where(Prediction.instance_pk == instance_id, ModelVersion.weights_sha256 == sha256)
        )

    def _fail(self, instance_id: int, error: str) -> InferenceOutcome:
        log.warning("instance %d cannot be read: %s", instance_id, error[:200])
        with transaction(self.sessions) as session:
            instance = session.get_one(Instance, instance_id)
            instance.state = InstanceState.FAILED
            instance.error = error[:2000]
            metrics.IMAGES_READ.labels(route=instance.route, outcome="failed").inc()
            # The case may now be complete without this image: let the report be built.
            message = add_message(session, REPORT_TASK, instance.case_pk)
        return InferenceOutcome(instance_id, None, (message.id,), error=error)


def note_case_referral(session: Session, case_pk: int) -> None:
    """The visit's referral by the model: any image's newest prediction refers (the
    dashboard's "referred by the model"). The case row is locked first, so of two workers
    finishing images of one visit at once, the second counts the first's prediction."""
    session.execute(select(ScreeningCase.id).where(ScreeningCase.id == case_pk).with_for_update())
    newest = (
        select(func.max(Prediction.id))
        .join(Instance, Instance.id == Prediction.instance_pk)
        .where(Instance.case_pk == case_pk)
        .group_by(Prediction.instance_pk)
    )
    refers = exists().where(Prediction.id.in_(newest), Prediction.referral.is_(True))
    session.execute(
        update(ScreeningCase)
        .where(ScreeningCase.id == case_pk)
        .values(referral=refers)
        .execution_options(synchronize_session=False)
    )
