"""A site's verified photographs join a training set (``eyescreen train --include-verified``):
the panel's decision and an accepted concordant read give labels; a case still with the panel
and another site's cases give none; the photograph is the pixels the served model read."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sqlalchemy import select

from dicom_gateway.pixels import decode_rgb
from eyescreen.verified import verified_samples
from services.db.models import ArbitrationCase, ArbitrationState, AuditEvent, Instance
from services.taxonomy.tree import load_taxonomy
from tests.clinic import OTHER_SITE, PASSWORD, SITE, open_clinic, read_form
from tests.service_harness import eyescreen

pytestmark = pytest.mark.integration
MACULAR = "F.VRD.MAC"  # a level-2 finding the model's read of a generated photograph lacks


def _read(client, csrf: str, case: int, codes: list[str]) -> None:  # type: ignore[no-untyped-def]
    form = read_form(csrf, {e: {"codes": codes} for e in "RL"})
    assert client.post(f"/cases/{case}/read", data=form).status_code == 303


def _agreeing(model) -> list[str]:  # type: ignore[no-untyped-def]
    return [c for c in model.findings.get("R", []) if c.count(".") == 2]


def test_verified_eyes_become_samples_with_the_panels_labels(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    with open_clinic(url, tmp_path) as clinic:
        grader, csrf = clinic.login("grace")
        concordant = clinic.case(eyes="R")
        _read(grader, csrf, concordant, _agreeing(clinic.model(concordant)))
        decided, pending = clinic.case(), clinic.case()
        for case in (decided, pending):
            model = clinic.model(case)
            _read(grader, csrf, case, [] if model.referral else [MACULAR])
        elsewhere = clinic.case(site=OTHER_SITE, eyes="R")
        remote, csrf_r = clinic.login("oscar")
        _read(remote, csrf_r, elsewhere, _agreeing(clinic.model(elsewhere)))

        arbiter, csrf_a = clinic.login("arthur")
        with clinic.runtime.sessions() as session:
            arbitration = session.scalar(
                select(ArbitrationCase.id).where(ArbitrationCase.case_pk == decided)
            )
            assert (
                session.scalar(
                    select(ArbitrationCase.state).where(ArbitrationCase.case_pk == pending)
                )
                == ArbitrationState.OPEN
            )
        panel = {"csrf_token": csrf_a, "choice": "other", "password": PASSWORD}
        panel |= {"comment": "macular disease in the right eye only"}
        panel |= {"eye_R_state": "findings", "eye_R_code": [MACULAR], "eye_L_state": "normal"}
        answer = arbiter.post(f"/arbitration/{arbitration}/vote", data=panel)
        assert answer.status_code == 303, answer.text

        taxonomy = load_taxonomy("fundus")
        folder = tmp_path / "cache" / "verified"
        samples = verified_samples(
            clinic.settings, clinic.runtime.sessions, SITE, "fundus", taxonomy, folder
        )
        with clinic.runtime.sessions() as session:
            stored = {
                i.sha256: (i.case_pk, i.laterality) for i in session.scalars(select(Instance))
            }
            audit = session.scalars(
                select(AuditEvent).where(AuditEvent.action == "model.train.include_verified")
            ).all()

        by_case = {(stored[s.path.stem][0], s.eye): s for s in samples}
        assert set(by_case) == {(concordant, "R"), (decided, "R"), (decided, "L")}
        normal = taxonomy.with_ancestors({n.code for n in taxonomy.nodes if n.normal})
        assert by_case[(decided, "R")].codes == frozenset(taxonomy.with_ancestors({MACULAR}))
        assert by_case[(decided, "L")].codes == frozenset(normal)
        assert by_case[(decided, "L")].note == "panel after discordance"
        assert by_case[(concordant, "R")].note == "concordant read accepted"
        agreed = _agreeing(clinic.model(concordant))
        assert by_case[(concordant, "R")].codes == frozenset(
            taxonomy.with_ancestors(set(agreed)) if agreed else normal
        )
        # one patient key per case, prefixed by the site, never the hospital's patient id
        assert {s.patient_id.split(":")[0] for s in samples} == {SITE}
        assert by_case[(decided, "R")].patient_id == by_case[(decided, "L")].patient_id
        assert all("P-" not in s.patient_id for s in samples)
        # the pixels the served model read, losslessly
        for sample in samples:
            served = decode_rgb(clinic.runtime.images.read(sample.path.stem))
            assert np.array_equal(np.asarray(Image.open(sample.path).convert("RGB")), served)
        assert len(audit) == 1 and audit[0].detail["photographs"] == 3

        # a second run reuses the written photographs and gives the same samples
        again = verified_samples(
            clinic.settings, clinic.runtime.sessions, SITE, "fundus", taxonomy, folder
        )
        assert again == samples

        # the operator's command: a (tiny) manifest plus the site's verified photographs
        trained = eyescreen(
            *_tiny_training(tmp_path), "--include-verified", SITE,
            env=dict(os.environ, EYESCREEN_DATA_DIR=str(tmp_path / "var"),
                     EYESCREEN_DATABASE_URL=url),
        )  # fmt: skip
        assert trained.returncode == 0, trained.stderr[-3000:]
        assert f"{SITE}: 3 verified fundus photographs added" in trained.stderr
        assert (tmp_path / "model.pt").exists()


def _tiny_training(tmp_path: Path) -> list[str]:
    """A manifest of small generated photographs and a training run sized for a test."""
    rng = np.random.default_rng(3)
    rows = ["file,patient_id,folder_label"]
    for i in range(8):
        label = "normal" if i % 2 else "cataract"
        pixels = rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(tmp_path / f"t{i}.png")
        rows.append(f"t{i}.png,t{i},{label}")
    (tmp_path / "m.csv").write_text("\n".join(rows) + "\n")
    return [
        "train", "--taxonomy", "fundus", "--manifest", str(tmp_path / "m.csv"),
        "--image-size", "64", "--head-epochs", "2", "--unfreeze-steps", "0",
        "--device", "cpu", "--out", str(tmp_path / "model.pt"),
        "--cache-dir", str(tmp_path / "cache"),
    ]  # fmt: skip
