"""The model registry: register, activate per site, roll back, all without restarting a worker;
site threshold overrides recorded with every prediction."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from sqlalchemy import select

from ml.predictor import untrained_checkpoint
from services.db.models import AuditEvent, Prediction
from services.kernel.settings import Settings
from services.kernel.storage import file_sha256
from services.taxonomy.tree import load_taxonomy
from tests.integration.test_batching import _receive
from tests.service_harness import eyescreen
from tests.synthetic_photos import generated_fundus_photos
from worker.runtime import WorkerRuntime

pytestmark = pytest.mark.integration
SHIPPED = Path(__file__).resolve().parents[2] / "ml" / "models" / "fundus.pt"


def test_register_activate_and_roll_back_without_restart(database_url: str, tmp_path: Path) -> None:
    env = dict(
        os.environ, EYESCREEN_DATA_DIR=str(tmp_path / "var"), EYESCREEN_DATABASE_URL=database_url
    )
    settings = Settings(data_dir=tmp_path / "var", database_url=database_url, pdf_reports=False)
    settings.ensure_dirs()
    runtime = WorkerRuntime(settings, publish=lambda name, args: None)
    shipped = runtime.predictor("fundus")
    assert runtime.checkpoint_for("fundus") == SHIPPED  # nothing activated: the default

    other = untrained_checkpoint("fundus", tmp_path)
    for path in (SHIPPED, other):
        result = eyescreen("model", "register", str(path), env=env)
        assert result.returncode == 0, result.stderr
    listing = eyescreen("model", "list", env=env).stdout
    assert len(listing.splitlines()) == 2 and listing.count("active: -") == 2

    new_sha = file_sha256(other)
    assert eyescreen("model", "activate", new_sha[:10], env=env).returncode == 0
    [first] = _receive(runtime, generated_fundus_photos(1))
    runtime.inference().infer_batch(first, "w", runtime.batch_policy)
    with runtime.sessions() as session:
        used = session.scalars(select(Prediction)).one().provenance["weights_sha256"]
    assert used == new_sha  # the same runtime object picked up the activation
    assert runtime.checkpoint_for("fundus").parent == settings.data_path / "models"

    assert (
        eyescreen("model", "activate", shipped.sha256[:10], "--site", "EAST", env=env).returncode
        == 0
    )
    assert runtime.predictor("fundus").sha256 == new_sha  # this worker is not at EAST
    east = WorkerRuntime(settings.model_copy(update={"site": "EAST"}), lambda n, a: None)
    assert east.predictor("fundus").sha256 == shipped.sha256
    assert eyescreen("model", "activate", shipped.sha256[:10], env=env).returncode == 0  # roll back
    assert runtime.predictor("fundus").sha256 == shipped.sha256
    unknown = eyescreen("model", "activate", "zz", env=env)
    assert unknown.returncode != 0 and "no model" in unknown.stderr
    with runtime.sessions() as session:
        actions = session.scalars(select(AuditEvent.action)).all()
    assert actions.count("model.activate") == 3 and actions.count("model.register") == 2


def test_site_threshold_overrides_are_applied_and_recorded(
    database_url: str, tmp_path: Path
) -> None:
    overrides = tmp_path / "thresholds.json"
    overrides.write_text(json.dumps({"fundus": {"F.GLAU.GLAU": 0.9}}))
    settings = Settings(
        data_dir=tmp_path / "var",
        database_url=database_url,
        thresholds_file=overrides,
        site="WEST",
        pdf_reports=False,
    )
    settings.ensure_dirs()
    runtime = WorkerRuntime(settings, publish=lambda name, args: None)
    [image] = _receive(runtime, generated_fundus_photos(1))
    runtime.inference().infer_batch(image, "w", runtime.batch_policy)
    with runtime.sessions() as session:
        prediction = session.scalars(select(Prediction)).one()
        assert prediction.thresholds["F.GLAU.GLAU"] == 0.9
        positives = {f.code for f in prediction.findings if f.positive}
        assert load_taxonomy("fundus").with_ancestors(positives) == positives  # hierarchy holds
        assert prediction.provenance["threshold_set"].startswith("site:WEST:")
    overrides.write_text(json.dumps({"fundus": {"NOT.A.CODE": 0.5}}))
    broken = WorkerRuntime(settings, publish=lambda name, args: None)
    with pytest.raises(ValueError, match="unknown codes"):
        broken.predictor("fundus")
