"""The clinicians' day in a real browser (Playwright driving Debian's chromium): an admin adds a
grader; the grader grades, keyboard only, a case the model read differently; an arbiter finds it
in the queue, sees Read A and Read B, decides and signs; the database holds the decision and its
audit rows, and the verified, revised SR reaches a DCMTK storescp. Screenshots of each page are
kept under test-artifacts/screenshots."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from services.db.models import (
    ArbitrationCase,
    ArbitrationDecision,
    AuditEvent,
    CaseRead,
    OutboxMessage,
    Person,
)
from tests.clinic import PASSWORD, Clinic, open_clinic, served_over_http
from tests.conftest import free_port, require_binary
from tests.service_harness import pacs
from worker.follow_up import follow_up

pytestmark = pytest.mark.integration
__all__ = ["pacs"]  # the fixture

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOADED = (
    "Array.from(document.querySelectorAll('img.photo'))"
    ".every(i => i.complete && i.naturalWidth > 0)"
)
ARTIFACTS = Path(os.environ.get("EYESCREEN_TEST_ARTIFACTS", "test-artifacts")) / "screenshots"


@pytest.fixture
def served(
    postgres_url: str, tmp_path: Path, pacs: tuple[int, Path]
) -> Iterator[tuple[Clinic, str]]:
    port = free_port()
    destination = f"PACS@127.0.0.1:{pacs[0]}"
    with (
        open_clinic(postgres_url, tmp_path, sr_destinations=destination) as clinic,
        served_over_http(clinic, port) as address,
    ):
        yield clinic, address


def _wait_until_loaded(page) -> None:  # type: ignore[no-untyped-def]
    """Every photograph decoded. Polled from here: the page's CSP forbids the eval that
    Playwright's wait_for_function would need."""
    deadline = time.monotonic() + 30
    while not page.evaluate(LOADED):
        assert time.monotonic() < deadline, "the photographs did not load"
        time.sleep(0.1)


def _shot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _login(page, base: str, username: str, password: str = PASSWORD) -> None:  # type: ignore[no-untyped-def]
    page.goto(f"{base}/")
    assert "/login" in page.url  # nothing without a session; then each role's home page
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def test_admin_grader_and_arbiter_in_the_browser(
    served: tuple[Clinic, str], pacs: tuple[int, Path]
) -> None:
    require_binary(CHROMIUM)
    from playwright.sync_api import sync_playwright

    clinic, base = served
    case = clinic.case(patient_name="Tester^<script>x()</script>")
    model = clinic.model(case)
    assert model is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        errors: list[str] = []

        admin = browser.new_context().new_page()
        admin.on("pageerror", lambda e: errors.append(str(e)))
        _login(admin, base, "admin")
        _shot(admin, "dashboard")
        admin.goto(f"{base}/admin/users")
        admin.fill("#add-user input[name=username]", "gina")
        admin.fill("#add-user input[name=display_name]", "Grader^Gina")
        admin.select_option("#add-user select[name=role]", "grader")
        admin.fill("#add-user input[name=sites]", "NORTH")
        admin.fill("#add-user input[name=password]", "gina's long password")
        admin.click("#add-user button[type=submit]")
        assert "gina" in admin.inner_text("#users")
        _shot(admin, "users")

        grader = browser.new_context().new_page()
        grader.on("pageerror", lambda e: errors.append(str(e)))
        grader.on("dialog", lambda dialog: dialog.accept())
        _login(grader, base, "gina", "gina's long password")
        assert grader.url.endswith("/worklist")
        assert grader.inner_text("#waiting") == "1"
        _shot(grader, "worklist")
        grader.keyboard.press("Enter")  # start reading
        grader.wait_for_url(f"**/cases/{case}")
        assert "<script>" in grader.inner_text("#patient-name")  # shown as text, not run
        _wait_until_loaded(grader)
        grader.keyboard.press("=")  # zoom, linked between the eyes
        grader.keyboard.press("g")  # red-free
        # The model refers: the grader says normal, both eyes; else macular disease (finding 2).
        keys = ["n", "n"] if model.referral else ["2", "e", "2"]
        for key in keys:
            grader.keyboard.press(key)
        _shot(grader, "case")
        grader.keyboard.press("Enter")  # submit
        grader.wait_for_url("**/worklist?saved=*")
        assert "Saved your read" in grader.inner_text("#saved")
        with clinic.runtime.sessions() as session:
            read = session.scalars(select(CaseRead)).one()
            assert read.referral != model.referral and read.reading_ms and read.reading_ms > 0

        arbiter = browser.new_context().new_page()
        arbiter.on("pageerror", lambda e: errors.append(str(e)))
        _login(arbiter, base, "arthur")
        assert arbiter.url.endswith("/arbitration")
        _shot(arbiter, "arbitration-queue")
        arbiter.click("#queue a")
        _wait_until_loaded(arbiter)
        assert arbiter.inner_text("#read-A") and arbiter.inner_text("#read-B")
        _shot(arbiter, "arbitration-case")
        arbiter.check("input[name=choice][value=A]")
        arbiter.fill("#decide-form input[name=password]", PASSWORD)
        arbiter.click("#sign")
        arbiter.wait_for_url("**/arbitration?done=*")
        browser.close()
    assert not errors, errors

    with clinic.runtime.sessions() as session:
        decision = session.scalars(select(ArbitrationDecision)).one()
        arthur = session.scalars(select(Person).where(Person.username == "arthur")).one()
        assert decision.decided_by_pk == arthur.id and decision.case_pk == case
        actions = [a for (a,) in session.execute(select(AuditEvent.action))]
        pending = list(
            session.scalars(select(OutboxMessage.id).where(OutboxMessage.sent_at.is_(None)))
        )
    for action in (
        "user.add",
        "login",
        "case.view",
        "image.view",
        "read.submit",
        "arbitration.view",
        "arbitration.vote",
        "arbitration.decide",
    ):
        assert action in actions, action
    follow_up(clinic.runtime, pending)  # what the worker does with the queued report
    _, inbox = pacs
    deadline = time.monotonic() + 20
    verified = []
    while time.monotonic() < deadline and not verified:
        verified = [f for f in inbox.iterdir() if dcmread(f).get("VerificationFlag") == "VERIFIED"]
        time.sleep(0.2)
    assert verified, "the verified, revised SR reached the PACS"


