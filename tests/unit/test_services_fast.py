"""The service rules in seconds: ingest, outbox, inference and delivery through the seams they
already have (model, pixel decoder, report encoder, sender, publisher are injected), with fakes
for those and a migrated SQLite file for the rows. Integration tests keep to the real peers."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy import select

from services.db.models import (
    DeliveryState,
    Instance,
    InstanceState,
    OutboxMessage,
    Prediction,
    ReportDelivery,
)
from services.db.session import make_engine, make_session_factory
from services.intake.ingest import IngestService, ReceivedImage
from services.kernel.errors import InstanceConflict
from services.kernel.outbox import OutboxDispatcher
from services.kernel.storage import ContentStore
from services.kernel.task_names import INFER_TASK, REPORT_TASK
from services.reporting.content import CaseReport, EncodedReport
from services.reporting.sending import DeliveryError
from services.reporting.service import ReportService
from services.screening.decision import ModelRead, OperatingPoint, ProbabilityScale
from services.screening.inference import InferenceService, decode_each
from services.taxonomy.tree import Taxonomy, load_taxonomy
from tests.synthetic_photos import fundus_rgb

NORMAL = b"normal-photo"
GLAUCOMA = b"glaucoma-photo"
CORRUPT = b"corrupt-photo"
STRANGE = b"strange-photo"  # normal-looking probabilities, but beyond the model's guard
# What the fake decoder gives for each: a gradable fundus-like picture, different per photo
PIXELS = {
    NORMAL: fundus_rgb(128, seed=0),
    GLAUCOMA: fundus_rgb(128, seed=1),
    STRANGE: fundus_rgb(128, seed=2),
}


@dataclass
class FakeModel:
    """Probabilities chosen by the photo's bytes (the fake decoder passes them through)."""

    taxonomy: Taxonomy = field(default_factory=lambda: load_taxonomy("fundus"))
    name: str = "fake-fundus"
    version: str = "1"
    sha256: str = "f" * 64
    stand_in: bool = False
    operating_point: OperatingPoint = field(
        default_factory=lambda: OperatingPoint(
            {"F.GLAU": 0.5, "F.GLAU.GLAU": 0.4, "F.NOR": 0.5, "F.NOR.NOR": 0.5},
            frozenset({"F.VRD.OPT"}),
            ProbabilityScale.CALIBRATED,
        )
    )
    calls: list[int] = field(default_factory=list)

    def predict(self, images: list[np.ndarray]) -> list[dict[str, float]]:
        self.calls.append(len(images))
        rows = []
        for image in images:
            row = dict.fromkeys(self.taxonomy.codes, 0.02)
            if np.array_equal(image, PIXELS[GLAUCOMA]):
                row |= {"F.GLAU.GLAU": 0.8, "F.NOR.NOR": 0.1}
            else:
                row |= {"F.NOR.NOR": 0.9, "F.VRD.OPT": 0.99}  # noise on an unassessed class
            rows.append(row)
        return rows

    def read(self, images: list[np.ndarray]) -> list[ModelRead]:
        return [
            ModelRead(row, unfamiliar=np.array_equal(image, PIXELS[STRANGE]), distance=1.0)
            for row, image in zip(self.predict(images), images, strict=True)
        ]

    def provenance(self, elapsed_s: float, batch_size: int) -> dict[str, Any]:
        return {"batch_size": batch_size, "probability_scale": "calibrated"}


def fake_decode(data: bytes) -> np.ndarray:
    if data not in PIXELS:
        raise ValueError("not an image")
    return PIXELS[data].copy()


