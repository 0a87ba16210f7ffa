"""A reader's screen in a real browser (Playwright driving Debian's chromium), issue 21: photos
fitted and centred at one scale whatever their encoding, zoom about the cursor, the Grad-CAM
overlay on its photograph, the form on screen at 1366x768, the keyboard (and how many keys a
case takes), "saved" and the place in the list, the lease handed back on leaving, and the
panel's vote that keeps what was typed. Screenshots at 1366x768 and 1920x1080 go to
test-artifacts/screens."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from PIL.PngImagePlugin import PngInfo
from pydicom.uid import generate_uid
from sqlalchemy import select

from dicom_gateway.photos import photo_to_dataset
from ml.geometry import BOX_KEY, square_box
from services.clinic import grading
from services.clinic.triage import Rule, TriagePolicy, triage_case
from services.db.models import (
    ArbitrationCase,
    ArbitrationVote,
    CaseRead,
    Instance,
    Person,
    Prediction,
    ScreeningCase,
)
from services.db.session import transaction
from tests.clinic import (
    PASSWORD,
    SITE,
    Clinic,
    open_clinic,
    other_read,
    served_over_http,
)
from tests.conftest import free_port, require_binary
from tests.dicom_files import received_dataset
from tests.synthetic_photos import fundus_rgb

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
FLAGS = ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
SMALL, LARGE = {"width": 1366, "height": 768}, {"width": 1920, "height": 1080}
SCREENS = Path(os.environ.get("EYESCREEN_TEST_ARTIFACTS", "test-artifacts")) / "screens"
BOXES = """Array.from(document.querySelectorAll('.frame')).map(f => {
  const box = (e) => {
    const r = e.getBoundingClientRect(); return [r.left, r.top, r.width, r.height];
  };
  const o = f.querySelector('img.overlay');
  const shown = o && !o.classList.contains('hidden') && o.complete && o.naturalWidth;
  return {frame: box(f), photo: box(f.querySelector('img.photo')), overlay: shown ? box(o) : null};
})"""
OVERLAYS = (
    "Array.from(document.querySelectorAll('img.overlay'))"
    ".every(i => i.complete && i.naturalWidth > 0)"
)
LOADED = (
    "Array.from(document.querySelectorAll('img.photo'))"
    ".every(i => i.complete && i.naturalWidth > 0)"
)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 3072x2048 camera JPEG (passed to the browser as it is) and a 400 px PNG photograph
    (decoded and sent as PNG): the two used to show at different scales."""
    folder = tmp_path_factory.mktemp("reader-photos")
    big = np.pad(fundus_rgb(2048, seed=3), ((0, 0), (512, 512), (0, 0)))
    Image.fromarray(big).save(folder / "big.jpg", quality=90)
    Image.fromarray(fundus_rgb(400, seed=4, frame=0.15)).save(folder / "small.png")
    return {"big": folder / "big.jpg", "small": folder / "small.png"}


@pytest.fixture
def served(postgres_url: str, tmp_path: Path) -> Iterator[tuple[Clinic, str]]:
    port = free_port()
    with (
        open_clinic(postgres_url, tmp_path, arbitration_quorum=2) as clinic,
        served_over_http(clinic, port) as address,
    ):
        yield clinic, address


def make_case(clinic: Clinic, right: Path, left: Path, name: str = "Doe^Jane^Ann") -> int:
    """A visit of two photographs, one per eye, read by the model."""
    study_uid = generate_uid()
    ids = []
    for eye, path in (("R", right), ("L", left)):
        ds = photo_to_dataset(
            path, patient_id="P-" + study_uid[-6:], patient_name=name, laterality=eye,
            study_uid=study_uid,
        )  # fmt: skip
        image = replace(received_dataset(ds), birth_date="19500101")
        ids.append(clinic.ingest[SITE].accept(image).instance_id)
    for outcome in clinic.runtime.inference().infer(ids):
        assert outcome.prediction_id is not None, outcome.error
    with clinic.runtime.sessions() as session:
        return session.get_one(Instance, ids[0]).case_pk


