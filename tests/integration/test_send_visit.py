"""``eyescreen send`` as a person trying the system uses it (issue 21): two photographs, one
command, one two-eye visit with the patient's name, birth date and accession; the eye read
from the option or from the file name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import select

from eyescreen.cli import main
from eyescreen.visit import VisitError, eye_from_name, eyes_for
from services.db.models import Instance, Patient, ScreeningCase, Study
from tests.gateway_harness import Gateway

pytestmark = pytest.mark.integration


def test_eyes_from_options_or_file_names() -> None:
    right, left = Path("1034_right.jpg"), Path("p1-OS.png")
    assert [eye_from_name(p) for p in (right, left, Path("photo.jpg"))] == ["R", "L", ""]
    assert eyes_for([right, left], []) == ["R", "L"]
    assert eyes_for([right, left], ["od", "left"]) == ["R", "L"]
    assert eyes_for([right, left], ["L"]) == ["L", "L"]
    with pytest.raises(VisitError, match="one per file"):
        eyes_for([right, left, right], ["R", "L"])


def test_two_photographs_are_one_two_eye_visit(
    postgres_url: str, tmp_path: Path, fundus_photo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eyescreen.database import upgrade

    upgrade(postgres_url)
    gateway = Gateway(postgres_url, tmp_path / "var")
    try:
        right, left = tmp_path / "right.jpg", tmp_path / "left.jpg"
        shutil.copy(fundus_photo, right)
        shutil.copy(fundus_photo, left)
        monkeypatch.setenv("EYESCREEN_DATA_DIR", str(tmp_path / "client"))
        monkeypatch.setenv("EYESCREEN_DATABASE_URL", postgres_url)
        answer = CliRunner().invoke(
            main,
            ["send", str(right), str(left), "--to", f"EYESCREEN@127.0.0.1:{gateway.port}",
             "--patient-id", "12345", "--patient-name", "Doe^Jane", "--birth-date",
             "1950-01-31", "--accession", "ACC-1"],
        )  # fmt: skip
        assert answer.exit_code == 0, answer.output
        with gateway.sessions() as session:
            cases = session.scalars(select(ScreeningCase)).all()
            assert len(cases) == 1
            eyes = sorted(session.scalars(select(Instance.laterality)))
            study = session.scalars(select(Study)).one()
            patient = session.scalars(select(Patient)).one()
        assert eyes == ["L", "R"]
        assert study.accession_number == "ACC-1"
        assert (patient.name, patient.birth_date) == ("Doe^Jane", "19500131")
        bad = CliRunner().invoke(main, ["send", str(right), "--eye", "up"])
        assert bad.exit_code == 2 and "write R, L, OD, OS" in bad.output
    finally:
        gateway.server.shutdown()
