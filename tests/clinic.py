"""A screening clinic for web application tests: a migrated database, the worker runtime with
the shipped models, cases made of generated photographs, and people at two sites."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_gateway.photos import photo_to_dataset
from services.access import people
from services.clinic.triage import model_read
from services.db.models import Instance, Role
from services.db.session import transaction
from services.intake.ingest import IngestService
from services.kernel.settings import Settings
from tests.dicom_files import received_dataset
from tests.shipped_models import unguarded_fundus
from tests.synthetic_photos import generated_fundus_photos
from webapp.app import create_app
from worker.runtime import WorkerRuntime

PASSWORD = "correct horse battery"
SITE, OTHER_SITE = "NORTH", "SOUTH"
USERS = {  # username: role, site
    "admin": (Role.ADMIN, SITE),
    "grace": (Role.GRADER, SITE),
    "arthur": (Role.ARBITER, SITE),
    "sonia": (Role.SENIOR_ARBITER, SITE),
    "stan": (Role.STATISTICIAN, SITE),
    "oscar": (Role.GRADER, OTHER_SITE),
}


@dataclass
class Clinic:
    settings: Settings
    runtime: WorkerRuntime
    ingest: dict[str, IngestService] = field(default_factory=dict)

    def case(self, patient_name: str = "Doe^Jane", site: str = SITE, eyes: str = "RL") -> int:
        """A visit with a generated fundus photograph of each eye, read by the model."""
        study_uid = generate_uid()
        photos = generated_fundus_photos(2)
        ids = []
        for number, eye in enumerate(eyes):
            ds = photo_to_dataset(
                photos[number],
                patient_id="P-" + study_uid[-6:],
                patient_name=patient_name,
                laterality=eye,
                study_uid=study_uid,
            )
            result = self.ingest[site].accept(received_dataset(ds))
            ids.append(result.instance_id)
        for outcome in self.runtime.inference().infer(ids):
            assert outcome.prediction_id is not None, outcome.error
        with self.runtime.sessions() as session:
            return session.get_one(Instance, ids[0]).case_pk

    def model(self, case_id: int):  # type: ignore[no-untyped-def]
        with self.runtime.sessions() as session:
            return model_read(session, case_id)

    def study_uid(self, case_id: int) -> str:
        from services.db.models import ScreeningCase

        with self.runtime.sessions() as session:
            return session.get_one(ScreeningCase, case_id).study.study_instance_uid

    def client(self) -> TestClient:
        return TestClient(create_app(self.settings, self.runtime.sessions), follow_redirects=False)

    def login(self, username: str) -> tuple[TestClient, str]:
        """A client signed in as the user, and the session's CSRF token."""
        client = self.client()
        answer = sign_in(client, username, PASSWORD)
        assert answer.status_code == 303, answer.text
        page = client.get("/dashboard")
        match = re.search(r'name="csrf_token" value="([^"]+)"', page.text)
        assert match, page.text
        return client, match.group(1)


def sign_in(client, username: str, password: str):  # type: ignore[no-untyped-def]
    """Post the log-in form as a browser does: with the token the log-in page handed out."""
    page = client.get("/login")
    token = re.search(r'name="login_token" value="([^"]+)"', page.text)
    assert token, page.text
    return client.post(
        "/login", data={"username": username, "password": password, "login_token": token.group(1)}
    )


def other_read(model, eyes: str = "RL") -> dict:  # type: ignore[no-untyped-def]
    """A read that differs from the model's: normal where it referred, a finding otherwise."""
    if model.referral:
        return {eye: {"codes": [], "ungradable": None} for eye in eyes}
    return {eye: {"codes": ["F.VRD.MAC"], "ungradable": None} for eye in eyes}


@contextmanager
def open_clinic(database_url: str, tmp_path: Path, **settings: Any) -> Iterator[Clinic]:
    """A clinic on a fresh database; ``settings`` override the defaults (no QC draw, no
    heatmaps or PDFs, the shipped fundus model without its guard: these tests are about
    people, not pictures)."""
    from eyescreen.database import upgrade

    upgrade(database_url)
    chosen: dict[str, Any] = dict(
        qc_sample_rate=0.0,
        heatmaps=False,
        pdf_reports=False,
        fundus_checkpoint=unguarded_fundus(),  # drawn pictures: the model's read, not its guard
    )
    chosen.update(settings)
    config = Settings(data_dir=tmp_path / "var", database_url=database_url, **chosen)
    config.ensure_dirs()
    runtime = WorkerRuntime(config, publish=lambda name, args: None)
    clinic = Clinic(config, runtime)
    for site in (SITE, OTHER_SITE):
        clinic.ingest[site] = IngestService(runtime.sessions, runtime.images, site)
    with transaction(runtime.sessions) as session:
        for username, (role, site) in USERS.items():
            people.add_person(session, username, f"{username.title()}^Test", role, [site], PASSWORD)
    try:
        yield clinic
    finally:
        runtime.sessions.kw["bind"].dispose()


@pytest.fixture
def clinic(postgres_url: str, tmp_path: Path) -> Iterator[Clinic]:
    with open_clinic(postgres_url, tmp_path) as opened:
        yield opened


def instance_ids(clinic: Clinic, case_id: int) -> list[int]:
    with clinic.runtime.sessions() as session:
        return list(session.scalars(select(Instance.id).where(Instance.case_pk == case_id)))


@contextmanager
def served_over_http(clinic: Clinic, port: int) -> Iterator[str]:
    """The clinic's web application on a real socket (uvicorn in a thread), for the browser;
    yields its base address and stops it afterwards."""
    import threading
    import time

    import uvicorn

    app = create_app(clinic.settings, clinic.runtime.sessions)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "the web application did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def read_form(csrf: str, eyes: dict, reading_ms: str = "4200", **extra: object) -> dict:  # type: ignore[type-arg]
    """The grading form as the page posts it: each eye stated, findings or normal."""
    form: dict[str, object] = {"csrf_token": csrf, "reading_ms": reading_ms, **extra}
    for eye, read in eyes.items():
        form[f"eye_{eye}_state"] = "findings" if read["codes"] else "normal"
        form[f"eye_{eye}_code"] = read["codes"]
    return form