def to_arbitration(clinic: Clinic, case_id: int, tmp_path: Path) -> int:
    """Grace reads the case against the model, so it goes to the panel; every photograph gets
    a heatmap as the worker writes it."""
    model = clinic.model(case_id)
    with transaction(clinic.runtime.sessions) as session:
        case = session.get_one(ScreeningCase, case_id)
        grace = session.scalars(select(Person).where(Person.username == "grace")).one()
        grading.submit_read(session, case, grace, other_read(model), 1000)
        settings = clinic.settings
        policy = TriagePolicy(Rule(settings.discrepancy_rule), 0.0, settings.qc_seed)
        triage_case(session, case_id, policy)
        for prediction in session.scalars(
            select(Prediction).join(Instance).where(Instance.case_pk == case_id)
        ):
            prediction.heatmap_path = _heatmap(clinic, prediction.instance, tmp_path)
        return session.scalars(
            select(ArbitrationCase.id).where(ArbitrationCase.case_pk == case_id)
        ).one()


def _heatmap(clinic: Clinic, instance: Instance, folder: Path) -> str:
    """What the worker writes: half the network's 320 px square view, half a jet-coloured
    Grad-CAM (here a hot spot at (0.62, 0.42) of the square), with the square's box."""
    from dicom_gateway.pixels import decode_rgb
    from ml.preprocess import Preprocessing, to_square_image

    rgb = decode_rgb(clinic.runtime.images.read(instance.sha256))
    base = np.asarray(to_square_image(rgb, Preprocessing(size=320))).astype(float) / 255
    y, x = np.mgrid[0:320, 0:320] / 320
    cam = np.exp(-((x - 0.62) ** 2 + (y - 0.42) ** 2) / 0.01)
    jet = np.stack([np.clip(1.5 - abs(4 * cam - k), 0, 1) for k in (3, 2, 1)], axis=2)
    view = (255 * (0.5 * base + 0.5 * jet)).astype(np.uint8)
    info = PngInfo()
    info.add_text(BOX_KEY, square_box(rgb).to_text())
    path = folder / f"heat-{instance.id}.png"
    Image.fromarray(view).save(path, pnginfo=info)
    return str(path)


