"""``eyescreen model recalibrate`` through its command and a clinic's database: the site's
verified reads refit the active model's temperatures and operating point; the result is
registered beside it, not activated, and audited; too few verified eyes are refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from sqlalchemy import select

from services.db.models import AuditEvent, ModelVersion
from services.screening import registry
from tests.clinic import OTHER_SITE, SITE, open_clinic, read_form
from tests.service_harness import eyescreen
from tests.shipped_models import unguarded_fundus

pytestmark = pytest.mark.integration


def _agree(client, csrf: str, case: int, model) -> None:  # type: ignore[no-untyped-def]
    """A grader's read that agrees with the model in each eye: accepted as concordant."""
    eyes = {e: {"codes": [c for c in model.findings.get(e, []) if c.count(".") == 2]} for e in "RL"}
    assert client.post(f"/cases/{case}/read", data=read_form(csrf, eyes)).status_code == 303


def test_a_site_recalibrated_from_its_verified_reads(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    env = dict(os.environ, EYESCREEN_DATA_DIR=str(tmp_path / "var"), EYESCREEN_DATABASE_URL=url)
    with open_clinic(url, tmp_path) as clinic:
        registered = eyescreen("model", "register", str(unguarded_fundus()), env=env)
        assert registered.returncode == 0, registered.stderr[-2000:]
        with clinic.runtime.sessions() as session:
            base = session.scalars(select(ModelVersion)).one()
        activated = eyescreen(
            "model", "activate", base.weights_sha256[:12], "--site", SITE, env=env
        )
        assert activated.returncode == 0, activated.stderr[-2000:]

        grader, csrf = clinic.login("grace")
        for _ in range(4):
            case = clinic.case()
            _agree(grader, csrf, case, clinic.model(case))
        remote, csrf_r = clinic.login("oscar")
        elsewhere = clinic.case(site=OTHER_SITE)
        _agree(remote, csrf_r, elsewhere, clinic.model(elsewhere))

        out = tmp_path / "recalibrated.pt"
        args = ["model", "recalibrate", "--site", SITE, "--with-concordant", "--out", str(out)]
        refused = eyescreen(*args, "--min-eyes", "9", env=env)
        assert refused.returncode != 0
        assert f"8 verified eyes at {SITE!r}" in refused.stderr  # the other site's two not
        assert not out.exists()

        done = eyescreen(*args, "--min-eyes", "8", "--target-sensitivity", "0.9", env=env)
        assert done.returncode == 0, done.stderr[-3000:]
        assert '"eyes": 8' in done.stdout and "(not active)" in done.stdout
        with clinic.runtime.sessions() as session:
            models = session.scalars(select(ModelVersion).order_by(ModelVersion.id)).all()
            assert [m.version for m in models] == [base.version, f"{base.version}+{SITE}"]
            assert registry.active(session, "fundus", SITE).id == base.id  # a person activates
            audit = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "model.recalibrate")
            ).one()
        assert audit.detail["base"] == base.weights_sha256 and audit.detail["eyes"] == 8
        assert audit.detail["sha256"] == models[1].weights_sha256
        meta = torch.load(out, map_location="cpu", weights_only=False)
        assert meta["recalibration"]["site"] == SITE
        assert meta["recalibration"]["base_version"] == base.version
        assert meta["operating_point"]["target_sensitivity"] == 0.9
        assert set(meta["calibration"]["temperatures"]) >= set(meta["thresholds"])


def test_a_database_without_tables_is_named_not_a_traceback(tmp_path: Path) -> None:
    """A fresh data folder: the command says to run `eyescreen db upgrade` (it used to end in
    SQLAlchemy's "no such table" traceback)."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    env = dict(os.environ, EYESCREEN_DATA_DIR=str(tmp_path / "var"), EYESCREEN_DATABASE_URL=url)
    result = eyescreen(
        "model", "recalibrate", "--site", SITE, "--out", str(tmp_path / "x.pt"), env=env
    )
    assert result.returncode == 1
    assert "eyescreen db upgrade" in result.stderr and "Traceback" not in result.stderr
