"""Drift watch: a camera whose photographs turned dark is flagged against the shipped model's
reference; a camera sending what the model was validated on is not."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from eyescreen.database import upgrade
from services.intake.ingest import IngestService
from services.kernel.settings import Settings
from services.screening import drift
from tests.conftest import FUNDUS, needs_shared_data
from tests.dicom_files import received_photo
from tests.service_harness import eyescreen
from worker.runtime import WorkerRuntime

pytestmark = pytest.mark.integration
REFERENCE = Path(__file__).resolve().parents[2] / "ml" / "models" / "fundus.reference.json"


def test_a_camera_that_turned_dark_is_flagged(tmp_path: Path) -> None:
    needs_shared_data()
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    settings = Settings(
        data_dir=tmp_path / "var", database_url=url, pdf_reports=False, heatmaps=False
    )
    settings.ensure_dirs()
    runtime = WorkerRuntime(settings, publish=lambda name, args: None)
    ingest = IngestService(runtime.sessions, runtime.images)
    photos = sorted((FUNDUS / "images").rglob("*.jpg"))[-120:]
    ids = []
    for n, photo in enumerate(photos):
        camera = "GOODCAM" if n % 2 else "DIMCAM"
        source = photo
        if camera == "DIMCAM":  # an aging flash: everything at 45 % brightness
            with Image.open(photo) as picture:
                dim = (np.asarray(picture.convert("RGB")) * 0.45).astype(np.uint8)
            source = tmp_path / f"dim-{n}.png"
            Image.fromarray(dim).save(source)
        image = received_photo(source, f"D{n}", calling_ae=camera)
        ids.append(ingest.accept(image).instance_id)
    for start in range(0, len(ids), 16):
        runtime.inference().infer(ids[start : start + 16])

    reference = drift.Reference.load(REFERENCE)
    assert reference.model_sha256 == runtime.predictor("fundus").sha256
    with runtime.sessions() as session:
        rows = {row.camera: row for row in drift.check(session, reference, 60, 50)}
    assert set(rows) == {"GOODCAM", "DIMCAM"}
    assert "brightness" in rows["DIMCAM"].drifted
    assert rows["GOODCAM"].scores["brightness"] < 0.25

    env = dict(os.environ, EYESCREEN_DATA_DIR=str(tmp_path / "var"), EYESCREEN_DATABASE_URL=url)
    result = eyescreen("drift", "check", "--window", "60", env=env)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "DIMCAM" in result.stdout and "DRIFT" in result.stdout
