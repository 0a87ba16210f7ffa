"""Batched inference with per-image claims: waiting images go through in one forward pass, a
held image is waited for and taken over when its worker's lease runs out, a corrupt image
fails alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import func, select, update

from services.db.base import utcnow
from services.db.models import Instance, InstanceState, Prediction, Report
from services.db.session import transaction
from services.intake.ingest import IngestService
from services.kernel.settings import Settings
from services.screening.inference import BatchPolicy
from tests.conftest import ANTERIOR, FUNDUS, needs_shared_data
from tests.dicom_files import received_photo
from tests.synthetic_photos import generated_fundus_photos
from worker.runtime import WorkerRuntime

pytestmark = pytest.mark.integration


@pytest.fixture
def runtime(database_url: str, tmp_path: Path) -> Iterator[WorkerRuntime]:
    settings = Settings(data_dir=tmp_path / "var", database_url=database_url, pdf_reports=False)
    settings.ensure_dirs()
    yield WorkerRuntime(settings, publish=lambda name, args: None)


def _receive(runtime: WorkerRuntime, photos: list[Path], corrupt: int | None = None) -> list[int]:
    ingest = IngestService(runtime.sessions, runtime.images)
    return [
        ingest.accept(received_photo(photo, f"B{n}", cut_short=n == corrupt)).instance_id
        for n, photo in enumerate(photos)
    ]


def _photos(count: int) -> list[Path]:
    return generated_fundus_photos(count)


def _predictions(runtime: WorkerRuntime) -> dict[int, int]:
    with runtime.sessions() as session:
        rows = session.execute(
            select(Prediction.instance_pk, func.count()).group_by(Prediction.instance_pk)
        )
        return {instance: count for instance, count in rows}


def test_waiting_images_are_read_in_one_pass_and_a_corrupt_one_fails_alone(
    runtime: WorkerRuntime,
) -> None:
    ids = _receive(runtime, _photos(5), corrupt=2)
    outcomes = runtime.inference().infer_batch(ids[0], "worker-a", BatchPolicy(size=4))
    assert sorted(o.instance_id for o in outcomes) == ids[:4]
    assert [o.error is not None for o in sorted(outcomes, key=lambda o: o.instance_id)] == [
        False,
        False,
        True,
        False,
    ]
    with runtime.sessions() as session:
        states = dict(session.execute(select(Instance.id, Instance.state)).all())
        batch_sizes = {
            p.instance_pk: p.provenance["batch_size"] for p in session.scalars(select(Prediction))
        }
        assert session.scalar(select(func.count()).where(Instance.claimed_by.is_not(None))) == 0
    assert states[ids[2]] == InstanceState.FAILED
    assert states[ids[4]] == InstanceState.RECEIVED  # beyond the batch size: left for its message
    assert batch_sizes == {ids[0]: 3, ids[1]: 3, ids[3]: 3}  # one forward pass for the three
    # The companions' own messages arrive later and find the work done.
    for instance_id in ids[1:4]:
        runtime.inference().infer_batch(instance_id, "worker-b", BatchPolicy(size=4))
    runtime.inference().infer_batch(ids[4], "worker-b", BatchPolicy(size=4))
    assert _predictions(runtime) == {ids[0]: 1, ids[1]: 1, ids[3]: 1, ids[4]: 1}


def test_a_held_image_is_waited_for_then_taken_over_when_the_lease_runs_out(
    runtime: WorkerRuntime,
) -> None:
    [image] = _receive(runtime, _photos(1))
    with transaction(runtime.sessions) as session:  # a worker that then died
        session.execute(update(Instance).values(claimed_by="dead-worker", claimed_at=utcnow()))
    policy = BatchPolicy(size=4, lease=timedelta(seconds=2), poll_s=0.05)
    started = time.monotonic()
    runtime.inference().infer_batch(image, "worker-a", policy)
    assert time.monotonic() - started >= 1.5  # it waited for the lease
    assert _predictions(runtime) == {image: 1}


def test_two_workers_on_one_burst_give_each_image_exactly_one_prediction(
    runtime: WorkerRuntime,
) -> None:
    ids = _receive(runtime, _photos(8))
    policy = BatchPolicy(size=4, lease=timedelta(seconds=30), poll_s=0.02)
    errors: list[BaseException] = []

    def work(worker: str, mine: list[int]) -> None:
        try:
            for instance_id in mine:
                runtime.inference().infer_batch(instance_id, worker, policy)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [
        threading.Thread(target=work, args=("worker-a", ids[0::2])),
        threading.Thread(target=work, args=("worker-b", ids[1::2])),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert errors == []
    with runtime.sessions() as session:
        states = session.execute(select(Instance.id, Instance.state, Instance.error)).all()
    assert _predictions(runtime) == {instance_id: 1 for instance_id in ids}, states


def test_a_positive_finding_gets_a_grad_cam_heatmap(runtime: WorkerRuntime) -> None:
    needs_shared_data()  # a real cataract photograph, so that the model finds something
    cataract = sorted((FUNDUS / "images" / "cataract").glob("*.jpg"))[:1]
    [image] = _receive(runtime, cataract)
    runtime.inference().infer_batch(image, "w", BatchPolicy())
    with runtime.sessions() as session:
        assert session.scalars(select(Prediction.heatmap_path)).one() is None  # not on the SR path
        case_id = session.scalars(select(Instance.case_pk)).one()
    runtime.reports().build_case(case_id)
    with runtime.sessions() as session:
        report_id = session.scalars(select(Report.id)).one()
    runtime.explain_report(report_id)  # the PDF task makes it, with the prediction's own model
    with runtime.sessions() as session:
        prediction = session.scalars(select(Prediction)).one()
        positives = [f.code for f in prediction.findings if f.positive]
    assert prediction.heatmap_path, f"no heatmap although positive: {positives}"
    heatmap = Path(prediction.heatmap_path)
    assert (
        heatmap.parent == runtime.settings.heatmaps_dir
        and heatmap.stem.split("-", 1)[1] in positives
    )
    from PIL import Image

    with Image.open(heatmap) as picture:
        pixels = np.asarray(picture.convert("RGB")).astype(int)
    assert pixels.shape[0] == pixels.shape[1] >= 224
    assert pixels[..., 0].std() > 10  # a real map, not a flat overlay


def _read_anterior(runtime: WorkerRuntime) -> Prediction:
    from dataclasses import replace

    from tests.synthetic_photos import slit_lamp_rgb, write_photo

    photo = write_photo(slit_lamp_rgb(seed=1), runtime.settings.data_path / "slit-lamp.jpg")
    ingest = IngestService(runtime.sessions, runtime.images)
    image = replace(received_photo(photo, "A1"), route="anterior")
    instance_id = ingest.accept(image).instance_id
    runtime.inference().infer_batch(instance_id, "w", BatchPolicy())
    with runtime.sessions() as session:
        prediction = session.scalars(select(Prediction)).one()
        _ = prediction.model_version, prediction.findings
        return prediction


def test_a_route_without_a_trained_model_refers_everyone(database_url: str, tmp_path: Path) -> None:
    """A route served by an untrained stand-in: its output must never pass anyone."""
    from ml.predictor import untrained_checkpoint

    stand_in = untrained_checkpoint("anterior", tmp_path / "models")
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        pdf_reports=False,
        anterior_checkpoint=stand_in,
    )
    settings.ensure_dirs()
    prediction = _read_anterior(WorkerRuntime(settings, publish=lambda name, args: None))
    assert prediction.model_version.version.endswith("untrained")
    assert prediction.quality == "ungradable:no_trained_model" and prediction.referral


def test_the_shipped_anterior_model_gives_real_findings(runtime: WorkerRuntime) -> None:
    """Anterior photographs are read by a trained model: a gradable read with decisions for
    the classes it assesses and none for those it cannot (no photographs of them)."""
    prediction = _read_anterior(runtime)
    assert prediction.quality == "gradable" and not prediction.model_version.version.endswith(
        "untrained"
    )
    decided = {f.code: f.positive for f in prediction.findings}
    assert decided["A.NEO.SURF"] is None and decided["A.OSD.SCLER"] is None
    assert decided["A.CAT.CAT"] is not None and decided["A.OSD.CINF"] is not None
    assert prediction.provenance["probability_scale"] == "calibrated"


def test_one_stand_in_for_every_process(tmp_path: Path) -> None:
    """Worker processes starting together make one stand-in file, not one each (two random
    models would read one photograph two ways and revise its SR)."""
    import multiprocessing

    from ml.predictor import untrained_checkpoint
    from services.kernel.storage import file_sha256

    with multiprocessing.get_context("spawn").Pool(3) as pool:
        paths = pool.starmap(untrained_checkpoint, [("anterior", tmp_path)] * 3)
    assert len(set(paths)) == 1
    assert [p.name for p in tmp_path.glob("*.pt")] == ["untrained-anterior.pt"]
    assert file_sha256(paths[0]) == file_sha256(tmp_path / "untrained-anterior.pt")


def test_a_fundus_photograph_sent_as_anterior_is_not_assessed(runtime: WorkerRuntime) -> None:
    """The anterior model has no guard of its own (its sources are too unlike each other for
    one), but the fundus model's guard knows a fundus photograph: on the anterior route that
    photograph is "not assessable by this model" and referred, and the reason is kept. A real
    slit-lamp photograph on the same route is read as usual."""
    from dataclasses import replace

    needs_shared_data()
    fundus = sorted((FUNDUS / "images" / "normal").glob("*.jpg"))[:2]
    slit_lamp = sorted((ANTERIOR / "images").glob("*slit-lamp*"))[:2]
    ingest = IngestService(runtime.sessions, runtime.images)
    ids = [
        ingest.accept(replace(received_photo(photo, f"X{n}"), route="anterior")).instance_id
        for n, photo in enumerate(fundus + slit_lamp)
    ]
    runtime.inference().infer_batch(ids[0], "w", BatchPolicy())
    with runtime.sessions() as session:
        read = {p.instance_pk: p for p in session.scalars(select(Prediction))}
    assert [read[i].quality for i in ids] == ["ungradable:unfamiliar"] * 2 + ["gradable"] * 2
    assert all(read[i].referral for i in ids[:2])
    assert [read[i].provenance.get("looks_like_route") for i in ids] == ["fundus"] * 2 + [None] * 2
