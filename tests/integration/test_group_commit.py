"""Group commit: images sent together on several associations share commits, each keeps its own
outcome (stored, repeated, refused), and nothing is recorded twice."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from services.db.models import Instance, OutboxMessage, Patient, ScreeningCase
from services.db.session import make_engine, make_session_factory
from services.intake.group_commit import GroupCommit
from services.intake.ingest import IngestResult, IngestService, ReceivedImage
from services.kernel.errors import InstanceConflict
from services.kernel.storage import ContentStore


def _image(n: int, content: str | None = None) -> ReceivedImage:
    return ReceivedImage(
        sop_instance_uid=f"1.2.826.0.1.{n}",
        sop_class_uid="1.2.840.10008.5.1.4.1.1.77.1.5.1",
        study_instance_uid=f"1.2.826.0.5.{n // 2}",  # two photos (both eyes) per visit
        series_instance_uid="1.2.826.0.9",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        route="fundus",
        encoded=(content or f"image {n}").encode(),
        patient_id=f"P{n // 4}",  # two visits per patient
        laterality="RL"[n % 2],
    )


def _send_together(writer: GroupCommit, images: list[ReceivedImage], senders: int) -> list[object]:
    """Each sender thread sends its share of the images, all at once, like associations do."""
    outcomes: list[object] = [None] * len(images)
    start = threading.Barrier(senders)

    def send(first: int) -> None:
        start.wait()
        for index in range(first, len(images), senders):
            try:
                outcomes[index] = writer.accept(images[index])
            except Exception as exc:
                outcomes[index] = exc

    threads = [threading.Thread(target=send, args=(s,)) for s in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return outcomes


def test_concurrent_images_share_commits_and_each_is_recorded_once(
    database_url: str, tmp_path: Path
) -> None:
    engine = make_engine(database_url)
    commits = Counter[str]()
    event.listen(engine, "commit", lambda _conn: commits.update(["commit"]))
    sessions = make_session_factory(engine)
    writer = GroupCommit(IngestService(sessions, ContentStore(tmp_path / "images", 0)))
    images = [_image(n) for n in range(120)]
    images += [images[7], images[8]]  # a camera re-sending two photos: acknowledged, not redone
    images.append(_image(9, content="other bytes"))  # same UID, other bytes: refused
    try:
        outcomes = _send_together(writer, images, senders=6)
    finally:
        writer.close()

    results = [o for o in outcomes if isinstance(o, IngestResult)]
    assert len(results) == 122 and sum(r.duplicate for r in results) == 2
    assert [type(o) for o in outcomes if not isinstance(o, IngestResult)] == [InstanceConflict]
    assert commits["commit"] < 120, "concurrent images were committed one by one"
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 120
        assert session.scalar(select(func.count()).select_from(OutboxMessage)) == 120
        assert session.scalar(select(func.count()).select_from(ScreeningCase)) == 60
        assert session.scalar(select(func.count()).select_from(Patient)) == 30
    engine.dispose()


def test_a_group_that_fails_as_a_whole_is_recorded_one_by_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One image's unexpected error rolls back its group; the others are recorded on their own
    and only that image is refused."""
    from eyescreen.database import upgrade

    url = f"sqlite:///{tmp_path / 'group.db'}"
    upgrade(url)
    sessions = make_session_factory(make_engine(url))
    ingest = IngestService(sessions, ContentStore(tmp_path / "images", 0))
    original = IngestService._record_in

    def failing(self: IngestService, session, image: ReceivedImage, sha256: str, size: int):  # type: ignore[no-untyped-def]
        if image.sop_instance_uid.endswith(".3"):
            raise RuntimeError("a fault in one image")
        return original(self, session, image, sha256, size)

    monkeypatch.setattr(IngestService, "_record_in", failing)
    outcomes = ingest.record_group(
        [(image, ingest.keep_file(image)) for image in map(_image, range(6))]
    )
    assert [type(o).__name__ for o in outcomes] == ["IngestResult"] * 3 + ["RuntimeError"] + [
        "IngestResult"
    ] * 2
    with sessions() as session:
        assert session.scalar(select(func.count()).select_from(Instance)) == 5