def test_another_decision_in_the_browser_is_saved_as_entered(served: tuple[Clinic, str]) -> None:
    """The arbiter picks "Another decision": the eye fields appear, the arbiter ticks a finding
    in each eye, and the signed decision holds exactly those (issue 21: the fields stayed
    hidden and the vote was saved as both eyes normal)."""
    require_binary(CHROMIUM)
    from playwright.sync_api import sync_playwright

    from tests.clinic import other_read, read_form

    clinic, base = served
    case = clinic.case()
    grader, csrf = clinic.login("grace")
    form = read_form(csrf, other_read(clinic.model(case)))
    assert grader.post(f"/cases/{case}/read", data=form).status_code == 303
    with clinic.runtime.sessions() as session:
        arbitration = session.scalars(select(ArbitrationCase.id)).one()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        errors: list[str] = []
        arbiter = browser.new_context().new_page()
        arbiter.on("pageerror", lambda e: errors.append(str(e)))
        _login(arbiter, base, "arthur")
        arbiter.goto(f"{base}/arbitration/{arbitration}")
        assert not arbiter.is_visible("#other-fields")
        arbiter.check("input[name=choice][value=other]")
        assert arbiter.is_visible("#other-fields fieldset[data-eye=R]"), "no eye fields shown"
        for eye in "RL":  # glaucoma, ticked in each eye
            arbiter.check(f"#other-fields input[name=eye_{eye}_code][value='F.GLAU.GLAU']")
        arbiter.fill("#decide-form textarea[name=comment]", "glaucoma in both eyes")
        arbiter.fill("#decide-form input[name=password]", PASSWORD)
        _shot(arbiter, "arbitration-other")
        arbiter.click("#sign")
        arbiter.wait_for_url("**/arbitration?done=*")
        browser.close()
    assert not errors, errors
    with clinic.runtime.sessions() as session:
        decision = session.scalars(select(ArbitrationDecision)).one()
        assert decision.eyes == {eye: ["F.GLAU", "F.GLAU.GLAU"] for eye in "RL"}
        assert decision.referral is True