@dataclass
class World:
    ingest: IngestService
    inference: InferenceService
    reports: ReportService
    model: FakeModel
    published: list[tuple[str, list[Any]]]
    sessions: Any

    def receive(self, data: bytes, uid: str, study: str = "1.2.3") -> int:
        image = ReceivedImage(
            sop_instance_uid=uid,
            sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.5.1",
            study_instance_uid=study,
            series_instance_uid=study + ".1",
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            route="fundus",
            encoded=data,
            patient_id="FAST-1",
            laterality="R",
        )
        return self.ingest.accept(image).instance_id


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    from eyescreen.database import upgrade

    url = f"sqlite:///{tmp_path / 'fast.db'}"
    upgrade(url)
    engine = make_engine(url)
    sessions = make_session_factory(engine)
    store = ContentStore(tmp_path / "images")
    model = FakeModel()
    encoded: list[CaseReport] = []

    def encode(content: CaseReport) -> EncodedReport:
        encoded.append(content)
        return EncodedReport(f"2.25.{len(encoded)}", f"sr-{len(encoded)}".encode())

    yield World(
        ingest=IngestService(sessions, store),
        inference=InferenceService(
            sessions, store, decode_each(fake_decode), lambda r: model, lambda r: "-"
        ),
        reports=ReportService(
            sessions,
            store,
            ContentStore(tmp_path / "reports"),
            encode,
            destinations=["PACS@127.0.0.1:104"],
            max_attempts=3,
            base_delay_s=2.0,
        ),
        model=model,
        published=[],
        sessions=sessions,
    )
    engine.dispose()


def test_a_repeat_is_acknowledged_and_other_bytes_under_the_same_uid_refused(
    world: World,
) -> None:
    first = world.receive(NORMAL, "1.2.3.4")
    assert world.receive(NORMAL, "1.2.3.4") == first
    with pytest.raises(InstanceConflict):
        world.receive(GLAUCOMA, "1.2.3.4")
    with world.sessions() as session:
        tasks = session.scalars(select(OutboxMessage.task_name)).all()
    assert list(tasks) == [INFER_TASK]  # one inference message, not one per receipt


def test_each_image_is_read_once_and_a_corrupt_one_fails_alone(world: World) -> None:
    ids = [world.receive(data, f"1.2.3.{i}") for i, data in enumerate((NORMAL, CORRUPT, GLAUCOMA))]
    outcomes = sorted(world.inference.infer(ids), key=lambda o: o.instance_id)
    assert [o.error is not None for o in outcomes] == [False, True, False]
    assert world.model.calls == [2]  # the two good images in one forward pass
    world.inference.infer(ids)  # a repeated message: nothing read twice
    assert world.model.calls == [2]
    with world.sessions() as session:
        states = dict(session.execute(select(Instance.id, Instance.state)).all())
        predictions = {p.instance_pk: p for p in session.scalars(select(Prediction))}
        for p in predictions.values():
            _ = p.findings
    assert states[ids[1]] == InstanceState.FAILED
    normal, glaucoma = predictions[ids[0]], predictions[ids[2]]
    assert normal.referral is False and glaucoma.referral is True
    optic = next(f for f in normal.findings if f.code == "F.VRD.OPT")
    assert optic.positive is None and optic.threshold is None  # not assessed, whatever its p
    assert normal.probabilities["F.VRD"] < 0.5  # and it does not raise its parent


def test_a_photograph_beyond_the_guard_is_not_assessed_and_referred(world: World) -> None:
    """Probabilities that would pass it mean nothing on a photograph unlike the training set:
    ungradable ("not assessable by this model"), referred, with the distance kept."""
    ids = [world.receive(data, f"1.2.3.{i}") for i, data in enumerate((NORMAL, STRANGE))]
    world.inference.infer(ids)
    with world.sessions() as session:
        predictions = {p.instance_pk: p for p in session.scalars(select(Prediction))}
    normal, strange = predictions[ids[0]], predictions[ids[1]]
    assert (normal.quality, normal.referral) == ("gradable", False)
    assert (strange.quality, strange.referral) == ("ungradable:unfamiliar", True)
    assert strange.provenance["guard_distance"] == 1.0