def _wait(page: Any, expression: str, what: str) -> None:
    """Polled from here: the page's CSP forbids the eval that wait_for_function needs."""
    deadline = time.monotonic() + 30
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def _login(page: Any, base: str, username: str) -> None:
    page.goto(f"{base}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def _fits(frame: list[float], photo: list[float]) -> float:
    """Checks the photo is centred in its frame; returns how much of the frame it fills
    along its limiting side (1.0: fitted)."""
    assert abs((frame[0] + frame[2] / 2) - (photo[0] + photo[2] / 2)) < 1.5, (frame, photo)
    assert abs((frame[1] + frame[3] / 2) - (photo[1] + photo[3] / 2)) < 1.5, (frame, photo)
    return max(photo[2] / frame[2], photo[3] / frame[3])


@pytest.fixture
def browser() -> Iterator[Any]:
    require_binary(CHROMIUM)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        launched.close()


def _page(browser: Any, size: dict[str, int] = SMALL) -> Any:
    page = browser.new_context(viewport=size).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.errors = errors
    return page


def test_photos_fit_centred_at_one_scale_and_zoom_about_the_cursor(
    served: tuple[Clinic, str], photos: dict[str, Path], browser: Any
) -> None:
    clinic, base = served
    case = make_case(clinic, photos["big"], photos["small"])
    page = _page(browser)
    _login(page, base, "grace")
    page.goto(f"{base}/cases/{case}")
    _wait(page, LOADED, "the photographs did not load")
    sizes = page.evaluate(
        "Array.from(document.querySelectorAll('img.photo')).map(i => i.naturalWidth)"
    )
    assert sizes[0] == 3072 and sizes[1] == 400  # the JPEG as the camera sent it
    right, left = page.evaluate(BOXES)
    assert _fits(right["frame"], right["photo"]) == pytest.approx(1.0, abs=0.01)
    assert _fits(left["frame"], left["photo"]) == pytest.approx(1.0, abs=0.01)

    page.keyboard.press("=")  # linked zoom: both eyes at the same scale
    right, left = page.evaluate(BOXES)
    assert _fits(right["frame"], right["photo"]) == pytest.approx(1.25, abs=0.01)
    assert _fits(left["frame"], left["photo"]) == pytest.approx(1.25, abs=0.01)

    # The wheel zooms about the cursor: the point of the photo under it stays under it.
    frame, photo = right["frame"], right["photo"]
    x, y = frame[0] + 0.3 * frame[2], frame[1] + 0.35 * frame[3]
    under = ((x - photo[0]) / photo[2], (y - photo[1]) / photo[3])
    page.mouse.move(x, y)
    page.mouse.wheel(0, -100)
    time.sleep(0.3)
    right, left = page.evaluate(BOXES)
    photo = right["photo"]
    assert photo[2] > frame[2] * 1.3  # it zoomed in
    assert (x - photo[0]) / photo[2] == pytest.approx(under[0], abs=0.003)
    assert (y - photo[1]) / photo[3] == pytest.approx(under[1], abs=0.003)
    assert left["photo"][2] / left["frame"][2] == pytest.approx(photo[2] / frame[2], rel=0.01)
    assert not page.errors, page.errors


def test_the_overlay_lies_on_its_photograph(
    served: tuple[Clinic, str], photos: dict[str, Path], browser: Any, tmp_path: Path
) -> None:
    clinic, base = served
    case = make_case(clinic, photos["big"], photos["small"])
    arbitration = to_arbitration(clinic, case, tmp_path)
    page = _page(browser)
    _login(page, base, "arthur")
    page.goto(f"{base}/arbitration/{arbitration}")
    _wait(page, LOADED, "the photographs did not load")
    page.keyboard.press("h")
    _wait(page, OVERLAYS, "the overlays did not load")
    for zoom in ("", "="):
        if zoom:
            page.keyboard.press(zoom)
        for frame in page.evaluate(BOXES):
            assert frame["overlay"] is not None
            for mine, photos_ in zip(frame["overlay"], frame["photo"], strict=True):
                assert mine == pytest.approx(photos_, abs=1.0), frame
    assert not page.errors, page.errors


def _active_eye(page: Any) -> str:
    return page.evaluate("document.querySelector('#grade-form fieldset.active').dataset.eye")


def _last_read(clinic: Clinic, case: int) -> dict[str, Any]:
    with clinic.runtime.sessions() as session:
        read = session.scalars(select(CaseRead).where(CaseRead.case_pk == case)).one()
        return read.eyes


def test_a_day_at_the_keyboard_at_1366x768(
    served: tuple[Clinic, str], photos: dict[str, Path], browser: Any
) -> None:
    """Normal: N N Enter (3 keys). One finding: 2 E N Enter (4). Ungradable: U 3 U 3 Enter
    (5: U and the reason's number per eye). The form is on screen without scrolling; Tab
    moves the focus as browsers do; Enter submits even from the reason list."""
    clinic, base = served
    cases = [make_case(clinic, photos["small"], photos["small"]) for _ in range(4)]
    page = _page(browser)
    _login(page, base, "grace")
    page.keyboard.press("Enter")  # start reading
    page.wait_for_url(f"**/cases/{cases[0]}")
    _wait(page, LOADED, "the photographs did not load")
    assert page.evaluate("document.scrollingElement.scrollHeight <= window.innerHeight")
    for selector in (
        "#submit-read",
        "fieldset[data-eye=R] [data-normal]",
        "fieldset[data-eye=L] ol li:last-child",
    ):
        box = page.locator(selector).bounding_box()
        assert box and box["y"] >= 0 and box["y"] + box["height"] <= 768, (selector, box)
    assert page.inner_text("#place") == "Case 1 of 4 in your list"
    assert page.inner_text("#patient-name") == "Jane Ann Doe"
    assert "born 1 Jan 1950" in page.inner_text(".patient")

    page.keyboard.press("Tab")  # the browser's: focus moves, the active eye does not
    assert page.evaluate("document.activeElement.tagName") in ("A", "BUTTON", "INPUT")
    assert _active_eye(page) == "R"
    page.evaluate("document.activeElement.blur()")

    for key in ("n", "n", "Enter"):
        page.keyboard.press(key)
    page.wait_for_url(f"**/cases/{cases[1]}?saved={cases[0]}")
    assert f"Saved your read of case {cases[0]}" in page.inner_text("#saved")
    assert page.inner_text("#place") == "Case 1 of 3 in your list"
    assert _last_read(clinic, cases[0]) == {eye: {"codes": [], "ungradable": None} for eye in "RL"}

    for key in ("2", "e", "n", "Enter"):
        page.keyboard.press(key)
    page.wait_for_url(f"**/cases/{cases[2]}?saved={cases[1]}")
    eyes = _last_read(clinic, cases[1])
    assert len(eyes["R"]["codes"]) == 1 and eyes["L"] == {"codes": [], "ungradable": None}

    for key in ("u", "3", "u", "3", "Enter"):
        page.keyboard.press(key)
    page.wait_for_url(f"**/cases/{cases[3]}?saved={cases[2]}")
    assert _last_read(clinic, cases[2]) == {
        eye: {"codes": [], "ungradable": "out of focus"} for eye in "RL"
    }

    # With the mouse: Ungradable, a reason from the list, and Enter from the list itself.
    page.click("fieldset[data-eye=R] [data-ungradable]")
    page.select_option("fieldset[data-eye=R] [data-reason]", "small pupil")
    page.click("fieldset[data-eye=L] [data-normal]")
    page.focus("fieldset[data-eye=R] [data-reason]")
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/worklist?saved={cases[3]}")
    assert _last_read(clinic, cases[3])["R"] == {"codes": [], "ungradable": "small pupil"}
    assert not page.errors, page.errors


def test_an_eye_left_unread_is_named_not_submitted_as_normal(
    served: tuple[Clinic, str], photos: dict[str, Path], browser: Any
) -> None:
    """N Enter (one eye stated) offered "Submit it as normal?", which a second Enter accepted:
    an eye nobody looked at was saved as normal. Now the page names the eye and waits, and an
    ungradable eye keeps the whole form on screen at 1366x768."""
    clinic, base = served
    case = make_case(clinic, photos["small"], photos["small"])
    page = _page(browser)
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.accept()))
    _login(page, base, "grace")
    page.goto(f"{base}/cases/{case}")
    _wait(page, LOADED, "the photographs did not load")
    for key in ("n", "Enter", "Enter"):
        page.keyboard.press(key)
    time.sleep(0.5)
    assert dialogs == [] and page.url.endswith(f"/cases/{case}")
    assert "Nothing recorded for eye L" in page.inner_text("#grade-form")
    assert _active_eye(page) == "L"
    with clinic.runtime.sessions() as session:
        assert session.scalars(select(CaseRead).where(CaseRead.case_pk == case)).all() == []
    no_scroll = "(a => a.scrollHeight <= a.clientHeight)(document.querySelector('aside.grading'))"
    for keys in (("u", "3"), ("e", "u", "3")):  # left eye ungradable, then both
        for key in keys:
            page.keyboard.press(key)
        assert page.evaluate(no_scroll), "the read panel scrolls with an ungradable eye"
        for selector in ("#submit-read", "fieldset[data-eye=L] [data-reason]", ".keys"):
            box = page.locator(selector).bounding_box()
            assert box and box["y"] >= 0 and box["y"] + box["height"] <= 768, (selector, box)
    page.keyboard.press("Enter")
    page.wait_for_url(f"**/worklist?saved={case}")
    assert _last_read(clinic, case) == {
        eye: {"codes": [], "ungradable": "out of focus"} for eye in "RL"
    }
    assert not page.errors, page.errors


