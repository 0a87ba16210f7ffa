"""The Storage SCP in-process against DCMTK's storescu/echoscu as the camera."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from services.db.models import Instance, OutboxMessage
from tests.conftest import require_binary, run
from tests.dicom_files import write_photo_dicom
from tests.gateway_harness import Gateway

pytestmark = pytest.mark.integration


def test_echo(gateway: Gateway) -> None:
    require_binary("/usr/bin/echoscu")
    result = run(["/usr/bin/echoscu", "-aec", "EYESCREEN", "127.0.0.1", str(gateway.port)])
    assert result.returncode == 0, result.stderr


def test_store_keeps_bytes_records_instance_and_queues_after_commit(
    gateway: Gateway, fundus_photo: Path, tmp_path: Path
) -> None:
    sent = write_photo_dicom(fundus_photo, tmp_path / "op.dcm", patient_id="P1")
    assert gateway.storescu(tmp_path / "op.dcm") == [0x0000]
    with gateway.sessions() as session:
        instance = session.scalars(select(Instance)).one()
        assert instance.sop_instance_uid == sent.SOPInstanceUID
        assert instance.route == "fundus"
        stored = gateway.settings.images_dir / instance.sha256[:2] / instance.sha256[2:4]
        kept = dcmread(stored / f"{instance.sha256}.dcm")
        assert kept.SOPInstanceUID == sent.SOPInstanceUID
        message = session.scalars(select(OutboxMessage)).one()
        assert message.sent_at is not None
    assert gateway.published == [("screening.infer", [instance.id])]

    assert gateway.storescu(tmp_path / "op.dcm") == [0x0000]  # acknowledged again, no new work
    assert gateway.count(Instance) == 1 and gateway.count(OutboxMessage) == 1


def test_same_uid_different_content_is_refused_and_kept_aside(
    gateway: Gateway, fundus_photo: Path, tmp_path: Path
) -> None:
    first = write_photo_dicom(fundus_photo, tmp_path / "a.dcm")
    changed = dcmread(tmp_path / "a.dcm")
    changed.PatientID = "SOMEONE-ELSE"
    changed.save_as(tmp_path / "b.dcm")
    assert gateway.storescu(tmp_path / "a.dcm") == [0x0000]
    assert gateway.storescu(tmp_path / "b.dcm") == [0xC002]
    assert gateway.count(Instance) == 1
    quarantined = list((gateway.settings.data_path / "quarantine").rglob("*.dcm"))
    assert len(quarantined) == 1 and first.SOPInstanceUID


def test_image_without_route_is_refused(
    gateway: Gateway, fundus_photo: Path, tmp_path: Path
) -> None:
    ds = write_photo_dicom(fundus_photo, tmp_path / "x.dcm")
    del ds.AnatomicRegionSequence
    ds.save_as(tmp_path / "x.dcm")
    assert gateway.storescu(tmp_path / "x.dcm") == [0xC001]
    assert gateway.count(Instance) == 0


def test_full_disk_answers_out_of_resources(
    database_url: str, fundus_photo: Path, tmp_path: Path
) -> None:
    gw = Gateway(database_url, tmp_path / "var", min_free_bytes=2**62)
    try:
        write_photo_dicom(fundus_photo, tmp_path / "op.dcm")
        assert gw.storescu(tmp_path / "op.dcm") == [0xA700]
        assert gw.count(Instance) == 0
    finally:
        gw.server.shutdown()