def test_a_photograph_another_routes_model_knows_is_not_assessed_here(world: World) -> None:
    """A route's model without a guard of its own: a photograph that another route's model
    recognises (a fundus photograph sent as anterior) is not assessable here, and says why."""

    def known_elsewhere(route: str, images: list[np.ndarray]) -> list[str | None]:
        assert route == "fundus"  # the route the photographs were sent to
        return ["anterior" if np.array_equal(i, PIXELS[GLAUCOMA]) else None for i in images]

    inference = InferenceService(
        world.sessions,
        world.ingest.store,
        decode_each(fake_decode),
        lambda r: world.model,
        lambda r: "-",
        known_elsewhere,
    )
    ids = [world.receive(data, f"1.2.4.{i}") for i, data in enumerate((NORMAL, GLAUCOMA))]
    inference.infer(ids)
    with world.sessions() as session:
        predictions = {p.instance_pk: p for p in session.scalars(select(Prediction))}
    normal, elsewhere = predictions[ids[0]], predictions[ids[1]]
    assert (normal.quality, normal.referral) == ("gradable", False)
    assert "looks_like_route" not in normal.provenance
    assert (elsewhere.quality, elsewhere.referral) == ("ungradable:unfamiliar", True)
    assert elsewhere.provenance["looks_like_route"] == "anterior"


def test_delivery_backs_off_doubling_then_dead_letters(world: World) -> None:
    world.inference.infer([world.receive(NORMAL, "1.2.3.9")])
    with world.sessions() as session:
        case_id = session.scalars(select(Instance.case_pk)).one()
    [outbox_id] = world.reports.build_case(case_id)
    with world.sessions() as session:
        delivery_id = session.scalars(select(ReportDelivery.id)).one()
        assert session.get_one(OutboxMessage, outbox_id).args == [delivery_id]
    attempts: list[str] = []

    def refusing(objects: Sequence[bytes], destination: str, transaction_uid: str) -> None:
        attempts.append(destination)
        raise DeliveryError("association refused", 0xA700)

    first = world.reports.deliver(delivery_id, refusing)
    assert first.state == DeliveryState.PENDING and first.retry_in_s == 2.0
    early = world.reports.deliver(delivery_id, refusing)  # backing off: not sent again yet
    assert early.state == DeliveryState.PENDING and len(attempts) == 1
    _make_due(world, delivery_id)
    assert world.reports.deliver(delivery_id, refusing).retry_in_s == 4.0
    _make_due(world, delivery_id)
    assert world.reports.deliver(delivery_id, refusing).state == DeliveryState.DEAD
    assert len(attempts) == 3
    with world.sessions() as session:
        dead = session.get_one(ReportDelivery, delivery_id)
        assert dead.last_status == 0xA700 and dead.attempts == 3


def _make_due(world: World, delivery_id: int) -> None:
    from services.db.base import utcnow
    from services.db.session import transaction

    with transaction(world.sessions) as session:
        session.get_one(ReportDelivery, delivery_id).next_attempt_at = utcnow() - timedelta(1)


def test_waiting_reports_go_over_one_association_and_a_failure_stops_only_the_rest(
    world: World,
) -> None:
    """Three cases' reports to one PACS: one association carries them in order; the PACS
    refuses the second, so the first is delivered, the second failed (backing off) and the
    third not tried (back to the queue at once)."""
    photos = [(NORMAL, "1.2.3.31"), (GLAUCOMA, "1.2.3.32"), (NORMAL, "1.2.3.33")]
    ids = [world.receive(data, uid, study=f"1.2.9.{n}") for n, (data, uid) in enumerate(photos)]
    world.inference.infer(ids)
    with world.sessions() as session:
        cases = session.scalars(select(Instance.case_pk).order_by(Instance.id)).all()
    for case_id in cases:
        world.reports.build_case(case_id)
    with world.sessions() as session:
        deliveries = session.scalars(select(ReportDelivery.id).order_by(ReportDelivery.id)).all()
    associations: list[int] = []

    def second_refused(
        reports: Sequence[Sequence[bytes]], destination: str, transaction_uid: str
    ) -> None:
        associations.append(len(reports))
        raise DeliveryError("0xA700 out of resources", 0xA700, sent=1)

    outcomes = world.reports.deliver_together(deliveries, second_refused)
    assert associations == [3]
    assert [outcomes[d].state for d in deliveries] == [DeliveryState.DELIVERED] + [
        DeliveryState.PENDING
    ] * 2
    assert outcomes[deliveries[1]].retry_in_s == 2.0 and outcomes[deliveries[2]].retry_in_s == 0
    with world.sessions() as session:
        attempts = [session.get_one(ReportDelivery, d).attempts for d in deliveries]
    assert attempts == [1, 1, 0]