def test_leaving_a_case_hands_it_back(
    served: tuple[Clinic, str], photos: dict[str, Path], browser: Any
) -> None:
    clinic, base = served
    case = make_case(clinic, photos["small"], photos["small"])
    grace, arthur = _page(browser), _page(browser)
    _login(grace, base, "grace")
    grace.goto(f"{base}/cases/{case}")
    _login(arthur, base, "arthur")
    arthur.goto(f"{base}/cases/{case}")
    assert arthur.locator("#held-by-other").count() == 1  # while she reads it
    arthur.goto(f"{base}/worklist")
    grace.click("header nav a[href='/worklist']")  # she leaves it unread
    grace.wait_for_url("**/worklist")
    deadline = time.monotonic() + 10
    while True:
        arthur.goto(f"{base}/cases/{case}")
        if arthur.locator("#held-by-other").count() == 0:
            break
        assert time.monotonic() < deadline, "the case stayed held after she left it"
        time.sleep(0.3)
    assert arthur.locator("#grade-form").count() == 1


def test_a_refused_vote_keeps_what_was_typed_and_a_vote_says_what_follows(
    served: tuple[Clinic, str], photos: dict[str, Path], browser: Any, tmp_path: Path
) -> None:
    clinic, base = served
    case = make_case(clinic, photos["small"], photos["small"])
    arbitration = to_arbitration(clinic, case, tmp_path)
    page = _page(browser)
    _login(page, base, "arthur")
    page.goto(f"{base}/arbitration/{arbitration}")
    page.check("input[name=choice][value=other]")
    page.check("#other-fields fieldset[data-eye=R] input[data-key='3']")
    page.click("#other-fields fieldset[data-eye=L] [data-normal]")
    page.fill("#decide-form textarea[name=comment]", "disc margins blurred")
    page.fill("#decide-form input[name=password]", "not my password")
    page.click("#sign")
    page.wait_for_load_state()
    assert "password is wrong" in page.inner_text("#error-password")  # beside its field
    assert page.input_value("#decide-form textarea[name=comment]") == "disc margins blurred"
    assert page.is_checked("input[name=choice][value=other]")
    assert page.is_visible("#other-fields")
    assert page.is_checked("#other-fields fieldset[data-eye=R] input[data-key='3']")
    assert page.input_value("#other-fields [name=eye_L_state]") == "normal"
    page.fill("#decide-form input[name=password]", PASSWORD)
    page.click("#sign")
    page.wait_for_url("**/arbitration?done=*")
    assert "you voted; waiting for 1 more vote" in page.inner_text("#voted")
    with clinic.runtime.sessions() as session:
        vote = session.scalars(select(ArbitrationVote)).one()
        assert vote.comment == "disc margins blurred" and vote.choice == "other"
    assert not page.errors, page.errors


def test_screenshots_at_1366x768_and_1920x1080(
    served: tuple[Clinic, str], photos: dict[str, Path], browser: Any, tmp_path: Path
) -> None:
    """The worklist, a case, and an arbitration with the overlay on, at both sizes."""
    clinic, base = served
    case = make_case(clinic, photos["big"], photos["small"])
    arbitration = to_arbitration(clinic, case, tmp_path)
    for _ in range(3):
        make_case(clinic, photos["small"], photos["small"], name="Roe^Richard")
    SCREENS.mkdir(parents=True, exist_ok=True)
    for size in (SMALL, LARGE):
        suffix = f"{size['width']}x{size['height']}"
        grader = _page(browser, size)
        _login(grader, base, "grace")
        grader.goto(f"{base}/worklist")
        grader.screenshot(path=str(SCREENS / f"worklist-{suffix}.png"))
        grader.keyboard.press("Enter")
        grader.wait_for_url("**/cases/*")
        _wait(grader, LOADED, "the photographs did not load")
        grader.keyboard.press("2")
        grader.screenshot(path=str(SCREENS / f"case-{suffix}.png"))
        grader.goto(f"{base}/worklist")  # hands the case back

        arbiter = _page(browser, size)
        _login(arbiter, base, "arthur")
        arbiter.goto(f"{base}/arbitration/{arbitration}")
        _wait(arbiter, LOADED, "the photographs did not load")
        arbiter.keyboard.press("h")
        _wait(arbiter, OVERLAYS, "the overlays did not load")
        arbiter.screenshot(path=str(SCREENS / f"arbitration-overlay-{suffix}.png"))
        assert not grader.errors and not arbiter.errors, grader.errors + arbiter.errors