def test_outbox_rows_wait_for_the_broker_and_are_sent_once_it_is_back(world: World) -> None:
    world.receive(NORMAL, "1.2.3.5")
    broker_up = False
    sent: list[str] = []

    def publish(task: str, args: list[Any]) -> None:
        if not broker_up:
            raise ConnectionError("broker down")
        sent.append(task)

    dispatcher = OutboxDispatcher(world.sessions, publish)
    assert dispatcher.sweep(older_than=timedelta(0)) == 0  # down: the row stays unsent
    broker_up = True
    assert dispatcher.sweep(older_than=timedelta(0)) == 1
    assert dispatcher.sweep(older_than=timedelta(0)) == 0  # sent once, not again
    assert sent == [INFER_TASK]
    with world.sessions() as session:
        row = session.scalars(select(OutboxMessage)).one()
        assert row.sent_at is not None and row.attempts == 2 and row.task_name != REPORT_TASK


def test_stale_work_is_requeued_once_per_period_and_old_sent_rows_are_pruned(
    world: World,
) -> None:
    from sqlalchemy import update

    from services.db.base import utcnow
    from services.db.session import transaction
    from services.operations.recovery import prune_sent_messages, requeue_stale_work

    instance_id = world.receive(NORMAL, "1.2.3.7")
    grace = timedelta(minutes=10)
    with transaction(world.sessions) as session:  # received long ago and never read
        session.execute(update(Instance).values(received_at=utcnow() - timedelta(hours=1)))
        session.execute(update(OutboxMessage).values(created_at=utcnow() - timedelta(hours=1)))

    def sweep() -> list[int]:
        with transaction(world.sessions) as session:
            return requeue_stale_work(session, grace)

    first, second, third = sweep(), sweep(), sweep()
    assert len(first) == 1 and second == [] and third == []  # one message per stale period
    with transaction(world.sessions) as session:  # a period later, still not done: once more
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == first[0])
            .values(created_at=utcnow() - timedelta(minutes=11))
        )
    assert len(sweep()) == 1
    with transaction(world.sessions) as session:
        args = session.scalars(select(OutboxMessage.args)).all()
        assert args.count([instance_id]) == 3  # the original and two re-queues
        session.execute(
            update(OutboxMessage)
            .where(OutboxMessage.id == first[0])
            .values(sent_at=utcnow() - timedelta(days=8))
        )
        assert prune_sent_messages(session, timedelta(days=7)) == 1  # unsent rows stay
        assert len(session.scalars(select(OutboxMessage)).all()) == 2


def test_a_row_taken_for_inline_work_is_queued_only_once_its_worker_lost_the_lease(
    world: World,
) -> None:
    """A worker takes a row to do inline and is killed: the row is not queued while the lease
    runs (the worker may be alive and working), and is queued once it has run out."""
    from sqlalchemy import update

    from services.db.base import utcnow
    from services.db.session import transaction
    from services.kernel.outbox import finish, take

    world.receive(NORMAL, "1.2.3.41")
    sent: list[str] = []
    dispatcher = OutboxDispatcher(
        world.sessions, lambda task, args: sent.append(task), timedelta(seconds=30)
    )
    with world.sessions() as session:
        row_id = session.scalars(select(OutboxMessage.id)).one()
    assert take(world.sessions, row_id) is not None
    assert take(world.sessions, row_id) is None  # one taker
    assert dispatcher.sweep(older_than=timedelta(0)) == 0  # held: not queued
    with transaction(world.sessions) as session:  # the worker died 31 s ago
        session.execute(update(OutboxMessage).values(taken_at=utcnow() - timedelta(seconds=31)))
    assert dispatcher.sweep(older_than=timedelta(hours=1)) == 1  # the lease, not the grace
    assert sent == [INFER_TASK]

    world.receive(GLAUCOMA, "1.2.3.42")
    with world.sessions() as session:
        other = session.scalars(select(OutboxMessage.id).where(OutboxMessage.id != row_id)).one()
    take(world.sessions, other)
    finish(world.sessions, [other])  # done inline: never queued
    with transaction(world.sessions) as session:
        session.execute(update(OutboxMessage).values(taken_at=utcnow() - timedelta(hours=1)))
    assert dispatcher.sweep(older_than=timedelta(0)) == 0 and sent == [INFER_TASK]


def test_a_delivery_another_attempt_holds_is_not_sent_and_one_lost_is_requeued(
    world: World,
) -> None:
    """Two processes on one delivery: the second leaves it to the first while its attempt's
    lease runs; an attempt lost with its process leaves the delivery in doubt, and the sweep
    queues it again after a lease, not after the stale period."""
    from sqlalchemy import update

    from services.db.base import utcnow
    from services.db.session import transaction
    from services.operations.recovery import requeue_lost_follow_ups

    world.inference.infer([world.receive(NORMAL, "1.2.3.43")])
    with world.sessions() as session:
        case_id = session.scalars(select(Instance.case_pk)).one()
    world.reports.build_case(case_id)
    with world.sessions() as session:
        delivery_id = session.scalars(select(ReportDelivery.id)).one()
    sends: list[int] = []

    def send(objects: Sequence[Sequence[bytes]], destination: str, transaction_uid: str) -> None:
        sends.append(len(objects))

    _, claimed = world.reports._sending([delivery_id])  # the first process, then killed
    assert claimed == [delivery_id]
    held = world.reports.deliver(delivery_id, send)
    assert held.state == DeliveryState.PENDING and held.retry_in_s and sends == []
    with transaction(world.sessions) as session:  # its lease runs out
        stale = utcnow() - timedelta(seconds=40)
        session.execute(update(ReportDelivery).values(sending_at=stale, next_attempt_at=stale))
        session.execute(update(OutboxMessage).values(created_at=stale))
        lost = requeue_lost_follow_ups(session, timedelta(seconds=30))
        assert len(lost) == 1 and requeue_lost_follow_ups(session, timedelta(seconds=30)) == []
        assert session.get_one(ReportDelivery, delivery_id).in_doubt
    assert world.reports.deliver(delivery_id, send).state == DeliveryState.DELIVERED
    assert sends == [1]  # no way to ask this PACS: sent again (at least once)
    with world.sessions() as session:
        done = session.get_one(ReportDelivery, delivery_id)
        assert not done.in_doubt and done.sending_at is None


def test_claims_of_a_worker_known_dead_are_taken_over_before_their_lease(world: World) -> None:
    """A worker killed mid-batch on this machine: the next one takes its images over at once
    (its process is gone), not after the 30 s lease."""
    import time

    from sqlalchemy import update

    from services.db.base import utcnow
    from services.db.session import transaction
    from services.screening.inference import BatchPolicy
    from worker.runtime import process_gone

    first = world.receive(NORMAL, "1.2.3.51")
    second = world.receive(GLAUCOMA, "1.2.3.52", study="1.2.4")
    with transaction(world.sessions) as session:
        session.execute(update(Instance).values(claimed_by="dead:1", claimed_at=utcnow()))
    policy = BatchPolicy(size=4, lease=timedelta(seconds=30), gone=lambda w: w == "dead:1")
    started = time.monotonic()
    outcomes = world.inference.infer_batch(first, "live:2", policy)
    assert time.monotonic() - started < 5
    assert sorted(o.instance_id for o in outcomes if o.prediction_id) == [first, second]

    import os
    import socket
    import subprocess

    child = subprocess.Popen(["sleep", "0"])
    child.wait()
    host = socket.gethostname()
    assert process_gone(f"{host}:{child.pid}") and not process_gone(f"{host}:{os.getpid()}")
    assert not process_gone(f"another-machine:{child.pid}")
